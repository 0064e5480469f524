"""Dai et al. Table 1 over an η × ρ grid: GD y∞² ≈ 2/η, SAM y∞² ≈ 0, USAM (1 + ρy∞²)y∞² ≈ 2/η.

The formal theorems behind the table require η ≤ ½ (Thm 35, the formal Thm 5; Thm 3's and 4's O(η)
terms are not small beyond it either); η = 0.8 is kept in the grid to show what happens outside
those hypotheses, in its own rows, shown and not scored — GD, SAM and USAM alike.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting
from samrepro.figures.dai_fig4 import COLORS, limit_claims
from samrepro.records import write_atomic

SMALL_LR = 0.5  # Thm 35's hypothesis η ≤ ½: the regime in which Table 1's rows are scored


def table(final: pd.DataFrame) -> pd.DataFrame:
    t = final.assign(y2=final.y**2).pivot_table(index=["lr", "rho"], columns="opt", values="y2")
    t["2/η"] = theory.gd_limit_y2(t.index.get_level_values("lr"))
    t["ỹ² (eq. 7)"] = theory.usam_limit_y2(t.index.get_level_values("lr"), t.index.get_level_values("rho"))
    return t.rename(columns={"gd": "GD y∞²", "sam": "SAM y∞²", "usam": "USAM y∞²"})


def draw(df: pd.DataFrame, stem: Path) -> None:
    final = final_rows(df)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    gd = final[final["opt"] == "gd"].drop_duplicates("lr")
    lrs = np.geomspace(gd.lr.min() * 0.8, gd.lr.max() * 1.2, 50)
    axes[0].plot(lrs, theory.gd_limit_y2(lrs), "k--", lw=0.8, label="2/η")
    axes[0].plot(gd.lr, gd.y**2, "o", color=COLORS["gd"], label="GD y∞²")
    axes[0].set(xscale="log", yscale="log", xlabel="η", ylabel="y∞²", title="GD: y∞² ≈ 2/η")
    sam = final[final["opt"] == "sam"]
    for lr, runs in sam.groupby("lr"):
        axes[1].plot(runs.rho, runs.y**2, "o-", label=f"η={lr:g}")
    axes[1].set(xscale="log", yscale="log", xlabel="ρ", ylabel="y∞²", title="SAM: y∞² ≈ 0 for every (η, ρ)")
    usam = final[final["opt"] == "usam"]
    pred = theory.usam_limit_y2(usam.lr, usam.rho)
    small = usam.lr <= SMALL_LR
    axes[2].plot(pred[small], usam.y[small] ** 2, "o", color=COLORS["usam"], label=f"η ≤ {SMALL_LR:g}")
    axes[2].plot(pred[~small], usam.y[~small] ** 2, "x", color="tab:red",
                 label=f"η > {SMALL_LR:g} (outside Thm 35)")
    grid = np.geomspace(pred.min() * 0.8, pred.max() * 1.2, 50)
    axes[2].plot(grid, grid, "k--", lw=0.8, label="y∞² = ỹ²")
    axes[2].set(xscale="log", yscale="log", xlabel="ỹ² of eq. (7)", ylabel="USAM y∞²",
                title="USAM: stops just below ỹ²")
    for ax in axes:
        ax.legend(fontsize=8)
    x0, y0 = setting(df, "task.init")
    fig.suptitle(f"Dai et al. Table 1 on ℓ(xy) from ({x0:g}, √{y0**2:g}), {setting(df, 'steps'):,} steps")
    save(fig, stem)
    write_atomic(stem.parent.parent / f"{stem.name}.md",
        "# Dai et al. Table 1, measured (y∞² at the last step)\n\n" + table(final).to_markdown(floatfmt=".4g")
        + "\n")


def claims(df: pd.DataFrame) -> list[Claim]:
    final = final_rows(df)
    small = final.lr <= SMALL_LR
    lrs = ", ".join(f"{lr:g}" for lr in sorted(final[~small].lr.unique()))
    large = limit_claims(final[~small], f"η = {lrs}", in_hypotheses=False,
                         note=f"η = {lrs} > ½ violates Thm 35's hypothesis η ≤ ½ (and Thm 3's O(η) term is not "
                              "small): shown, not scored")
    return limit_claims(final[small], f"η ≤ {SMALL_LR:g} grid") + large


FIGURE = Figure("dai_table1", "Table 1 limits over an η×ρ grid", draw, claims, cite="Dai Table 1",
                notes="Grid η ∈ {0.1, 0.2, 0.4, 0.8} (all > η_GD = 1/18), ρ ∈ {0.05, 0.1, 0.2, 0.3}, 20,000 "
                      "steps. SAM's drift to the origin takes ~1/(ηρ²) steps, so the grid keeps "
                      "ηρ² ≥ 2.5e-4 (≥ 5 time constants); smaller ρ needs proportionally longer runs "
                      "(steps=… on the command line). η = 0.8 lies outside Thm 35's hypothesis η ≤ ½: "
                      "its rows are shown and not scored.")
