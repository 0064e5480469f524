"""Wen et al. Thm 8 and Thm 11 on the 4D toy of Fig. 1: SAM's projection Φ(x_t) onto Γ = {y = 0} tracks
the limiting flow at flow time τ = ηρ²t, with max_{τ ≤ T3} ‖Φ(x(⌈τ/ηρ²⌉)) − X(τ)‖ = O((η + ρ)·log(1/ηρ)).

  full batch (Thm 8, eq. 6):   dX/dτ = −½ P_Γ ∇λ1(∇²L) = −∇F0      (λ1 = 2F0 on Γ, P_Γ keeps x)
  batch size 1 (Thm 11, eq. 8): dX/dτ = −½ P_Γ ∇Tr(∇²L) = −∇(F0 + F1)  (Tr = 2(F0 + F1) on Γ)

both from X(0) = Φ(x_init), in closed form (``theory.toy4d_flow``); Φ of the logged iterates by RK4 on
gradient flow (``theory.toy4d_projection``). Phase I (Thm 8 / Thm 46): full-batch SAM enters an O(ηρ)
neighbourhood of Γ in Õ(1/η) steps. Cor. 15: along full-batch SAM, R^max_ρ(x_t) = ρ²λ1(X(τ))/2 + Õ(ηρ²);
Cor. 17: along batch-size-1 SAM, E_k[R^max_k,ρ](x_t) = ρ²Tr(X(τ))/2 + Õ((η+ρ)ρ²); R^max measured by maximizing
L(x_t + ρv) (or L_k) over the unit sphere (``sharpness.worst_direction_sharpness``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from samrepro import sharpness, theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.columns import setting
from samrepro.figures.wen_table1 import toy4d_examples

HORIZON = 0.04  # T3: the flow time compared (reached by the smallest ηρ² = 4e-6 in the 10,000 steps)
SUBSAMPLE = 200  # at most this many logged rows of τ ≤ T3 per run are projected (Φ by RK4)
FLOWS = {2: ("Thm 8: full batch, $dX/d\\tau=-\\nabla F_0$", (1.0, 0.0)),
         1: ("Thm 11: batch size 1, $dX/d\\tau=-\\nabla(F_0+F_1)$", (1.0, 1.0))}
RHO_OVER_LR_MAX = 1.0  # Thm 8 needs ρ/η "sufficiently small": taken as ρ/η ≤ 1 (ours)
COR15_TAUS = (0.5, 1.0)  # R^max is measured at the logged rows nearest τ = these fractions of T3
STARTS, ITERS = 8, 120  # the inner maximization of R^max (wen_table1's, with half its starts)
RHO_ORDER = (0.7, 1.3)  # err(η, 2ρ)/err(η, ρ): the error does not depend on ρ (±30%, ours) …
ETA_GROWTH = 1.4  # … while err(2η, ρ)/err(η, ρ) ≥ this: it is set by η


def tracking(df: pd.DataFrame) -> pd.DataFrame:
    """Per logged row of τ = ηρ²t ≤ HORIZON (subsampled to SUBSAMPLE rows per run): τ, Φ(x_t), the flow
    X(τ) of the run's batch size and the distance ‖Φ(x_t) − X(τ)‖."""
    start = theory.toy4d_projection(np.array(setting(df, "task.x_init") + setting(df, "task.y_init")))
    parts = []
    for _, run in df.sort_values("step").groupby("run", sort=False):
        tau = run.lr * run.rho**2 * run.step
        run = run[tau <= HORIZON * (1 + 1e-9)].assign(tau=tau)
        run = run.iloc[np.unique(np.linspace(0, len(run) - 1, SUBSAMPLE).round().astype(int))]
        flow = theory.toy4d_flow(start, run.tau.to_numpy(), *FLOWS[int(run["task.batch_size"].iloc[0])][1])
        parts.append(run.assign(X0=flow[:, 0], X1=flow[:, 1]))
    track = pd.concat(parts)
    phi = theory.toy4d_projection(track[["x0", "x1", "y0", "y1"]].to_numpy())  # every run at once
    return track.assign(phi0=phi[:, 0], phi1=phi[:, 1],
                        err=np.hypot(phi[:, 0] - track.X0, phi[:, 1] - track.X1))


def errors(track: pd.DataFrame) -> pd.DataFrame:
    """Per run: max_{τ ≤ T3} ‖Φ(x_t) − X(τ)‖, the bound (η + ρ)·ln(1/ηρ) with constant 1, and the flow
    time reached."""
    out = track.groupby(["task.batch_size", "lr", "rho"]).agg(err=("err", "max"), tau=("tau", "max")).reset_index()
    return out.assign(bound=(out.lr + out.rho) * np.log(1 / (out.lr * out.rho)), rho_over_lr=out.rho / out.lr)


def phase_one(df: pd.DataFrame) -> pd.DataFrame:
    """Full batch, per run: the first logged step with ‖y‖ ≤ λ1(x_init)·ηρ (an O(ηρ) neighbourhood of Γ:
    the phase II 2-cycle has ‖y‖ → ηρλ1/(2 − ηλ1) < λ1ηρ, Thm 21) and the prediction ln(1/ηρ)/(η·λ_min):
    gradient flow's slowest normal rate λ_min = 2F1(x_init) (the constant of Õ(1/η), ours)."""
    f0, f1 = theory.toy4d_factors(np.array(setting(df, "task.x_init")))
    rows = []
    for (lr, rho), run in df[df["task.batch_size"] == 2].groupby(["lr", "rho"]):
        run = run.sort_values("step")
        inside = np.hypot(run.y0, run.y1) <= 2 * f0 * lr * rho
        rows.append({"lr": lr, "rho": rho, "steps": run.step[inside].min() if inside.any() else np.nan,
                     "predicted": np.log(1 / (lr * rho)) / (lr * 2 * f1), "threshold": 2 * f0 * lr * rho})
    return pd.DataFrame(rows)


@cache
def worst_direction(w: tuple[float, ...], rho: float, example: int | None = None) -> float:
    """R^max_ρ(w) = max_{‖v‖≤1} L(w + ρv) − L(w) on the 4D toy, of L or of its example L_k (k = ``example``,
    ``wen_table1.toy4d_examples``); STARTS random starts of Adam, seed 0."""
    loss = theory.toy4d_loss if example is None else toy4d_examples()[example]
    return float(sharpness.worst_direction_sharpness(
        loss, torch.tensor(w, dtype=torch.float64), rho, starts=STARTS, iters=ITERS,
        generator=torch.Generator().manual_seed(0)))


def sharpness_along(track: pd.DataFrame) -> pd.DataFrame:
    """Per run and τ ≈ COR15_TAUS·T3: the measured sharpness R at x_t against ρ²S(X(τ))/2 and its tolerance.
    Full batch (Cor. 15): R = R^max_ρ, S = λ1 = 2F0, |R − ρ²λ1/2| ≤ C·ηρ² with C = λ1². Batch size 1
    (Cor. 17): R = E_k[R^max_k,ρ], S = Tr = 2(F0 + F1), |R − ρ²Tr/2| ≤ C·(η+ρ)ρ² with C = E_k[λ_k²], λ_k = 4F_k
    the top eigenvalue of L_k. The constants (ours): in phase II each (per-example) 2-cycle sits at
    |y_k| = ηρλ_k/(2 − ηλ_k) (Thm 21), where R^max_k = ρ²λ_k/2 + ρ‖∇L_k‖ = ρ²λ_k/2 + ηρ²λ_k²/(2 − ηλ_k) on a
    quadratic (the ``cycle`` column), ≤ ηρ²λ_k² for ηλ_k ≤ 1. ``ratio``: |R − ρ²S/2| over the tolerance."""
    rows = []
    for (bs, lr, rho), run in track.groupby(["task.batch_size", "lr", "rho"]):
        for frac in COR15_TAUS:
            r = run.iloc[(run.tau - frac * HORIZON).abs().argmin()]
            f0, f1 = theory.toy4d_factors(np.array([r.X0, r.X1]))
            w = (r.x0, r.x1, r.y0, r.y1)
            if bs == 2:
                value, limit, lams, scale = worst_direction(w, rho), 2 * f0, np.array([2 * f0]), lr * rho**2
            else:
                value = np.mean([worst_direction(w, rho, k) for k in range(2)])
                limit, lams, scale = 2 * (f0 + f1), 4 * np.array([f0, f1]), (lr + rho) * rho**2
            rows.append({"task.batch_size": bs, "lr": lr, "rho": rho, "tau": r.tau, "R": value, "S": limit,
                         "deviation": (value - rho**2 * limit / 2) / scale, "constant": np.mean(lams**2),
                         "cycle": np.mean(lams**2 / (2 - lr * lams)) * lr * rho**2 / scale})
    out = pd.DataFrame(rows)
    return out.assign(ratio=out.deviation.abs() / out.constant)


def _label(lr: float, rho: float) -> str:
    return f"η={lr:g}, ρ={rho:g}"


def draw(df: pd.DataFrame, stem: Path) -> None:
    track = tracking(df)
    err = errors(track)
    fig, axes = plt.subplots(2, 3, figsize=(19, 10), layout="constrained")
    axes = axes.ravel()
    runs = sorted(track.groupby(["lr", "rho"]).groups)
    colors = {k: plt.cm.viridis(i / (len(runs) - 1)) for i, k in enumerate(runs)}
    start = theory.toy4d_projection(np.array(setting(df, "task.x_init") + setting(df, "task.y_init")))
    taus = np.linspace(0, HORIZON, 100)
    ax = axes[0]
    for bs, (_, weights) in FLOWS.items():
        flow = theory.toy4d_flow(start, taus, *weights)
        ax.plot(flow[:, 0], flow[:, 1], "k-" if bs == 2 else "k--", lw=2.5, alpha=0.35,
                label=f"flow X(τ), {'full batch' if bs == 2 else 'batch size 1'}")
        for (lr, rho), run in track[track["task.batch_size"] == bs].groupby(["lr", "rho"]):
            ax.plot(run.phi0, run.phi1, "-" if bs == 2 else ":", color=colors[(lr, rho)], lw=1,
                    label=_label(lr, rho) if bs == 2 else None)
    ax.plot(*start, "k+", ms=9)
    ax.set(xlabel="$x_0$", ylabel="$x_1$", title=f"Φ(x_t) for τ = ηρ²t ≤ {HORIZON:g} (full: solid, bs 1: dotted)")
    ax.legend(fontsize=6)
    for ax, (bs, (title, _)) in zip(axes[1:3], FLOWS.items(), strict=True):
        for (lr, rho), run in track[track["task.batch_size"] == bs].groupby(["lr", "rho"]):
            ax.plot(run.tau, np.maximum(run.err, 1e-6), color=colors[(lr, rho)], lw=1, label=_label(lr, rho))
        ax.set(yscale="log", ylim=(1e-3, 1), xlabel="τ = ηρ²t", ylabel="‖Φ(x_t) − X(τ)‖", title=title)
        ax.legend(fontsize=6)
    ax = axes[3]
    for bs, marker in ((2, "o"), (1, "^")):
        for rho, rows in err[err["task.batch_size"] == bs].groupby("rho"):
            ax.plot(rows.lr, rows.err, marker + "-", color="tab:blue" if rho == err.rho.min() else "tab:orange",
                    label=f"{'full batch' if bs == 2 else 'batch size 1'}, ρ={rho:g}")
    for rho, rows in err[err["task.batch_size"] == 2].groupby("rho"):
        ax.plot(rows.lr, rows.bound, "k:" if rho == err.rho.min() else "k--", lw=0.8,
                label=f"(η+ρ)ln(1/ηρ), ρ={rho:g}")
    ax.set(xscale="log", yscale="log", xlim=(0.008, 0.05), xlabel="η",
           ylabel=f"max over τ ≤ {HORIZON:g} of ‖Φ(x_t) − X(τ)‖",
           title="tracking error: set by η, not by ρ")
    ax.legend(fontsize=6)
    ax = axes[4]
    phase = phase_one(df)
    for (lr, rho), run in df[df["task.batch_size"] == 2].groupby(["lr", "rho"]):
        run = run.sort_values("step")
        ax.plot(run.step, np.hypot(run.y0, run.y1), color=colors[(lr, rho)], lw=1, label=_label(lr, rho))
        p = phase[(phase.lr == lr) & (phase.rho == rho)].iloc[0]
        ax.plot([p.predicted], [p.threshold], "|", color=colors[(lr, rho)], ms=14, mew=2)
        ax.plot([p.steps], [p.threshold], "o", color=colors[(lr, rho)], mfc="none", ms=6)
    ax.set(xscale="log", yscale="log", xlim=(5, 2000), xlabel="step", ylabel="‖y_t‖ (distance to Γ)",
           title="phase I (full batch): ○ first ‖y‖ ≤ λ1ηρ, | ln(1/ηρ)/(ηλ_min)")
    ax.legend(fontsize=6)
    ax = axes[5]
    along = sharpness_along(track)
    for bs, marker in ((2, "o"), (1, "^")):
        rows = along[along["task.batch_size"] == bs]
        for (lr, rho), r in rows.groupby(["lr", "rho"]):
            ax.plot(r.lr * (1 + 0.04 * np.log2(rho / along.rho.min())), r.ratio, marker, color=colors[(lr, rho)],
                    ms=7)
            ax.plot(r.lr * (1 + 0.04 * np.log2(rho / along.rho.min())), r.cycle / r.constant, marker,
                    color=colors[(lr, rho)], mfc="none", ms=11)
        ax.plot([], [], marker, color="0.4", label=f"{'Cor. 15, full batch' if bs == 2 else 'Cor. 17, batch size 1'}")
    ax.plot([], [], "o", color="0.4", mfc="none", ms=11, label="2-cycle prediction ηρ²E[λ²/(2 − ηλ)]")
    ax.axhline(1, color="k", ls="--", lw=1, label="tolerance")
    ax.set(xscale="log", xlim=(0.008, 0.05), ylim=(0, 1.6), xlabel="η (ρ = 0.04 drawn a little right)",
           ylabel="|R − ρ²S(X(τ))/2| / tolerance",
           title="Cor. 15: $R^{\\max}_\\rho$ vs $\\rho^2\\lambda_1(X)/2$ (tol. $\\lambda_1^2\\eta\\rho^2$); "
                 "Cor. 17: $E_k R^{\\max}_k$ vs $\\rho^2$Tr$/2$ (tol. $E\\lambda_k^2(\\eta+\\rho)\\rho^2$)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Wen et al. Thm 8 / Thm 11 on the 4D toy: SAM tracks its limiting flow on Γ (x_init = "
                 f"{tuple(setting(df, 'task.x_init'))}, y_init = {tuple(setting(df, 'task.y_init'))}, "
                 f"{setting(df, 'steps'):,} steps)")
    save(fig, stem)


def _runs(rows: pd.DataFrame) -> str:
    return "; ".join(f"{_label(r.lr, r.rho)}: {r.err:.3f} (bound {r.bound:.2f})" for r in rows.itertuples())


def _order_claims(err: pd.DataFrame, bs: int, cite: str) -> list[Claim]:
    """The error's order: halving (η, ρ) together shrinks it at least as the bound's ratio (paper), and it grows
    with η and does not depend on ρ (extension)."""
    e = err[err["task.batch_size"] == bs].set_index(["lr", "rho"]).err
    bound = err[err["task.batch_size"] == bs].set_index(["lr", "rho"]).bound
    halves = [(k, (k[0] / 2, k[1] / 2)) for k in e.index if (k[0] / 2, k[1] / 2) in e.index]
    ratios = [(e[s] / e[b], bound[s] / bound[b]) for b, s in halves]
    eta = [e[(lr * 2, rho)] / e[(lr, rho)] for lr, rho in e.index if (lr * 2, rho) in e.index]
    rho = [e[(lr, r * 2)] / e[(lr, r)] for lr, r in e.index if (lr, r * 2) in e.index]
    who = "full-batch SAM" if bs == 2 else "SAM with batch size 1"
    return [
        Claim(f"{cite}: {who}'s tracking error shrinks as (η, ρ) halve together",
              "err(η/2, ρ/2)/err(η, ρ) ≤ the ratio of (η+ρ)ln(1/ηρ)",
              "; ".join(f"{m:.2f} (bound ratio {b:.2f})" for m, b in ratios), "≤ the bound's ratio",
              bool(ratios) and all(m <= b for m, b in ratios), kind="paper", cite=cite,
              source="the theorem's O((η+ρ)log(1/ηρ)) with the same constant at both (η, ρ)"),
        Claim(f"{who}: the tracking error is set by η and does not depend on ρ",
              "err(η, 2ρ)/err(η, ρ) ≈ 1; err(2η, ρ)/err(η, ρ) > 1",
              f"ρ doubled: {', '.join(f'{v:.2f}' for v in rho)}; η doubled: {', '.join(f'{v:.2f}' for v in eta)}",
              f"{RHO_ORDER[0]:g}–{RHO_ORDER[1]:g}; ≥ {ETA_GROWTH:g}",
              all(RHO_ORDER[0] <= v <= RHO_ORDER[1] for v in rho) and all(v >= ETA_GROWTH for v in eta),
              kind="extension",
              source="ours: in phase II the perturbed point sits at ‖y‖ ≈ ρ + ηρλ/(2 − ηλ) (λ the top eigenvalue "
                     "of the loss stepped on), so the drift speed is off by the factor (2/(2 − ηλ))², independent "
                     "of ρ; ±30%",
              note="doubling η multiplies the error by about 2 (O(η)) to 2.6: the speed excess (2/(2 − ηλ))² − 1 "
                   "grows faster than η at these ηλ (batch size 1: λ = 4F0 ≈ 35–39, ηλ up to 1.6 at η = 0.04, "
                   "where x runs off toward argmin F0 and the error saturates). The theorem's error term "
                   "(η+ρ)log(1/ηρ) is dominated by ρ in these runs, yet the measured "
                   "error does not move with ρ: the bound is loose by the ρ term on this toy"),
    ]


def claims(df: pd.DataFrame) -> list[Claim]:
    track = tracking(df)
    err = errors(track)
    along = sharpness_along(track)
    cor = along[along["task.batch_size"] == 2]
    scored = cor[cor.rho <= RHO_OVER_LR_MAX * cor.lr]
    outside_cor = cor[cor.rho > RHO_OVER_LR_MAX * cor.lr]
    cor17 = along[along["task.batch_size"] == 1]
    full, bs1 = err[err["task.batch_size"] == 2], err[err["task.batch_size"] == 1]
    inside = full[full.rho_over_lr <= RHO_OVER_LR_MAX]
    outside = full[full.rho_over_lr > RHO_OVER_LR_MAX]
    start = np.array(setting(df, "task.x_init"))
    motion = {bs: np.linalg.norm(theory.toy4d_flow(start, [HORIZON], *weights)[0] - start)
              for bs, (_, weights) in FLOWS.items()}
    vacuous = {bs: f"with constant 1 the bound exceeds the flow's displacement over τ ≤ {HORIZON:g} ({m:.2f}): "
                   "the order claims below carry the content" for bs, m in motion.items()}
    phase = phase_one(df)
    source = "Thm 8's O((η+ρ)log(1/ηρ)); its constant is not given, taken as 1 (ours)"
    out = [
        Claim(f"Thm 8 phase II: Φ(x_t) tracks dX/dτ = −½∇λ1 = −∇F0 up to τ = {HORIZON:g} (full batch, "
              f"ρ/η ≤ {RHO_OVER_LR_MAX:g})", "max_τ ‖Φ(x(τ/ηρ²)) − X(τ)‖ ≤ (η+ρ)ln(1/ηρ)", _runs(inside),
              "constant 1", bool(len(inside)) and bool((inside.err <= inside.bound).all()), vacuous[2], kind="paper",
              cite="Wen Thm 8 (phase II)", source=source),
        Claim(f"Thm 8 phase II, same, at ρ/η > {RHO_OVER_LR_MAX:g}", "max_τ ‖Φ(x(τ/ηρ²)) − X(τ)‖ ≤ "
              "(η+ρ)ln(1/ηρ)", _runs(outside), "constant 1", bool((outside.err <= outside.bound).all()),
              f"Thm 8 assumes ρ/η small; ρ/η = {', '.join(f'{v:g}' for v in outside.rho_over_lr)} here: shown, "
              "not scored", kind="paper", cite="Wen Thm 8 (phase II)", source=source, in_hypotheses=False),
        *_order_claims(err, 2, "Wen Thm 8"),
        Claim("Thm 8 phase I: full-batch SAM is within O(ηρ) of Γ (‖y‖ ≤ λ1(x_init)·ηρ) after Õ(1/η) steps",
              "steps ≤ ln(1/ηρ)/(η·λ_min(x_init))",
              "; ".join(f"{_label(r.lr, r.rho)}: {r.steps:.0f} (bound {r.predicted:.0f})" for r in phase.itertuples()),
              "constant 1/λ_min, λ_min = 2F1(x_init)", bool((phase.steps <= phase.predicted).all()), kind="paper",
              cite="Wen Thm 8 (phase I), Thm 46",
              source="ours: gradient flow contracts the slowest normal direction at rate λ_min = 2F1(x_init)",
              note=f"logged every {setting(df, 'log_every')} steps: the measured count is rounded up to that"),
        Claim(f"Thm 11 phase II: Φ(x_t) tracks dX/dτ = −½∇Tr = −∇(F0 + F1) up to τ = {HORIZON:g} (batch size 1)",
              "max_τ ‖Φ(x(τ/ηρ²)) − X(τ)‖ ≤ (η+ρ)ln(1/ηρ)", _runs(bs1), "constant 1",
              bool((bs1.err <= bs1.bound).all()), vacuous[1] + "; one sampling seed per run", kind="paper",
              cite="Wen Thm 11 (phase II)", source="Thm 11's O((η+ρ)log(1/ηρ)); constant taken as 1 (ours)"),
        *_order_claims(err, 1, "Wen Thm 11"),
        Claim(f"Cor. 15: R^max_ρ(x_t) − ρ²λ1(X(ηρ²t))/2 = Õ(ηρ²) along full-batch SAM (τ ≈ "
              f"{', '.join(f'{f * HORIZON:g}' for f in COR15_TAUS)}; ρ/η ≤ {RHO_OVER_LR_MAX:g})",
              "|R^max_ρ − ρ²λ1(X)/2| ≤ C·ηρ²",
              f"|deviation|/(ηρ²) = {scored.deviation.abs().min():.0f} … {scored.deviation.abs().max():.0f} over "
              f"{len(scored)} points (R^max/(ρ²λ1(X)/2) = {(2 * scored.R / (scored.rho**2 * scored.S)).min():.3f}"
              f" … {(2 * scored.R / (scored.rho**2 * scored.S)).max():.3f})",
              f"C = λ1(X)² = {scored.constant.min():.0f} … {scored.constant.max():.0f}",
              bool(len(scored)) and bool((scored.deviation.abs() <= scored.constant).all()), kind="paper",
              cite="Wen Cor. 15",
              source="ours: Õ(ηρ²)'s constant from phase II's first-order term ρ‖∇L‖ = ηρ²λ1²/(2 − ηλ1) "
                     "(Thm 21's 2-cycle), ≤ ηρ²λ1² for ηλ1 ≤ 1",
              note=f"at ρ/η > {RHO_OVER_LR_MAX:g} (outside Cor. 15's ρ/η small, not scored) |deviation|/(ηρ²) = "
                   f"{outside_cor.deviation.abs().min():.0f} … {outside_cor.deviation.abs().max():.0f}; R^max by "
                   f"Adam over the sphere ({STARTS} starts, {ITERS} iterations)"),
        Claim(f"Cor. 17: E_k[R^max_k,ρ](x_t) − ρ²Tr(X(ηρ²t))/2 = Õ((η+ρ)ρ²) along SAM with batch size 1 (τ ≈ "
              f"{', '.join(f'{f * HORIZON:g}' for f in COR15_TAUS)})", "|E_k R^max_k − ρ²Tr(X)/2| ≤ C·(η+ρ)ρ²",
              f"|deviation|/((η+ρ)ρ²) = {cor17.deviation.abs().min():.0f} … {cor17.deviation.abs().max():.0f} "
              f"over {len(cor17)} points (E_k R^max_k/(ρ²Tr(X)/2) = "
              f"{(2 * cor17.R / (cor17.rho**2 * cor17.S)).min():.3f} … "
              f"{(2 * cor17.R / (cor17.rho**2 * cor17.S)).max():.3f})",
              f"C = E_k[λ_k²] = {cor17.constant.min():.0f} … {cor17.constant.max():.0f}, λ_k = 4F_k(X)",
              bool(len(cor17)) and bool((cor17.ratio <= 1).all()), kind="paper", cite="Wen Cor. 17",
              source="ours: Cor. 15's constant per example, the 2-cycle term ηρ²λ_k²/(2 − ηλ_k) of L_k",
              note="measured/predicted deviation, the prediction ηρ²·E_k[λ_k²/(2 − ηλ_k)] of the per-example "
                   f"2-cycles: {(cor17.deviation / cor17.cycle).min():.2f} … "
                   f"{(cor17.deviation / cor17.cycle).max():.2f}"
                   f"; at η = {cor17.lr.max():g}, E_k R^max_k = "
                   f"{(2 * cor17.R / (cor17.rho**2 * cor17.S))[cor17.lr == cor17.lr.max()].mean():.1f}× ρ²Tr/2: the "
                   "O(·) term is not small there"),
    ]
    return out


FIGURE = Figure(
    "wen_flows", "4D toy: SAM tracks the limiting flows of Thm 8 and Thm 11", draw, claims,
    cite="Wen Thm 8, Thm 11, Cor. 15, 17",
    notes=(f"Init x = (0.5, 0.5), y = (0.1, 0.1) (Fig. 1's); constant η ∈ {{0.01, 0.02, 0.04}}, ρ ∈ {{0.02, "
           f"0.04}}; 10,000 steps, so that the smallest ηρ² reaches the flow time T3 = {HORIZON:g}; full batch "
           "and batch size 1. The flows of eq. (6), (8) in closed form; Φ by RK4 on gradient flow. Thm 8's "
           f"ρ/η small is taken as ρ/η ≤ {RHO_OVER_LR_MAX:g}; ρ ≪ η ≪ 1 at flow time T3 costs T3/(ηρ²) > "
           "T3/η³ steps, so the scored runs have η = 0.02…0.04. Cor. 15 and 17: R^max at the logged rows "
           f"nearest τ = {', '.join(f'{f * HORIZON:g}' for f in COR15_TAUS)} by Adam over the sphere ({STARTS} "
           f"starts, {ITERS} iterations)."),
)
