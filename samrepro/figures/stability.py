"""Stability phase diagrams (the project's own: no paper shows these): where GD, SAM and USAM converge or
diverge over an η × ρ grid, against the boundaries of Dai et al. Thm 1 / Thm 10 — GD and SAM stable iff
η < 2/λ, USAM iff η(λ + ρλ²) < 2 — with λ the top Hessian eigenvalue at the initialization (exact for a
quadratic, a local approximation otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting, sharpness_at_init, task_config


def first_diverging_lr(final: pd.DataFrame) -> pd.Series:
    """Per ρ: the smallest η on the grid at which the run diverged (NaN when none did)."""
    diverged = final[final.status == "diverged"]
    return diverged.groupby("rho").lr.min().reindex(sorted(final.rho.unique()))


NOT_A_PAPER_FIGURE = "project diagram, not a paper figure"


def draw_phase_diagram(df: pd.DataFrame, stem: Path, lam: float, title: str, log_lr: bool = False,
                       extra_panel=None) -> None:
    """GD, SAM and USAM over the η × ρ grid, and ``extra_panel(ax)`` in a fourth panel when given."""
    final = final_rows(df)
    loss_column = "loss" if "loss" in final else "train_loss"
    lrs, rhos = np.sort(final.lr.unique()), np.sort(final.rho.unique())
    fig, axes = plt.subplots(1, 4 if extra_panel else 3, figsize=(19 if extra_panel else 14, 4.2),
                             layout="constrained")
    for ax in axes[1:3]:
        ax.sharey(axes[0])
    if extra_panel:
        extra_panel(axes[3])
    for ax, opt in zip(axes, ("gd", "sam", "usam")):
        runs = final[final["opt"] == opt].set_index(["rho", "lr"])
        loss = runs[loss_column].where(runs.status != "diverged").unstack("lr").reindex(index=rhos, columns=lrs)
        diverged = (runs.status == "diverged").unstack("lr").reindex(index=rhos, columns=lrs)
        image = ax.pcolormesh(lrs, rhos, np.log10(loss.to_numpy(dtype=float) + 1e-300), cmap="viridis",
                              vmin=-12, vmax=2, shading="nearest")
        ax.pcolormesh(lrs, rhos, np.where(diverged.to_numpy(dtype=bool), 1.0, np.nan), cmap="Reds", vmin=0,
                      vmax=1.5, shading="nearest")
        r = np.linspace(rhos.min(), rhos.max(), 200)
        ax.axvline(theory.gd_max_lr(lam), color="w", ls="--", lw=1.2, label="η = 2/λ (GD, SAM)")
        ax.plot(theory.usam_max_lr(lam, r), r, color="tab:orange", lw=1.5, label="η(λ+ρλ²) = 2 (USAM)")
        ax.set(xlabel="η", title=f"{opt.upper()}: final log10 L (red: diverged)", xlim=(lrs.min(), lrs.max()),
               xscale="log" if log_lr else "linear")
    axes[0].set_ylabel("ρ")
    axes[0].legend(fontsize=8, loc="upper right")
    fig.colorbar(image, ax=axes[:3], label="log10 final loss", shrink=0.9)
    fig.suptitle(f"{title}; λ = {lam:.4g}, {setting(df, 'steps'):,} steps ({NOT_A_PAPER_FIGURE})")
    save(fig, stem)


def boundary_claims(df: pd.DataFrame, lam: float, exact: bool) -> list[Claim]:
    """GD's and USAM's measured first diverging η against 2/λ and 2/(λ+ρλ²), within one grid step
    (the nearest larger grid value counts as a match), and SAM's stability below 2/λ."""
    final = final_rows(df)
    lrs = np.sort(final.lr.unique())
    kind = "" if exact else " (λ at init: local approximation)"
    grid = "ours: one step of the η grid"
    usam_role, gd_role, sam_role = (
        (dict(kind="paper", cite="Dai Thm 1 (USAM: Thm 10)", source=grid),
         dict(kind="paper", cite="Dai Thm 1 ('GD converges iff η < 2/β')", source=grid),
         dict(kind="paper", cite="Dai Thm 1 (SAM)", source="exact: Thm 1 holds for every ρ"))
        if exact else (dict(kind="extension", source=grid + "; λ at init"),) * 2
        + (dict(kind="extension", source="exact"),))

    def next_grid_lr(x):
        above = lrs[lrs > x - 1e-12]
        return above[0] if len(above) else np.nan

    out = []
    usam = first_diverging_lr(final[final["opt"] == "usam"])
    predicted = np.array([next_grid_lr(theory.usam_max_lr(lam, r)) for r in usam.index])
    match = np.isclose(usam.to_numpy(), predicted, equal_nan=True) | (
        np.abs(usam.to_numpy() - predicted) <= np.diff(lrs).max() + 1e-12)
    out.append(Claim(
        f"USAM diverges once η(λ+ρλ²) > 2{kind}", "first diverging η = first grid η above 2/(λ+ρλ²)",
        f"{int(match.sum())}/{len(usam)} values of ρ match (ρ=0: {usam.iloc[0]:.4g} vs {predicted[0]:.4g}; "
        f"ρ={usam.index[-1]:g}: {usam.iloc[-1]:.4g} vs {predicted[-1]:.4g})", "one grid step of η",
        bool(match.all()), **usam_role, note="" if exact or match.all() else
        "a non-quadratic loss: the sharpness changes along the path, so λ at init predicts the boundary only "
        "where divergence sets in within the first steps (large ρ); elsewhere the runs survive longer"))
    gd = first_diverging_lr(final[final["opt"] == "gd"]).iloc[0]
    gd_pred = next_grid_lr(theory.gd_max_lr(lam))
    gd_ok = bool(np.isclose(gd, gd_pred) or abs(gd - gd_pred) <= np.diff(lrs).max() + 1e-12)
    out.append(Claim(f"GD diverges iff η > 2/λ{kind}",
                     f"first diverging η = {gd_pred:.4g} (2/λ = {theory.gd_max_lr(lam):.4g})",
                     f"{gd:.4g}" if np.isfinite(gd) else "none diverged", "one grid step of η", gd_ok, **gd_role,
                     note="" if exact or gd_ok else
                     f"GD survives up to η = {gd:.3g} = {gd * lam / 2:.1f}×2/λ(w0): on this non-quadratic loss "
                     "the iterates leave the sharp initial region (the sharpness drops along the path) "
                     "instead of diverging; λ at init is only a local estimate"))
    sam = final[(final["opt"] == "sam") & (final.lr < theory.gd_max_lr(lam))]
    n_div = int((sam.status == "diverged").sum())
    out.append(Claim(f"SAM with η < 2/λ never diverges, for every ρ{kind}", "0 diverged runs",
                     f"{n_div} of {len(sam)} diverged", "exact", n_div == 0, **sam_role))
    return out


def stability_figure(experiment: str, title: str, exact: bool, notes: str, log_lr: bool = False) -> Figure:
    """λ = λ_max(∇²L(w0)) is measured on the task of the collected runs (``columns.sharpness_at_init``);
    ``{key}`` in ``title`` is the run's ``task.<key>`` (a list as its values, comma-separated)."""

    def draw(df: pd.DataFrame, stem: Path) -> None:
        values = {k: ", ".join(f"{x:g}" for x in v) if isinstance(v, list) else v
                  for k, v in OmegaConf.to_container(task_config(df)).items()}
        draw_phase_diagram(df, stem, sharpness_at_init(df), title.format_map(values), log_lr)

    def claims(df: pd.DataFrame) -> list[Claim]:
        return boundary_claims(df, sharpness_at_init(df), exact)

    return Figure(experiment, re.sub(r"\{\w+\}", "…", title), draw, claims, notes=notes)


FIGURES = [
    stability_figure("stability_quadratic", "Stability of GD/SAM/USAM on ½wᵀΛw, Λ = diag({eigenvalues})", True,
                     "30 × 30 grid, 500 steps, w0 = (1, 1, 1)."),
    stability_figure("stability_single_neuron", "Stability of GD/SAM/USAM on ½(xy)² from ({init})", False,
                     "30 × 30 grid (η log-spaced, ρ ≤ 0.145), 1,000 steps; the boundaries use λ_max(∇²L(w0)), exact "
                     "only for a quadratic: the loss is quartic, so the true boundary can bend away.",
                     log_lr=True),
    stability_figure("stability_matrix_sensing", "Stability of GD/SAM/USAM on matrix sensing (d = {d})", False,
                     "d = 10, r = 2, m = 100 (the paper's d = 100 does not fit 2,700 configurations on a CPU); "
                     "U0 = 1.5·Q (Q Haar-orthogonal); 30 × 30 grid (η log-spaced, ρ ≤ 0.29), 300 steps; "
                     "boundaries from λ_max(∇²L(U0)).",
                     log_lr=True),
]
