"""Wen et al. Fig. 1: on the 4D toy L = F0(x)·y0² + F1(x)·y1², full-batch SAM, GD on L^asc and SAM with
batch size 1 drift along Γ = {y = 0} to three different minimizers: argmin λ1 = argmin F0 = (0, 0)
(Thm 8), argmin λ_min = argmin F1 = (1, 1) (Thm 13) and argmin Tr = argmin F0 + F1 = (0.8, 1/7)
(Thm 11). Plain GD stops where gradient flow meets Γ. Also Thm 8's implicit alignment: in phase II
the angle between ∇L and the top Hessian eigenvector is O(ρ) (the ``grad_v1_cos`` metric).

The headline runs (trajectories, 3D surfaces) use η = 0.002, ρ = 2, η annealed geometrically to
1e-4·η; the rest of the sweep shows where each method does not get there (constant η, small ρ).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting

HEADLINE = {"lr": 0.002, "rho": 2.0, "lr_schedule.name": "geometric"}
METHODS = {  # label: (opt, batch size, color, key of theory.TOY4D_LIMITS)
    "SAM (full batch)": ("sam", 2, "tab:blue", "sam"),
    "GD on $L^{asc}$": ("gd_ascent", 2, "tab:red", "gd_ascent"),
    "SAM (batch size 1)": ("sam", 1, "tab:green", "sam_bs1"),
    "GD": ("gd", 2, "0.3", None),
}
TAIL = 0.2  # batch-size-1 end points: mean over the last 20% of logged steps
TOLERANCE = 0.05  # ‖x∞ − predicted minimizer‖
MARKERS = {"sam": "o", "gd_ascent": "s", "sam_bs1": "^"}
SWEEP_COLORS = {("sam", 2): "tab:blue", ("gd_ascent", 2): "tab:red", ("sam", 1): "tab:green",
                ("gd_ascent", 1): "tab:orange", ("gd", 2): "0.3", ("gd", 1): "0.6"}


def runs_of(df: pd.DataFrame, opt: str, batch_size: int, **keys: object) -> pd.DataFrame:
    mask = (df["opt"] == opt) & (df["task.batch_size"] == batch_size)
    for k, v in keys.items():
        mask &= df[k] == v
    return df[mask]


def start(df: pd.DataFrame) -> np.ndarray:
    """x at initialization (``task.x_init``)."""
    return np.array(setting(df, "task.x_init"))


def end_point(run: pd.DataFrame, batch_size: int) -> np.ndarray:
    """x at the end: the last logged x (full batch), or its mean over the last TAIL of the run
    (batch size 1, whose iterates fluctuate)."""
    if batch_size == 2:
        return run.sort_values("step")[["x0", "x1"]].to_numpy()[-1]
    tail = run[run.step >= (1 - TAIL) * run.step.max()]
    return tail[["x0", "x1"]].to_numpy().mean(0)


def _contours(ax, title: str, which: str) -> None:
    g = np.linspace(-0.1, 1.1, 200)
    x0, x1 = np.meshgrid(g, g)
    f0, f1 = theory.toy4d_factors(np.stack([x0, x1], axis=-1))
    z = {"F0": f0, "F1": f1, "F0+F1": f0 + f1}[which]
    cs = ax.contour(x0, x1, z, levels=14, cmap="Greys", linewidths=0.7)
    ax.clabel(cs, fontsize=6, fmt="%.0f")
    ax.set(xlim=(-0.1, 1.1), ylim=(-0.1, 1.1), xlabel="$x_0$", ylabel="$x_1$", title=title, aspect="equal")


def draw(df: pd.DataFrame, stem: Path) -> None:
    fig = plt.figure(figsize=(19, 10))
    grid = fig.add_gridspec(2, 20, hspace=0.3, wspace=4)
    panels = [fig.add_subplot(grid[0, 5 * i:5 * i + 5]) for i in range(4)]
    targets = (("F0", "sam"), ("F1", "gd_ascent"), ("F0+F1", "sam_bs1"))
    for ax, (which, target) in zip(panels[:3], targets, strict=True):
        _contours(ax, f"contours of ${which.replace('F', 'F_')}$", which)
        for label, (opt, bs, color, _) in METHODS.items():
            r = runs_of(df, opt, bs, **HEADLINE).sort_values("step")
            ax.plot(r.x0, r.x1, "-", color=color, lw=1.2 if bs == 2 else 0.6, alpha=0.9, label=label)
        for key, point in theory.TOY4D_LIMITS.items():
            mine = key == target
            ax.plot(*point, MARKERS[key], ms=9 if mine else 6, mfc="gold" if mine else "none", mec="k")
        ax.plot(*start(df), "k+", ms=8)
    panels[0].legend(fontsize=7, loc="upper left")

    ax = panels[3]  # where each method ends, over the whole sweep
    _contours(ax, "end points of the whole sweep", "F0+F1")
    final = final_rows(df)
    keys = []  # GD on L^asc's end points are numbered here and listed in a key: labels would overprint
    for (opt, bs, sched), runs in final.groupby(["opt", "task.batch_size", "lr_schedule.name"]):
        color = SWEEP_COLORS[(opt, bs)]
        for _, r in runs.iterrows():
            if r.status == "diverged":
                continue
            p = end_point(runs_of(df, opt, bs, **{"run": r.run}), bs)
            ax.plot(*p, "o" if sched == "geometric" else "x", color=color, ms=6, alpha=0.8)
            if opt == "gd_ascent" and bs == 2:
                keys.append(f"{len(keys) + 1}: η={r.lr:g}, ρ={r.rho:g}, {sched}")
                ax.annotate(str(len(keys)), p, fontsize=7, color=color, textcoords="offset points",
                            xytext=((4, 3), (4, -10), (-10, 3), (-10, -10))[len(keys) % 4])
    for key, point in theory.TOY4D_LIMITS.items():
        ax.plot(*point, MARKERS[key], ms=9, mfc="gold", mec="k")
    for (opt, bs), color in SWEEP_COLORS.items():
        ax.plot([], [], "s", color=color, label=f"{opt}, batch {'size 1' if bs == 1 else 'full'}")
    ax.plot([], [], "ko", label="η annealed (geometric)")
    ax.plot([], [], "kx", label="constant η")
    ax.legend(fontsize=6, loc="upper center", ncol=2)
    ax.text(0.02, 0.62, "GD on $L^{asc}$, full batch:\n" + "\n".join(keys), transform=ax.transAxes, fontsize=6,
            color=SWEEP_COLORS[("gd_ascent", 2)], va="top")

    for i, (label, (opt, bs, _, _)) in enumerate(METHODS.items()):
        ax3 = fig.add_subplot(grid[1, 4 * i:4 * i + 4], projection="3d")
        x, y_norm, loss = end_state(runs_of(df, opt, bs, **HEADLINE), bs)
        f0, f1 = theory.toy4d_factors(x)
        g = np.linspace(-1, 1, 40)
        y0, y1 = np.meshgrid(g, g)
        surface = theory.toy4d_loss(np.stack([np.full_like(y0, x[0]), np.full_like(y0, x[1]), y0, y1], axis=-1))
        ax3.plot_surface(y0, y1, surface, cmap="viridis", lw=0, alpha=0.6)
        last = runs_of(df, opt, bs, **HEADLINE).sort_values("step").iloc[-1]  # the final iterate, y included
        ax3.plot([last.y0], [last.y1], [last.loss], "r*", ms=10, zorder=10)
        ax3.set(xlabel="$y_0$", ylabel="$y_1$", zlim=(0, 30),
                title=f"{label}\n$L(x,\\cdot)$ at x=({x[0]:.2f}, {x[1]:.2f})\n$F_0$={f0:.2f}, $F_1$={f1:.2f}; "
                      f"end (red ★): ‖y‖={y_norm:.2g}, L={loss:.2g}")
        ax3.title.set_fontsize(8)

    ax = fig.add_subplot(grid[1, 17:])  # Thm 8: alignment of ∇L with v1 during phase II (full batch SAM)
    for (lr, rho, sched), run in runs_of(df, "sam", 2).groupby(["lr", "rho", "lr_schedule.name"]):
        run = run.sort_values("step")
        ax.plot(run.step, np.maximum(1 - run.grad_v1_cos, 1e-17), lw=0.9,
                ls="-" if sched == "geometric" else "--", label=f"η={lr:g}, ρ={rho:g}, {sched}")
    ax.set(yscale="log", xlabel="step", ylabel="1 − |cos∠(∇L, $v_1$)| ≈ angle²/2",
           title="Thm 8: alignment (full-batch SAM)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6)
    fig.suptitle("Wen et al. Fig. 1 on the 4D toy: full-batch SAM → argmin $F_0$, GD on $L^{asc}$ → argmin "
                 f"$F_1$, SAM (batch 1) → argmin $F_0+F_1$  (headline: η={HEADLINE['lr']:g} annealed, "
                 f"ρ={HEADLINE['rho']:g}, {setting(df, 'steps'):,} steps)")
    save(fig, stem)


def end_state(run: pd.DataFrame, batch_size: int) -> tuple[np.ndarray, float, float]:
    """(x∞, ‖y∞‖, L∞): ``end_point``'s x, and the last ‖y‖ and loss (full batch) or their root mean
    square and mean over the last TAIL of the run (batch size 1)."""
    tail = run[run.step >= (1 - TAIL) * run.step.max()] if batch_size == 1 else run.sort_values("step").tail(1)
    return end_point(run, batch_size), float(np.sqrt((tail.y0**2 + tail.y1**2).mean())), float(tail.loss.mean())


def _distance_claim(df: pd.DataFrame, label: str, opt: str, bs: int, key: str, keys: dict, note: str = "",
                    **role) -> Claim:
    """x∞ against the predicted minimizer, and ‖y∞‖ against ‖y0‖: an end point off Γ = {y = 0} (‖y∞‖ above
    its start) is no minimizer on Γ, wherever x is."""
    target = np.array(theory.TOY4D_LIMITS[key])
    finals = final_rows(runs_of(df, opt, bs, **keys))
    done = finals[finals.status == "completed"]
    ends = [end_state(runs_of(df, opt, bs, run=r), bs) for r in done.run]
    dist = np.array([np.linalg.norm(x - target) for x, _, _ in ends])
    y_start = float(np.linalg.norm(setting(df, "task.y_init")))
    on_gamma = np.array([y <= y_start for _, y, _ in ends])
    loss0 = setting(df[df.step == 0], "loss")
    where = "; ".join(f"x = ({x[0]:.3f}, {x[1]:.3f}), ‖y‖ = {y:.2g}, L = {loss:.2g}" for x, y, loss in ends)
    return Claim(label, f"x∞ = ({target[0]:.3g}, {target[1]:.3g}) on Γ",
                 f"{where}; max distance {dist.max():.3g} (L0 = {loss0:.3g}; {len(done)}/{len(finals)} runs "
                 "completed)" if len(dist) else "no completed run",
                 f"‖x∞ − x*‖ ≤ {TOLERANCE:g} and ‖y∞‖ ≤ ‖y0‖ = {y_start:.3g}",
                 bool(len(dist) and (dist <= TOLERANCE).all() and on_gamma.all()), note, **role)


def diverged_note(df: pd.DataFrame, opt: str, bs: int) -> str:
    """'; ρ = … with η = … diverges' for the runs of ``opt`` at batch size ``bs`` that diverged."""
    final = final_rows(runs_of(df, opt, bs, **{"lr_schedule.name": "constant"}))
    diverged = final[final.status == "diverged"]
    return "".join(f"; ρ = {r.rho:g} with η = {r.lr:g} diverges" for r in diverged.itertuples())


FIGURE_SOURCE = f"ours: Wen's figure gives no parameters and no error; {TOLERANCE:g} in x, and ‖y‖ back at Γ"


def claims(df: pd.DataFrame) -> list[Claim]:
    biased = [(lr, theory.toy4d_sam_bs1_cycle_limit(lr)) for lr in sorted(df.lr.unique())]
    h = f"η={HEADLINE['lr']:g} annealed, ρ={HEADLINE['rho']:g}"
    const = final_rows(runs_of(df, "sam", 1, **{"lr_schedule.name": "constant"}))
    thm11 = (const.lr + const.rho) * np.log(1 / (const.lr * const.rho))
    fig1 = dict(kind="paper", source=FIGURE_SOURCE)
    off_gamma = final_rows(runs_of(df, "gd_ascent", 2, **HEADLINE))
    out = [
        _distance_claim(df, f"full-batch SAM → argmin λ1 = argmin F0 ({h})", "sam", 2, "sam", HEADLINE,
                        cite="Wen Fig. 1 (1)", **fig1),
        _distance_claim(df, "full-batch SAM → argmin F0 (constant η, every η, ρ)", "sam", 2, "sam",
                        {"lr_schedule.name": "constant"}, cite="Wen Fig. 1 (1)", **fig1),
        _distance_claim(df, f"GD on L^asc → argmin λ_min = argmin F1 ({h})", "gd_ascent", 2, "gd_ascent",
                        HEADLINE, cite="Wen Fig. 1 (2)", **fig1,
                        note="x reaches argmin F1, but the iterate leaves Γ: ‖y‖ grows from "
                             f"{np.linalg.norm(setting(df, 'task.y_init')):.3g} to "
                             f"{float(np.hypot(off_gamma.y0, off_gamma.y1).max()):.3g} (y1 ≈ "
                             f"{float(off_gamma.y1.abs().max()):.2f}) and the loss ends above its start: an end "
                             "point off the manifold, not a minimizer on Γ (the mechanism is not established here)"),
        _distance_claim(df, "GD on L^asc → argmin F1 (constant η, every η, ρ)", "gd_ascent", 2, "gd_ascent",
                        {"lr_schedule.name": "constant"}, cite="Wen Fig. 1 (2)", **fig1,
                        note="with constant η, y0 flips sign every step in a 2-cycle (the "
                             "normalization's derivative makes y0 = 0 unstable) and x freezes at a spurious "
                             "point between (0,0) and (1,1); where it freezes depends on (η, ρ) and, the "
                             "cycle being chaotic, even on rounding" + diverged_note(df, "gd_ascent", 2)),
        _distance_claim(df, f"SAM batch size 1 → argmin Tr = argmin F0+F1 ({h}; mean of the last "
                            f"{TAIL:.0%})", "sam", 1, "sam_bs1", HEADLINE, cite="Wen Fig. 1 (3)", **fig1),
        _distance_claim(df, "SAM batch size 1 → argmin F0+F1 (constant η; mean of last iterates)", "sam", 1,
                        "sam_bs1", {"lr_schedule.name": "constant"}, kind="paper", cite="Wen Thm 11",
                        source="Thm 11: ‖Φ(x) − X‖ = O((η+ρ)·log(1/ηρ)), only for (η+ρ)·log(1/ηρ) small",
                        in_hypotheses=False,
                        note=f"(η+ρ)·log(1/ηρ) = {thm11.min():.2g} … {thm11.max():.2g} at these (η, ρ): not small, "
                             "so Thm 11 bounds nothing here. The end points carry a finite-η bias: in its "
                             "2-cycle the step on L_k weights F_k by (2/(2−4ηF_k))², favouring F0 (the larger); "
                             "minimizing Σ_k c_k F_k with these weights gives "
                             + " and ".join(f"({x[0]:.3f}, {x[1]:.3f}) at η = {lr:g}" for lr, x in biased)
                             + ". It vanishes as η → 0, hence the annealed headline"),
    ]
    out.append(_distance_claim(
        df, f"GD on the batch-size-1 L^asc → argmin Tr ({h}; mean of the last {TAIL:.0%})",
        "gd_ascent", 1, "sam_bs1", HEADLINE, kind="paper", cite="Wen Thm 10 (stochastic R^asc → Tr/2)",
        source=FIGURE_SOURCE))
    gd = final_rows(runs_of(df, "gd", 2))
    x0, y0 = start(df), np.array(setting(df, "task.y_init"))
    move = np.hypot(gd.x0 - x0[0], gd.x1 - x0[1]).max()
    scale = float(y0 @ y0)
    out.append(Claim("GD baseline stops near its start (no drift along Γ)",
                     f"‖x∞ − x0‖ = O(‖y0‖²) = O({scale:g})", f"max ‖x∞ − x0‖ = {move:.4f}", f"≤ ‖y0‖² = {scale:g}",
                     bool(move <= scale), kind="extension",
                     source="ours: gradient flow moves x by O(‖y0‖²) before it reaches Γ (constant 1)"))
    sam = runs_of(df, "sam", 2)
    sam = sam[(sam.status == "completed") & (sam.step >= sam.steps / 2)]
    angle = np.arccos(np.clip(sam.grad_v1_cos, 0, 1))
    ratio = (angle / sam.rho).groupby([sam.lr, sam.rho, sam["lr_schedule.name"]]).max()
    rho_over_lr = sam.rho / sam.lr
    out.append(Claim("Thm 8: in phase II ∠(∇L, v1(∇²L)) = O(ρ) (full-batch SAM, second half of each run)",
                     "angle ≤ C·ρ", f"max angle/ρ = {ratio.max():.2e} over {len(ratio)} runs",
                     "C = 1", bool((ratio <= 1).all()), kind="paper", cite="Wen Thm 8 (phase II alignment)",
                     source="ours: the constant of O(ρ)", in_hypotheses=False,
                     note=f"Thm 8 assumes ρ/η small; these runs have ρ/η = {rho_over_lr.min():.0f} … "
                          f"{rho_over_lr.max():.0f}: shown, not scored"))
    return out


FIGURE = Figure(
    "wen_fig1", "4D toy: SAM, GD on L^asc, SAM with batch size 1", draw, claims, cite="Wen Fig. 1",
    notes=("Init x = (0.5, 0.5), y = (0.1, 0.1); 7,000 steps; sweep η ∈ {0.002, 0.005}, ρ ∈ {0.5, 2}, "
           "constant or geometrically annealed η (to 1e-4·η, `lr_schedule`). The paper gives none of these. "
           "GD on L^asc (full derivative through the normalization) reaches argmin F1 only with η annealed "
           "and ρ large (η/ρ small): with constant η it freezes at a spurious point. With ρ = 0.5 and "
           "annealing, the flow time Σ_t η_t·ρ² of the run is too short for any method to "
           "finish its drift (those end points lie short of the targets, on the way). Batch-size-1 SAM "
           "has a finite-η bias toward argmin F0 (its 2-cycle), which the annealing removes; its end "
           "point is the mean of the last 20% of logged iterates. GD on the batch-size-1 L^asc also "
           "lands at argmin F0+F1 (Thm 10: stochastic ascent-direction sharpness → trace). The "
           "paper-length sweep is experiment=wen_fig1_long (10⁶ steps, ρ down to 0.1; not run by "
           "make figs)."),
)
