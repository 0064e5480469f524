"""Dai et al. Thm 1 (with Thm 10) on the quadratic ½wᵀΛw: where GD, SAM and USAM diverge.

GD diverges iff η > 2/λ1; USAM already once η(λ1 + ρλ1²) > 2; SAM with η < 2/β never diverges, for
any ρ, and (eq. 3) ends within L ≤ (1 − αη(2 − ηβ))^t L(w0) + ηβ³ρ²/(2α(2 − ηβ)).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows
from samrepro.figures.columns import setting
from samrepro.figures.stability import boundary_claims, draw_phase_diagram


def draw(df: pd.DataFrame, stem: Path) -> None:
    lam = setting(df, "task.eigenvalues")
    draw_phase_diagram(df, stem, max(lam), f"Dai et al. Thm 1 on ½wᵀΛw, Λ = diag{tuple(lam)}")


def claims(df: pd.DataFrame) -> list[Claim]:
    """β = λ1 and α = λd of Λ = diag(task.eigenvalues); L(w0) is the loss logged at step 0."""
    lam = setting(df, "task.eigenvalues")
    beta, alpha = max(lam), min(lam)
    final = final_rows(df)
    sam = final[(final["opt"] == "sam") & (final.lr < theory.gd_max_lr(beta))]
    loss0 = setting(df[df.step == 0], "loss")
    bound = pd.Series(theory.sam_loss_bound(sam.lr, sam.rho, alpha, beta, sam.steps_done, loss0), index=sam.index)
    within = sam.loss <= bound + 1e-12
    ratio = sam.loss / bound
    return boundary_claims(df, beta, exact=True) + [Claim(
        "SAM stays within eq. (3)", "L(w_T) ≤ (1−αη(2−ηβ))^T L(w0) + ηβ³ρ²/(2α(2−ηβ))",
        f"{int(within.sum())}/{len(sam)} runs inside; max L/bound = {ratio.max():.3g} at η = "
        f"{sam.lr[ratio.idxmax()]:g}", "exact", bool(within.all()),
        note="" if within.all() else
        f"fails for η ≥ {sam[~within].lr.min():g}: SAM settles in the 2-cycle w = ±ηρλ1/(2−ηλ1)·e1, whose "
        "loss ½λ1(ηρλ1/(2−ηλ1))² exceeds the bias term as η → 2/β; Lemma 9's descent inequality (eq. 4) "
        "is violated on that cycle once η > 2β/(4+β²). Stability (no divergence) still holds.")]


FIGURE = Figure("dai_thm1", "quadratic divergence boundaries", draw, claims,
                notes="Λ = diag(2, 0.5) (β = 2, α = 0.5), w0 = (1, 1), 1,000 steps; a run diverges when "
                      "its loss exceeds 1e12 or is non-finite.")
