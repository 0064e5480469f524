"""Dai et al. Thm 1 (with Thm 10) on the quadratic ½wᵀΛw: where GD, SAM and USAM diverge.

GD diverges iff η > 2/λ1; USAM already once η(λ1 + ρλ1²) > 2; SAM with η < 2/β never diverges, for
any ρ, and ends within the bias of eq. (3): L ≤ ηβ³ρ²/(2α(2 − ηβ)).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save


def spectrum(df: pd.DataFrame) -> tuple[float, float]:
    """(λ1, λd) of the run's Λ."""
    eigenvalues = [float(v) for v in str(df["task.eigenvalues"].iloc[0]).strip("[]").split(",")]
    return max(eigenvalues), min(eigenvalues)


def measured_boundary(final: pd.DataFrame) -> pd.Series:
    """Per ρ: the smallest η on the grid at which the run diverged (NaN when none did)."""
    diverged = final[final.status == "diverged"]
    return diverged.groupby("rho").lr.min().reindex(sorted(final.rho.unique()))


def draw(df: pd.DataFrame, stem: Path) -> None:
    final = final_rows(df)
    lam1, _ = spectrum(df)
    lrs, rhos = np.sort(final.lr.unique()), np.sort(final.rho.unique())
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, opt in zip(axes, ("gd", "sam", "usam")):
        runs = final[final["opt.name"] == opt].set_index(["rho", "lr"])
        loss = runs.loss.where(runs.status != "diverged").unstack("lr").reindex(index=rhos, columns=lrs)
        diverged = (runs.status == "diverged").unstack("lr").reindex(index=rhos, columns=lrs)
        image = ax.pcolormesh(lrs, rhos, np.log10(loss.to_numpy(dtype=float) + 1e-300), cmap="viridis",
                              vmin=-12, vmax=2, shading="nearest")
        ax.pcolormesh(lrs, rhos, np.where(diverged, 1.0, np.nan), cmap="Reds", vmin=0, vmax=1.5,
                      shading="nearest")
        r = np.linspace(rhos.min(), rhos.max(), 200)
        ax.axvline(theory.gd_max_lr(lam1), color="w", ls="--", lw=1.2, label="η = 2/λ1 (GD, SAM)")
        ax.plot(theory.usam_max_lr(lam1, r), r, color="tab:orange", lw=1.5, label="η(λ1+ρλ1²) = 2 (USAM)")
        ax.set(xlabel="η", title=f"{opt.upper()}: final log10 L (red: diverged)", xlim=(lrs.min(), lrs.max()))
    axes[0].set_ylabel("ρ")
    axes[0].legend(fontsize=8, loc="upper right")
    fig.colorbar(image, ax=axes, label="log10 final loss", shrink=0.9)
    fig.suptitle(f"Dai et al. Thm 1 on ½wᵀΛw, Λ = diag{tuple(spectrum(df))}, {int(df.steps.iloc[0]):,} steps")
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    final = final_rows(df)
    lam1, lamd = spectrum(df)
    step = np.diff(np.sort(final.lr.unique())).max()
    out = []
    usam = final[final["opt.name"] == "usam"]
    boundary = measured_boundary(usam)
    predicted = theory.usam_max_lr(lam1, boundary.index.to_numpy())
    err = np.abs(boundary.to_numpy() - predicted)
    out.append(Claim(
        "USAM diverges once η(λ1 + ρλ1²) > 2", "first diverging η = 2/(λ1+ρλ1²) for each ρ",
        f"max |measured − predicted| = {np.nanmax(err):.3f} over {len(boundary)} values of ρ "
        f"(ρ = 0: {boundary.iloc[0]:.2f} vs {predicted[0]:.2f}; ρ = {boundary.index[-1]:g}: "
        f"{boundary.iloc[-1]:.2f} vs {predicted[-1]:.3f})",
        f"one grid step of η ({step:.3f})", bool(np.all(err <= step + 1e-9))))
    gd = final[final["opt.name"] == "gd"]
    gd_boundary = measured_boundary(gd).iloc[0]
    out.append(Claim("GD diverges iff η > 2/λ1", f"first diverging η = {theory.gd_max_lr(lam1):.3f}",
                     f"{gd_boundary:.3f}", f"one grid step ({step:.3f})",
                     bool(abs(gd_boundary - theory.gd_max_lr(lam1)) <= step + 1e-9)))
    sam = final[final["opt.name"] == "sam"]
    stable = sam[sam.lr < theory.gd_max_lr(lam1)]
    loss0 = 0.5 * (lam1 + lamd)  # L(w0) with w0 = (1, 1), Λ = diag(λ1, λd)
    bound = pd.Series(theory.sam_loss_bound(stable.lr, stable.rho, lamd, lam1, stable.steps_done, loss0),
                      index=stable.index)
    n_div = int((stable.status == "diverged").sum())
    within = (stable.status != "diverged") & (stable.loss <= bound + 1e-12)
    out.append(Claim("SAM with η < 2/β never diverges, for every ρ", "0 diverged runs",
                     f"{n_div} of {len(stable)} diverged", "exact", n_div == 0))
    worst = stable.loss / bound
    failing = stable[~within]
    out.append(Claim(
        "SAM stays within eq. (3)", "L(w_T) ≤ (1−αη(2−ηβ))^T L(w0) + ηβ³ρ²/(2α(2−ηβ))",
        f"{int(within.sum())}/{len(stable)} runs inside; max L/bound = {worst.max():.3g} "
        f"at η = {stable.lr[worst.idxmax()]:g}", "exact", bool(within.all()),
        note="" if within.all() else
        f"fails for η ≥ {failing.lr.min():g}: SAM settles in the 2-cycle w = ±ηρλ1/(2−ηλ1)·e1, whose loss "
        "½λ1(ηρλ1/(2−ηλ1))² exceeds the bias term as η → 2/β; Lemma 9's descent inequality (eq. 4) "
        "is violated on that cycle once η > 2β/(4+β²). Divergence-free (claim above) still holds."))
    return out


FIGURE = Figure("dai_thm1", "quadratic divergence boundaries", draw, claims,
                notes="Λ = diag(2, 0.5) (β = 2, α = 0.5), w0 = (1, 1), 1,000 steps; a run diverges when "
                      "its loss exceeds 1e12 or is non-finite.")
