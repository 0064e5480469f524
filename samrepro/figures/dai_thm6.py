"""Dai et al. Thm 6 / Thm 48: USAM with η, ρ < 1/β on a β-smooth μ-PL loss travels a bounded distance,

    ‖w_t − w0‖ ≤ η(1 + βρ)·√(2β²/μ)·(1 − 2μη(1 − ρβ)(ηβ(1 − ρβ)/2))^{−1/2}·√(L(w0) − L*)   for all t,

measured on ½wᵀΛw (β = λ_max, μ = λ_min, L* = 0) with its Lemma 49 (L(w_t) ≤ q^t L(w0)). The proof's last
step bounds Σ_{i<t} q^{i/2} by the printed factor (≈ 1), where the sum grows to 1/(1 − √q) ≈ 1/(μη(1 − ρβ)):
the printed bound → 0 as η → 0 while USAM (→ gradient flow) still travels ‖w0 − w*‖. With the sum
(``theory.usam_travel_bound_summed``) the bound holds and is η-free as η → 0, which is Thm 6's point.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.columns import grid_values, quadratic_iterates, setting

CITE = "Dai Thm 6 / Thm 48"
ROUNDING = 1e-9  # relative slack of the "≤" checks (float64 rounding)
MARKERS = {"[0.0, 1.0]": "o", "[1.0, 0.0]": "s", "[1.0, 1.0]": "^"}
NAMES = {"[0.0, 1.0]": "μ direction", "[1.0, 0.0]": "β direction", "[1.0, 1.0]": "both"}


def travel(df: pd.DataFrame) -> tuple[pd.DataFrame, float, float]:
    """Per logged row: ``travel`` ‖w_t − w0‖, ``gap0`` = L(w0) − L* = L(w0), Thm 48's ``bound`` and the summed
    ``summed`` bound, Lemma 49's ``rate_bound`` q^t·L(w0); and (β, μ) = (max, min) of task.eigenvalues."""
    lam = np.asarray(setting(df, "task.eigenvalues"), dtype=float)
    beta, mu = float(lam.max()), float(lam.min())
    df = df.sort_values(["run", "step"])
    w = quadratic_iterates(df)
    start = df.groupby("run").step.transform("idxmin")
    w0 = quadratic_iterates(df.loc[start])
    gap0 = df.loc[start, "loss"].to_numpy()
    return df.assign(
        travel=np.linalg.norm(w - w0, axis=1), gap0=gap0,
        bound=theory.usam_travel_bound(df.lr, df.rho, beta, mu, gap0),
        summed=theory.usam_travel_bound_summed(df.lr, df.rho, beta, mu, gap0),
        rate_bound=theory.usam_pl_rate(df.lr, df.rho, beta, mu) ** df.step * gap0), beta, mu


def per_run(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run: max_t travel/bound (printed and summed), max_t travel/√gap0, max_t L(w_t)/(q^t L(w0))."""
    rows = rows.assign(ratio=rows.travel / rows.bound, summed_ratio=rows.travel / rows.summed,
                       scaled=rows.travel / np.sqrt(rows.gap0),
                       rate_ratio=(rows.loss / rows.rate_bound).where(rows.step > 0))  # t = 0: 1 by definition
    return rows.groupby(["task.init", "lr", "rho"]).agg(
        ratio=("ratio", "max"), summed_ratio=("summed_ratio", "max"), scaled=("scaled", "max"),
        rate_ratio=("rate_ratio", "max"), status=("status", "last")).reset_index()


def draw(df: pd.DataFrame, stem: Path) -> None:
    rows, beta, mu = travel(df)
    runs = per_run(rows)
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(12.5, 4.6), layout="constrained")
    lrs = np.linspace(runs.lr.min(), 1 / beta, 200, endpoint=False)
    colors = {rho: f"C{i}" for i, rho in enumerate(sorted(runs.rho.unique()))}
    for rho, color in colors.items():
        ax.plot(lrs, theory.usam_travel_bound(lrs, rho, beta, mu, 1.0), "--", color=color,
                label=f"Thm 48 as printed, ρ = {rho:g}")
        ax.plot(lrs, theory.usam_travel_bound_summed(lrs, rho, beta, mu, 1.0), ":", lw=2, color=color,
                label=f"with Σq^(i/2) = 1/(1−√q), ρ = {rho:g}")
        for init, group in runs[runs.rho == rho].groupby("task.init"):
            ax.plot(group.lr, group.scaled, MARKERS[init], color=color, ms=6, mfc="none" if rho else color)
    for init, marker in MARKERS.items():
        ax.plot([], [], marker, color="k", mfc="none", label=f"USAM, start along {NAMES[init]}")
    ax.plot([], [], " ", label="(filled: ρ = 0, open: ρ > 0)")
    ax.set(xlabel="η", ylabel="max_t ‖w_t − w0‖ / √(L(w0) − L*)", yscale="log", xlim=(0, 1 / beta),
           title="USAM's travel against Thm 48's bound (both divided by √(L(w0) − L*))")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    lr = float(runs.lr.min())
    for init in MARKERS:
        trace = rows[(rows.lr == lr) & (rows.rho == 0) & (rows["task.init"] == init)]
        ax_t.plot(trace.step, trace.travel, label=f"travel, start along {NAMES[init]}")
        ax_t.axhline(trace.bound.iloc[0], color=ax_t.lines[-1].get_color(), ls="--", lw=1)
    ax_t.plot([], [], "k--", lw=1, label="Thm 48's bound (each start)")
    ax_t.set(xlabel="step t", ylabel="‖w_t − w0‖", title=f"η = {lr:g}, ρ = 0: travel vs step")
    ax_t.legend(fontsize=7)
    fig.suptitle(f"Dai et al. Thm 6 / Thm 48: USAM on ½wᵀΛw, Λ = diag{tuple(setting(df, 'task.eigenvalues'))} "
                 f"(β = {beta:g}, μ = {mu:g}), {setting(df, 'steps')} steps, every step logged", fontsize=10)
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    rows, beta, mu = travel(df)
    runs = per_run(rows)
    inside = (runs.lr < 1 / beta) & (runs.rho < 1 / beta)
    worst = runs.loc[runs.ratio.idxmax()]
    fails = runs[runs.ratio > 1 + ROUNDING]

    def where(run: pd.Series) -> str:
        return f"η = {run.lr:g}, ρ = {run.rho:g}, start along {NAMES.get(run['task.init'], run['task.init'])}"

    return [Claim(
        "USAM's travel within Thm 48's bound", "max_t ‖w_t − w0‖ ≤ η(1+βρ)√(2β²/μ)(1−2μη(1−ρβ)(ηβ(1−ρβ)/2))^(−1/2)"
        "·√(L(w0) − L*)", f"{len(runs) - len(fails)}/{len(runs)} runs inside; max travel/bound = "
        f"{worst.ratio:.3g} ({where(worst)}); per start, max travel/bound: " + ", ".join(
            f"{NAMES.get(init, init)} {ratio:.3g}" for init, ratio in runs.groupby("task.init").ratio.max().items())
        + (f"; fails at η ∈ {grid_values(fails.lr)}" if len(fails) else ""),
        f"≤ 1 (rounding {ROUNDING:g})", fails.empty, kind="paper", cite=CITE,
        source="exact: an inequality with its constants", in_hypotheses=bool(inside.all()),
        note="" if fails.empty else "the proof's last step bounds Σ_{i<t} q^(i/2) (q of Lemma 49) by "
        "(1 − 2μη(1−ρβ)(ηβ(1−ρβ)/2))^(−1/2) ≈ 1, but the sum tends to 1/(1 − √q) ≈ 1/(μη(1−ρβ)): the printed "
        "bound is O(η) while the travel tends to gradient flow's ‖w0 − w*‖ as η → 0 (read as q^(−1/2), the "
        "factor is ≈ 1 as well: the bound stays O(η))"),
        Claim("USAM's loss within Lemma 49's rate", "L(w_t) − L* ≤ (1 − 2μη(1−ρβ)(1 − ηβ(1−ρβ)/2))^t (L(w0) − L*) "
              "at every step", f"max_(t ≥ 1) L(w_t)/(q^t L(w0)) over {len(runs)} runs = {runs.rate_ratio.max():.3g}",
              f"≤ 1 (rounding {ROUNDING:g})", bool((runs.rate_ratio <= 1 + ROUNDING).all()), kind="paper",
              cite="Dai Lemma 49 (Andriushchenko & Flammarion 2022, Thm 10)",
              source="exact: an inequality with its constants", in_hypotheses=bool(inside.all())),
        Claim("USAM's travel within Thm 48's bound with the geometric sum 1/(1 − √q)",
              "max_t ‖w_t − w0‖ ≤ η(1+βρ)√(2β²/μ)·√(L(w0) − L*)/(1 − √q)",
              f"max travel/bound = {runs.summed_ratio.max():.3g} over {len(runs)} runs; max_t ‖w_t − w0‖/√(L(w0)"
              f" − L*) ∈ [{runs.scaled.min():.3g}, {runs.scaled.max():.3g}]", f"≤ 1 (rounding {ROUNDING:g})",
              bool((runs.summed_ratio <= 1 + ROUNDING).all()), kind="extension",
              source="exact: Thm 48's proof with its last step corrected")]


FIGURE = Figure("dai_thm6", "USAM's bounded travel on a PL loss", draw, claims, cite=CITE,
                notes="Λ = diag(2, 1): 2-smooth, 1-PL, L* = 0; USAM with η ∈ {0.05, …, 0.49}, ρ ∈ {0, 0.45} "
                      "(both < 1/β = 0.5), from (0, 1), (1, 0) and (1, 1); 200 steps, every step logged "
                      "(the travel has settled to ≤ 0.95^200 ≈ 4e-5 of its limit at the slowest η).")
