"""Wen et al. Thm 21: full-batch SAM on L = ½xᵀAx with ηλ1 < 1 aligns x(t) with v1(A) and
‖x(t)‖ → ηρλ1/(2 − ηλ1) (the 2-cycle x ↦ −x along v1). A = diag(λ), so v1 = e1 and the alignment is
|x_1|/‖x‖. (Thm 8's alignment of ∇L with v1 on the 4D toy is in wen_fig1.)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting

TOLERANCE = 1e-3  # relative error of ‖x∞‖; alignment 1 − |cos| ≤ TOLERANCE


def lam1(df: pd.DataFrame) -> float:
    return float(max(setting(df, "task.eigenvalues")))


def draw(df: pd.DataFrame, stem: Path) -> None:
    l1 = lam1(df)
    fig, (ax_a, ax_n, ax_f) = plt.subplots(1, 3, figsize=(16, 4.5))
    groups = list(df.groupby(["lr", "rho"]))
    for i, ((lr, rho), run) in enumerate(groups):
        run = run.sort_values("step")
        color = plt.cm.viridis(i / max(1, len(groups) - 1))
        pred = theory.sam_quadratic_limit_norm(lr, rho, l1)
        ax_a.plot(run.step, np.maximum(1 - run.w0.abs() / run.w_norm, 1e-17), color=color, lw=0.9,
                  label=f"η={lr:g}, ρ={rho:g}")
        ax_n.plot(run.step, run.w_norm / pred, color=color, lw=0.9)
    ax_a.set(xscale="symlog", yscale="log", xlabel="step", ylabel="1 − |⟨x, v1⟩|/‖x‖",
             title="alignment with v1(A)", xlim=(0, None))
    ax_a.legend(fontsize=6, ncol=2)
    ax_n.axhline(1, color="k", ls="--", lw=0.8)
    ax_n.set(xscale="symlog", yscale="log", xlabel="step", ylabel="‖x(t)‖ / (ηρλ1/(2−ηλ1))",
             title="norm against Thm 21", xlim=(0, None))
    final = final_rows(df)
    grid = np.linspace(0, 0.9, 100)
    for (rho, rows), marker, size in zip(final.groupby("rho"), "os^v", (11, 8, 5, 3), strict=False):
        ax_f.plot(rows.lr * l1, rows.w_norm / rho, marker, ms=size, mfc="none", label=f"ρ={rho:g}")
    ax_f.plot(grid, theory.sam_quadratic_limit_norm(grid, 1.0, 1.0), "k--", lw=0.8, label="ηλ1/(2−ηλ1)")
    ax_f.set(xlabel="ηλ1", ylabel="‖x∞‖/ρ", title="limit norm")
    ax_f.legend(fontsize=8)
    fig.suptitle(f"Wen et al. Thm 21: SAM on ½xᵀAx, A = diag{setting(df, 'task.eigenvalues')}, "
                 f"{setting(df, 'steps'):,} steps")
    fig.tight_layout()
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    final = final_rows(df)
    l1 = lam1(df)
    misalign = 1 - final.w0.abs() / final.w_norm
    rel = (final.w_norm / theory.sam_quadratic_limit_norm(final.lr, final.rho, l1) - 1).abs()
    return [
        Claim("Thm 21: x(t) aligns with v1(A) (ηλ1 < 1)", "1 − |cos∠(x, v1)| → 0",
              f"max 1 − |cos| = {misalign.max():.2e} over {len(final)} (η, ρ)", f"≤ {TOLERANCE:g}",
              bool((misalign <= TOLERANCE).all()), kind="paper", cite="Wen Thm 21",
              source="ours: a limit statement; 1e-3 after 1,000 steps"),
        Claim("Thm 21: ‖x(t)‖ → ηρλ1/(2 − ηλ1)", "relative error → 0",
              f"max relative error {rel.max():.2e} over {len(final)} (η, ρ)", f"≤ {TOLERANCE:g}",
              bool((rel <= TOLERANCE).all()), kind="paper", cite="Wen Thm 21",
              source="ours: a limit statement; 1e-3 after 1,000 steps"),
    ]


FIGURE = Figure("wen_thm21", "SAM on a quadratic: alignment and limit norm", draw, claims, cite="Wen Thm 21",
                notes="A = diag(2, 1.5, 1, 0.5), x0 = (1, 1, 1, 1), η ∈ {0.1, 0.25, 0.45} (ηλ1 ≤ 0.9 < 1), "
                      "ρ ∈ {0.01, 0.05, 0.2}, 1,000 steps; the alignment is slowest for small ηλ1, where "
                      "the gap between the 2-cycle along v1 and the other directions is small.")
