"""The GD half of Dai et al.'s sparse-coding dilemma (§4, after Ahn et al. 2023a): "a small η gives worse
performance, but a large η results in divergence". Where does GD stop working on the sparse-coding network?

A coarse-to-fine η grid, read at T = 2,000 steps, at Ahn's scale c = 1 (``dai_sparse_gd``) and at Dai's
c = 8π/(0.05·d²) (``dai_sparse_gd_c``; GD on c·L with η is GD on L with c·η, so the edge in units of GD's
threshold 8π/(c·d²) must come out the same). A run fails when it diverges (non-finite, or loss above the
ceiling) or ends dead (every unit off on most test points). ``frozen``: its parameters did not move between
the last two logged rows — no training point has an active unit, the gradient is exactly 0, for good.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.sparse_coding import DAI_SCALE, NETWORK, dead, settings

CITE = "Dai §4 ('a large η results in divergence'), after Ahn et al. 2023a"
DAI_GD_MAX_LR = 0.2  # the largest GD η of Dai's Fig. 6 / 7 (dai_fig6.yaml), on Dai's scale c
PARAMS = ["bias", "a_plus", "a_minus"]


def outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's final row with ``failed`` (diverged or dead), ``frozen`` (a±, b unchanged over the last
    two logged rows) and ``scaled`` = η / (8π/(c·d²))."""
    d, _, c = settings(df)
    df = df.sort_values(["run", "step"])
    moved = df.groupby("run")[PARAMS].diff().abs().sum(axis=1)
    final = final_rows(df.assign(moved=moved))
    return final.assign(failed=(final.status == "diverged") | dead(final), frozen=final.moved == 0,
                        scaled=final.lr / theory.ahn_gd_threshold(d, c))


def edge(final: pd.DataFrame, column: str = "failed") -> tuple[float | None, float | None]:
    """(largest η at which no run is ``column`` (failed, frozen), smallest η from which every run on the grid
    is); the edge is sharp when they are neighbours on the grid."""
    by_lr = final.groupby("lr")[column].agg(["all", "any"])
    failing = by_lr[by_lr["all"]].index
    working = by_lr[~by_lr["any"]].index
    top = min((lr for lr in failing if by_lr.loc[lr:, "all"].all()), default=None)
    return (max((lr for lr in working if top is None or lr < top), default=None), top)


def draw(df: pd.DataFrame, stem: Path) -> None:
    d, _, c = settings(df)
    threshold = float(theory.ahn_gd_threshold(d, c))
    final = outcomes(df)
    low, high = edge(final)
    fig, (ax, ax_b) = plt.subplots(1, 2, figsize=(12.5, 4.6), layout="constrained")
    for seed, runs in final.groupby("task.data_seed"):
        ax.plot(runs.lr, 100 * runs.test_acc, "o-", ms=4, label=f"data seed {seed}")
    failed = final[final.failed]
    ax.plot(failed.lr, 100 * failed.test_acc, "o", mfc="none", color="k", ms=9, label="dead network (fails)")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"GD threshold 8π/(c·d²) = {threshold:.3g}")
    if high is not None:
        start = low if low is not None else threshold
        ax.axvspan(start, high, color="tab:red", alpha=0.15, label=f"edge: ({start:g}, {high:g}]")
    ax.set(xscale="log", xlabel="η", ylabel=f"test accuracy at T = {int(final.step.max()):,} (%)",
           title="GD's final accuracy vs η")
    ax.legend(fontsize=7, loc="center left")
    grid = sorted(final.lr.unique())
    below = grid[max(0, grid.index(low) - 1)] if low is not None else 0  # one grid η below the edge, recovering
    near = df[(df["task.data_seed"] == df["task.data_seed"].min()) & df.lr.between(below, (high or np.inf) * 1.2)]
    for i, (lr, run) in enumerate(near.groupby("lr")):
        ax_b.plot(run.step, run.bias, color=plt.cm.viridis(i / max(1, near.lr.nunique() - 1)), label=f"η = {lr:g}")
    ax_b.set(xlabel="step", ylabel="bias b", title="b near the edge (data seed "
             f"{df['task.data_seed'].min()}): overshoot, then recovery or death")
    ax_b.legend(fontsize=7)
    fig.suptitle(f"GD on the sparse-coding network at c = {c:g}: where large η stops working "
                 f"(d = {d}, {final['task.data_seed'].nunique()} data seeds)", fontsize=10)
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    d, _, c = settings(df)
    threshold = float(theory.ahn_gd_threshold(d, c))
    final = outcomes(df)
    low, high = edge(final)
    sharp = high is not None and low is not None and not final.lr.between(low, high, inclusive="neither").any()
    diverged = int((final.status == "diverged").sum())
    works = final[final.lr <= (low if low is not None else -1)]
    fails = final[final.failed]
    measured = (f"works up to η = {low:g} ({low / threshold:.1f}× 8π/(c·d²); final accuracy "
                f"{100 * works.test_acc.min():.1f}–{100 * works.test_acc.max():.1f}%), every run fails from η = "
                f"{high:g} ({high / threshold:.1f}×) up to {final.lr.max():g}" if sharp else
                f"no sharp edge: working ≤ {low}, failing ≥ {high}")
    frozen = edge(final, "frozen")[1]
    if sharp and frozen is not None and frozen > high:
        measured += (f"; dead for good (gradient exactly 0) from η = {frozen:g} ({frozen / threshold:.1f}×), "
                     f"below it dead at T with b still rising (a late recovery is possible)")
    dai_range = (f"; Dai's GD runs (η ≤ {DAI_GD_MAX_LR:g} on this scale) are {high / DAI_GD_MAX_LR:.0f}× below it"
                 if sharp and abs(c - theory.dai_loss_mult(d, 0.05)) < 1e-6 else "")
    return [Claim(
        "GD fails beyond a finite η (the dilemma's 'large η')", "every run fails above some η on the grid; "
        "below it GD works", measured + dai_range, "a sharp edge on the grid, the same for every data seed",
        sharp, kind="paper", cite=CITE, source="ours: a failure must be seed-independent to be an edge"),
        Claim("the failure at large η is a divergence", "GD diverges (non-finite loss, or above the ceiling)",
              f"{diverged}/{len(fails)} failing runs diverged; {int(fails.frozen.sum())}/{len(fails)} are dead "
              f"with the gradient exactly 0 (parameters frozen), the rest dead but still moving; largest |b| "
              f"{final.bias.abs().max():.3g}", "every failing run diverged", len(fails) > 0 and diverged == len(fails),
              kind="paper", cite=CITE, source="exact: a run diverges or it does not",
              note="none diverges: the first steps push b below −max|x_i| for most points, the units switch off "
                   "and the network dies (loss log 2, f = 0); the logistic loss grows only linearly in |f|, so "
                   "no η of the grid makes it non-finite")]


def figure(fig_id: str, notes: str) -> Figure:
    return Figure(fig_id, "sparse coding: GD's largest working η", draw, claims, cite=CITE, notes=notes)


FIGURES = [
    figure("dai_sparse_gd", f"{NETWORK} Here c = 1 (Ahn's scale, threshold 8π/d² ≈ 6.28e-4). GD, η ∈ 0.0125 … 10 "
           "(coarse) and 0.03 … 0.045 (fine), 2 data seeds, T = 2,000 steps (a partly dead network near the "
           "edge recovers within ~1,400 steps)."),
    figure("dai_sparse_gd_c", f"{NETWORK} {DAI_SCALE} GD, η ∈ 1 … 800 (coarse) and 2.4 … 3.6 (fine), "
           "dai_sparse_gd's grid divided by c; 2 data seeds, T = 2,000 steps."),
]
