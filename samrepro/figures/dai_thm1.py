"""Dai et al. Thm 1 (with Thm 10) on the quadratic ½wᵀΛw: where GD, SAM and USAM diverge.

GD diverges iff η > 2/λ1; USAM already once η(λ1 + ρλ1²) > 2; SAM with η < 2/β never diverges, for
any ρ, and (eq. 3) ends within L ≤ (1 − αη(2 − ηβ))^t L(w0) + ηβ³ρ²/(2α(2 − ηβ)). Eq. (3) rests on
Lemma 9, stated for η < 2/β, whose proof drops the term −(η − η²β)⟨∇L(w_{t+½}), ∇L(w_t)⟩ as ≤ 0:
that needs η ≤ 1/β. The fourth panel draws L_T over eq. (3)'s bias term against η.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows
from samrepro.figures.columns import setting
from samrepro.figures.stability import boundary_claims, draw_phase_diagram


def sam_against_bound(df: pd.DataFrame) -> tuple[pd.DataFrame, float, float]:
    """The final rows of SAM with 0 < η < 2/β and ρ > 0, with eq. (3)'s bound (``bound``), its bias term
    ηβ³ρ²/(2α(2 − ηβ)) (``bias``), and (β, α) of Λ = diag(task.eigenvalues); L(w0) is the step-0 loss."""
    lam = setting(df, "task.eigenvalues")
    beta, alpha = max(lam), min(lam)
    final = final_rows(df)
    sam = final[(final["opt"] == "sam") & (final.lr < theory.gd_max_lr(beta)) & (final.rho > 0)]
    loss0 = setting(df[df.step == 0], "loss")
    bound = theory.sam_loss_bound(sam.lr, sam.rho, alpha, beta, sam.steps_done, loss0)
    bias = theory.sam_loss_bound(sam.lr, sam.rho, alpha, beta, np.inf, 0.0)
    return sam.assign(bound=bound, bias=bias), beta, alpha


def draw(df: pd.DataFrame, stem: Path) -> None:
    lam = setting(df, "task.eigenvalues")
    sam, beta, _ = sam_against_bound(df)

    def ratio_panel(ax: plt.Axes) -> None:
        rhos = sorted(sam.rho.unique())
        for i, (rho, runs) in enumerate(sam.groupby("rho")):
            color = plt.cm.viridis(i / max(1, len(rhos) - 1))
            ax.plot(runs.lr, runs.loss / runs.bias, "o-", ms=2.5, lw=0.8, color=color,
                    label=f"ρ = {rho:g}" if rho in (rhos[0], rhos[len(rhos) // 2], rhos[-1]) else None)
        ax.axhline(1, color="k", ls="--", lw=1, label="eq. (3): L_T ≤ bias term")
        ax.axvline(1 / beta, color="tab:red", ls=":", lw=1.2, label="η = 1/β (Lemma 9's proof)")
        ax.set(yscale="log", xlabel="η", ylabel="SAM's L_T / (ηβ³ρ²/(2α(2−ηβ)))",
               title="SAM against eq. (3)'s bias term (η < 2/β)")
        ax.legend(fontsize=7, loc="lower right")

    draw_phase_diagram(df, stem, max(lam), f"Dai et al. Thm 1 on ½wᵀΛw, Λ = diag{tuple(lam)}",
                       extra_panel=ratio_panel)


def claims(df: pd.DataFrame) -> list[Claim]:
    sam, beta, _ = sam_against_bound(df)
    within = sam.loss <= sam.bound + 1e-12
    ratio = sam.loss / sam.bound
    proven = sam.lr <= 1 / beta
    return boundary_claims(df, beta, exact=True) + [Claim(
        "SAM stays within eq. (3)", "L(w_T) ≤ (1−αη(2−ηβ))^T L(w0) + ηβ³ρ²/(2α(2−ηβ)) for η < 2/β",
        f"{int(within.sum())}/{len(sam)} runs inside; max L/bound = {ratio.max():.3g} at η = "
        f"{sam.lr[ratio.idxmax()]:g}", "exact", bool(within.all()),
        kind="paper", cite="Dai Thm 1, eq. (3) (Lemma 9)", source="exact: an inequality with its constants",
        note="" if within.all() else
        f"fails for η ≥ {sam[~within].lr.min():g} (2/β = {2 / beta:g}): SAM settles in the 2-cycle "
        "w = ±ηρλ1/(2−ηλ1)·e1, whose loss ½λ1(ηρλ1/(2−ηλ1))² exceeds the bias term as η → 2/β. Lemma 9 "
        "is stated for η < 2/β, but its proof bounds −(η−η²β)⟨∇L(w_{t+½}),∇L(w_t)⟩ ≤ 0, which needs "
        f"η ≤ 1/β = {1 / beta:g}. Stability (no divergence) still holds."), Claim(
        "SAM stays within eq. (3) where Lemma 9's proof holds (η ≤ 1/β)",
        "L(w_T) ≤ eq. (3)'s bound for η ≤ 1/β", f"{int(within[proven].sum())}/{int(proven.sum())} runs with "
        f"η ≤ {1 / beta:g} inside; max L/bound = {ratio[proven].max():.3g}", "exact", bool(within[proven].all()),
        kind="extension", source="exact: eq. (3) on the range of η its proof covers")]


FIGURE = Figure("dai_thm1", "quadratic divergence boundaries", draw, claims,
                notes="Λ = diag(2, 0.5) (β = 2, α = 0.5), w0 = (1, 1), 1,000 steps; a run diverges when "
                      "its loss exceeds 1e12 or is non-finite.")
