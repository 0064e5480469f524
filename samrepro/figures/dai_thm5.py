"""Dai et al. Thm 5 (formal: Thm 35 with Thm 39 and 44): USAM on ℓ(xy), judged step by step.

With y0² − x0² = γ/η and y0² = Cγ/η: the Initial Phase (x_t > ½√(γη)) ends by t1 ≤ 2√C/η − 1 with
y_t ≥ ½√(γ/η) (Thm 39); once (1 + ρy_t²)y_t² < 2/η at some t (eq. 7), y∞² ≳ (1 − η² − ρ²)·y_t² (Thm 5),
judged at the first such t, t*; formally y∞² ≥ (1 − 4Cγ(η + ρCγ)²/ε)·y_t² with ε = 2 − η(1 + ρy_t²)y_t²
(Thm 44), judged at every t ≥ t1 with ε > 0. dai_table1 checks y∞² against ỹ² of eq. (7) instead.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.columns import setting
from samrepro.figures.dai_fig4 import USAM_SLACK

CITE = "Dai Thm 5 (formal: Thm 35)"


def phases(df: pd.DataFrame) -> pd.DataFrame:
    """Per run (every step logged): γ, C, Thm 35's hypotheses, t1 (Definition 38), t* = the first t with
    (1 + ρy_t²)y_t² < 2/η, y_{t*}², y∞² (the last step's y²: x_T ≈ 0), and Thm 44's bound over t ≥ t1."""
    x0, y0 = setting(df, "task.init")
    rows = []
    for _, run in df.groupby("run", sort=False):
        run = run.sort_values("step")
        lr, rho = run.lr.iloc[0], run.rho.iloc[0]
        gamma, big_c = lr * (y0**2 - x0**2), y0**2 / (y0**2 - x0**2)
        y2 = run.y.to_numpy() ** 2
        t1 = int(np.argmax(run.x.to_numpy() <= 0.5 * np.sqrt(gamma * lr))) - 1  # Definition 38
        star = int(np.argmax((1 + rho * y2) * y2 < 2 / lr))
        eps = 2 - lr * (1 + rho * y2) * y2
        after = (np.arange(len(y2)) >= t1) & (eps > 0)
        formal = theory.usam_stuck_ratio_formal(lr, rho, gamma, big_c, eps[after]) * y2[after]
        x_drop = -np.diff(run.x.to_numpy())[: t1 + 1].min()  # Lemma 43: x_t − x_{t+1} ≥ ½√(γη) for t ≤ t1
        inside = (lr <= 0.5 and lr * rho <= min(0.5, 1 / (big_c * gamma))
                  and 0.5 - 1e-9 <= gamma <= 2 + 1e-9  # γ = η(y0² − x0²) up to rounding
                  and big_c * gamma * (1 + rho * big_c * gamma / lr) >= 16)
        rows.append(dict(
            run=run.run.iloc[0], lr=lr, rho=rho, gamma=gamma, big_c=big_c, t1=t1, star=star, y2_star=y2[star],
            y2_inf=y2[-1], status=run.status.iloc[-1], t1_bound=float(theory.usam_neuron_initial_steps(lr, big_c)),
            y_min_initial=run.y.iloc[: t1 + 1].min(), x_drop=x_drop, formal_gap=(y2[-1] - formal).min(),
            formal_best=formal.max() / y2[-1], hypotheses=bool(inside)))
    out = pd.DataFrame(rows)
    return out.assign(ratio=out.y2_inf / out.y2_star, bound=theory.usam_stuck_ratio(out.lr, out.rho))


def draw(df: pd.DataFrame, stem: Path) -> None:
    runs = phases(df)
    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    rhos = sorted(runs.rho.unique())
    colors = {rho: plt.cm.viridis(i / max(1, len(rhos) - 1)) for i, rho in enumerate(rhos)}
    styles = dict(zip(sorted(runs.lr.unique()), ("-", "--", ":", "-."), strict=False))
    for r in runs.itertuples():
        run = df[df.run == r.run].sort_values("step")
        ax.plot(run.step, run.y**2, color=colors[r.rho], ls=styles[r.lr], lw=1,
                label=f"η = 1/{1 / r.lr:.0f}, ρ = {r.rho:g}" + ("" if r.hypotheses else " (outside Thm 35)"))
        ax.plot(r.star, r.y2_star, "o", color=colors[r.rho], ms=4)
    ax.set(xscale="symlog", yscale="log", xlabel="step", ylabel="$y_t^2$",
           title="USAM: $y_t^2$; dot: first t with $(1+ρy_t^2)y_t^2 < 2/η$")
    ax.legend(fontsize=7)
    rhos = np.geomspace(runs.rho.min() * 0.8, runs.rho.max() * 1.2, 50)
    for (lr, group), color in zip(runs.groupby("lr"), ("tab:blue", "tab:orange"), strict=False):
        ax_r.plot(rhos, 1 - theory.usam_stuck_ratio(lr, rhos), ls=styles[lr], color=color, lw=0.9,
                  label=f"allowed: η² + ρ², η = 1/{1 / lr:.0f}")
        for inside, marker in ((True, "o"), (False, "x")):
            g = group[group.hypotheses == inside]
            if len(g):
                ax_r.plot(g.rho, 1 - g.ratio, marker, color=color, ls="none",
                          label=f"measured, η = 1/{1 / lr:.0f}" + ("" if inside else " (outside Thm 35)"))
    ax_r.set(xscale="log", yscale="log", xlabel="ρ", ylabel=r"shortfall $1 - y_\infty^2 / y_{t^*}^2$",
             title=r"Thm 5: $y_\infty^2 \gtrsim (1-\eta^2-\rho^2)\,y_{t^*}^2$, $t^*$ the first crossing")
    ax_r.legend(fontsize=7, loc="upper left")
    x0, y0 = setting(df, "task.init")
    fig.suptitle(f"Dai et al. Thm 5: USAM on ℓ(xy) from ({x0:g}, √{y0**2:g}), every step of "
                 f"{setting(df, 'steps'):,} logged")
    save(fig, stem)


def phase_claims(runs: pd.DataFrame, label: str, in_hypotheses: bool = True, note: str = "") -> list[Claim]:
    """Thm 39's Initial Phase, Thm 5's limit at the first crossing and Thm 44's bound on the runs ``runs``."""
    scope = dict(kind="paper", in_hypotheses=in_hypotheses, note=note)
    initial = (runs.t1 <= runs.t1_bound) & (runs.y_min_initial >= 0.5 * np.sqrt(runs.gamma / runs.lr)) & (
        runs.x_drop >= 0.5 * np.sqrt(runs.gamma * runs.lr))
    ok = (runs.status == "completed") & (runs.star > runs.t1) & (runs.ratio >= (1 - USAM_SLACK) * runs.bound)
    shortfall = 1 - runs.ratio
    return [
        Claim(f"USAM Initial Phase ends by 2√C/η − 1 ({label})",
              "t1 ≤ 2√C/η − 1, y_t ≥ ½√(γ/η) and x_{t+1} ≤ x_t − ½√(γη) for t ≤ t1",
              "t1 = " + ", ".join(f"{r.t1} (≤ {r.t1_bound:.0f})" for r in runs.itertuples())
              + f"; min y_t/(½√(γ/η)) = {(runs.y_min_initial / (0.5 * np.sqrt(runs.gamma / runs.lr))).min():.2f}, "
              f"min (x_t − x_(t+1))/(½√(γη)) = {(runs.x_drop / (0.5 * np.sqrt(runs.gamma * runs.lr))).min():.2f}",
              "exact", bool(initial.all()), cite="Dai Thm 5 (1) (formal: Thm 39, Lemma 40, 43)",
              source="Lemma 43's constants (exact)", **scope),
        Claim(f"USAM: y∞² ≳ (1 − η² − ρ²)·y_t² at the first t with (1+ρy_t²)y_t² < 2/η ({label})",
              "y∞²/y_{t*}² ≳ 1 − η² − ρ² (t* > t1)",
              "y∞²/y_{t*}² = " + ", ".join(f"{r.ratio:.4f} (bound {r.bound:.3f}, t* = {r.star})"
                                           for r in runs.itertuples())
              + f"; the shortfall 1 − y∞²/y_{{t*}}² ∈ [{shortfall.min():.4f}, {shortfall.max():.4f}] against "
              f"η² + ρ² ∈ [{(1 - runs.bound).min():.3f}, {(1 - runs.bound).max():.3f}]",
              f"y∞²/y_{{t*}}² ≥ {1 - USAM_SLACK:g}·(1 − η² − ρ²)", bool(ok.all()), cite=f"{CITE}, eq. (7)",
              source=f"Thm 5's bound; {USAM_SLACK:.0%} for its '≳' is ours (as dai_fig4)", **scope),
        Claim(f"USAM: y∞² ≥ (1 − 4Cγ(η+ρCγ)²/ε)·y_t² at every t ≥ t1 with ε = 2 − η(1+ρy_t²)y_t² > 0 ({label})",
              "the bound holds at every such t",
              f"min over t of y∞² − bound·y_t² = {runs.formal_gap.min():.3g}; the bound's largest value, "
              f"as a fraction of y∞², is {runs.formal_best.max():.3g}",
              "exact", bool((runs.formal_gap >= 0).all()), cite="Dai Thm 35 (2) (Thm 44)",
              source="Thm 44's constants (exact)",
              **{**scope, "note": (note + "; " if note else "") + (
                  "vacuous on these runs: 4Cγ(η+ρCγ)² exceeds every ε the run reaches (USAM stops at ε ≈ 0), "
                  "so the bound is ≤ 0 at every step" if (runs.formal_best <= 0).all() else "")}),
    ]


def claims(df: pd.DataFrame) -> list[Claim]:
    runs = phases(df)
    out = phase_claims(runs[runs.hypotheses], "runs inside Thm 35")
    outside = runs[~runs.hypotheses]
    if len(outside):
        out += phase_claims(outside, "runs outside Thm 35", in_hypotheses=False,
                            note="Cγ(1 + ρCγ/η) < 16 violates Thm 35's hypothesis: shown, not scored")
    return out


FIGURE = Figure("dai_thm5", "ℓ(xy): USAM's limit against y² at its first crossing of eq. (7)", draw, claims,
                cite="Dai Thm 5",
                notes="ℓ the symmetrized logistic loss, from (2, √40) (y0² − x0² = 36, C = 10/9); USAM with "
                      "η = γ/36 for γ ∈ {1, 2} and ρ ∈ {0.2, 0.5, 1}, 900 steps, every step logged. Thm 35 "
                      "needs Cγ(1 + ρCγ/η) ≥ 16: (γ, ρ) = (1, 0.2) is outside (shown, not scored); its "
                      "O(·) condition 2√C/η = O(min{1/(ηρ), 1/η²}) is not checked.")
