"""Dai et al. Thm 3 (Ahn et al. 2023a Thm 5/6), case γ < 2: GD on ℓ(xy) from (x0, y0) with
η = γ/(y0² − x0²) stops on the y-axis at y∞² ∈ [γ/η − O(γ) − O(η/γ), γ/η + O(η/γ)], where γ/η = y0² − x0²:
below GD's threshold the limit is the conserved y² − x² of gradient flow, up to O(γ).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting
from samrepro.figures.dai_fig4 import COLORS

SLACK = 3.0  # the constants of Thm 3's O(γ) and O(η/γ), not given: taken as 3, as for dai_fig4's O(η)


def limits(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: γ = η(y0² − x0²), the measured y∞² and its offset (y∞² − γ/η)/γ from gradient flow's y0² − x0²."""
    x0, y0 = setting(df, "task.init")
    final = final_rows(df)
    gamma = final.lr * (y0**2 - x0**2)
    return final.assign(gamma=gamma, y2=final.y**2, offset=(final.y**2 - (y0**2 - x0**2)) / gamma)


def draw(df: pd.DataFrame, stem: Path) -> None:
    x0, y0 = setting(df, "task.init")
    runs = limits(df)
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for lr, run in df.groupby("lr"):
        ax_t.plot(run.step, run.y**2, label=f"γ = {lr * (y0**2 - x0**2):.2g}")
    ax_t.axhline(y0**2 - x0**2, color="k", ls="--", lw=0.8, label="γ/η = y0² − x0²")
    ax_t.set(xscale="symlog", xlim=(0, setting(df, "steps")), xlabel="step", ylabel="$y_t^2$",
             title="GD: y² settles (step axis linear below 1)")
    ax_t.legend(fontsize=8)
    gammas = np.linspace(0.3, 2.2, 50)
    ax.plot(runs.gamma, runs.y2, "o", color=COLORS["gd"], label="GD y∞²")
    ax.axhline(y0**2 - x0**2, color="k", ls="--", lw=0.8, label="γ/η = y0² − x0² (γ < 2)")
    ax.plot(gammas, theory.gd_limit_y2(gammas / (y0**2 - x0**2)), "tab:red", ls=":", label="2/η (γ > 2)")
    ax.fill_between(gammas, y0**2 - x0**2 - SLACK * gammas, y0**2 - x0**2, color="0.9", label=f"−{SLACK:g}γ band")
    ax.set(xlabel="γ = η(y0² − x0²)", ylabel="y∞²", title="limit vs γ", ylim=(y0**2 - x0**2 - 7, y0**2 - x0**2 + 3))
    ax.legend(fontsize=8)
    fig.suptitle(f"Dai et al. Thm 3, γ < 2: GD on ℓ(xy) from ({x0:g}, √{y0**2:g}), {setting(df, 'steps'):,} steps")
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    runs = limits(df)
    x0, y0 = setting(df, "task.init")
    low = -SLACK - SLACK * runs.lr / runs.gamma**2  # (−O(γ) − O(η/γ))/γ
    high = SLACK * runs.lr / runs.gamma**2  # O(η/γ)/γ
    ok = (runs.status == "completed") & (runs.offset >= low) & (runs.offset <= high)
    return [Claim(
        "GD with γ < 2: y∞² ≈ y0² − x0² (= γ/η)", "γ/η − O(γ) − O(η/γ) ≤ y∞² ≤ γ/η + O(η/γ)",
        f"(y∞² − (y0² − x0²))/γ ∈ [{runs.offset.min():+.3f}, {runs.offset.max():+.3f}] over γ ∈ "
        f"{[round(g, 2) for g in sorted(runs.gamma)]}; y∞² ∈ [{runs.y2.min():.3f}, {runs.y2.max():.3f}] "
        f"(y0² − x0² = {y0**2 - x0**2:g})",
        f"−{SLACK:g}(γ + η/γ) ≤ y∞² − γ/η ≤ {SLACK:g}η/γ", bool(ok.all()), kind="paper",
        cite="Dai Thm 3 (1) (Ahn et al. 2023a Thm 5)",
        source=f"Thm 3's O(γ) and O(η/γ); their constants are not given, taken as {SLACK:g} (ours)")]


FIGURE = Figure("dai_thm3", "ℓ(xy): GD's limit below its threshold (γ < 2)", draw, claims, cite="Dai Thm 3",
                notes="ℓ the symmetrized logistic loss, from (2, √40) as Fig. 4 (y0² − x0² = 36); GD with "
                      "η = γ/36 for γ ∈ {0.5, 1, 1.5, 1.9} (Dai's range γ ∈ [½, 2]), 5,000 steps.")
