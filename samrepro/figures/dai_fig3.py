"""Dai et al. Fig. 3 (§2.3): early-stage training loss of GD, SAM and USAM with several ρ at η = 0.025,
for a CNN with tanh and an FCN with ReLU on the first 5,000 CIFAR-10 training images (full batch).

Claim: as for the quadratic (Thm 1) and the scalar factorization (Thm 2), SAM's stability is not
sensitive to ρ while USAM diverges easily. GD is the ρ = 0 run (SAM and USAM with ρ = 0 are GD).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd

from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.dai_fig5 import usam_threshold

MODELS = {"cnn_tanh": "CNN-tanh", "fcn_relu": "FCN-ReLU"}
CAP = 1e3  # losses are drawn up to CAP × the initial loss


def unstable(final: pd.DataFrame, first: pd.DataFrame) -> pd.Series:
    """Per run (indexed by run): diverged, or its final training loss above its initial one."""
    start = first.set_index("run").train_loss
    end = final.set_index("run")
    return (end.status == "diverged") | (end.train_loss > start.reindex(end.index))


def draw(df: pd.DataFrame, stem: Path) -> None:
    rhos = sorted(r for r in df.rho.unique() if r > 0)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(MODELS), figsize=(12, 4.2), squeeze=False)
    for ax, (model, label) in zip(axes[0], MODELS.items(), strict=True):
        runs = df[df["task.model"] == model]
        gd = runs[(runs.rho == 0) & (runs["opt"] == "sam")]
        cap = CAP * runs[runs.step == 0].train_loss.max()  # diverging runs are drawn up to the cap
        ax.plot(gd.step, gd.train_loss, color="k", lw=1.5, label="GD")
        for (opt, rho), run in runs[runs.rho > 0].groupby(["opt", "rho"]):
            color = cmap(rhos.index(rho) / max(1, len(rhos) - 1))
            ax.plot(
                run.step,
                run.train_loss.clip(upper=cap),
                color=color,
                ls="-" if opt == "sam" else "--",
                label=f"{opt.upper()} ρ={rho:g}",
            )
            if run.status.iloc[0] == "diverged":
                ax.plot(run.step.iloc[-1], min(run.train_loss.iloc[-1], cap), "x", color=color, ms=8)
        ax.set(yscale="log", xlabel="step (full batch)", ylabel="training loss", title=label)
        low, high = ax.get_ylim()
        if high / low < 100:  # within two decades: label 1, 2, 5 × 10^k so the axis has labels
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(
        r"Dai et al. Fig. 3: early training, $\eta$ = "
        f"{df.lr.iloc[0]:g} — SAM stable for every ρ, USAM diverges (× = diverged)"
    )
    save(fig, stem)


SAM_STABLE = dict(kind="paper", cite="Dai Fig. 3 (§2)", source="exact: the figure shows every SAM run stable")
GRID = dict(kind="calibration", source="exact: our ρ grid (not given in the paper) must straddle ρ*")
USAM_UNSTABLE = dict(kind="paper", cite="Dai Fig. 3 (§2)", source="ours: Dai do not quantify 'easily'")


def claims(df: pd.DataFrame) -> list[Claim]:
    # imported here, not at the top: drawing or listing a CPU figure never imports torchvision
    from samrepro.tasks.cifar10 import initial_norm

    out = []
    for model, label in MODELS.items():
        runs = df[df["task.model"] == model] if not df.empty else df
        if runs.empty:
            out += [
                Claim(
                    f"SAM stable for every ρ ({label})",
                    "no SAM run diverges; loss decreases",
                    "not run",
                    "exact",
                    None,
                    "needs a GPU and CIFAR-10: make figs-gpu",
                    **SAM_STABLE,
                ),
                Claim(
                    f"USAM's ρ grid straddles its threshold ρ* = (2/η − λ)/λ² ({label})",
                    "some ρ < ρ* and some ρ > ρ*",
                    "not run",
                    "exact",
                    None,
                    "needs a GPU and CIFAR-10: make figs-gpu",
                    **GRID,
                ),
                Claim(
                    f"USAM diverges easily ({label})",
                    "USAM unstable at a ρ where SAM is stable",
                    "not run",
                    "exact",
                    None,
                    "needs a GPU and CIFAR-10: make figs-gpu",
                    **USAM_UNSTABLE,
                ),
            ]
            continue
        final, first = final_rows(runs), runs.loc[runs.groupby("run")["step"].idxmin()]
        bad = unstable(final, first)
        final = final.set_index("run").assign(unstable=bad)
        sam = final[(final["opt"] == "sam") & (final.rho > 0)]
        usam = final[(final["opt"] == "usam") & (final.rho > 0)]
        sam_bad = sorted(sam.rho[sam.unstable])
        out.append(
            Claim(
                f"SAM stable for every ρ ({label})",
                "no SAM run diverges; final loss < initial loss",
                f"{len(sam_bad)}/{len(sam)} SAM runs unstable" + (f" (ρ = {sam_bad})" if sam_bad else ""),
                "exact",
                not sam_bad,
                **SAM_STABLE,
            )
        )
        lam, rho_star = usam_threshold(runs)
        width = runs["task.width"].iloc[0] if "task.width" in runs else None
        w0 = initial_norm(model, None if pd.isna(width) else int(width), int(runs.seed.iloc[0]))
        rhos = sorted(usam.rho)
        out.append(
            Claim(
                f"USAM's ρ grid straddles its threshold ρ* = (2/η − λ)/λ² ({label})",
                "some ρ < ρ* and some ρ > ρ*",
                f"λ_max at init = {lam:.4g} (2/η = {2 / runs.lr.iloc[0]:g}), ρ* = {rho_star:.3g}; "
                f"ρ/‖w₀‖ ∈ [{rhos[0] / w0:.2g}, {rhos[-1] / w0:.2g}] (‖w₀‖ = {w0:.3g})",
                "exact",
                bool(rhos[0] < rho_star < rhos[-1]),
                "" if rhos[0] < rho_star < rhos[-1] else "rerun with a ρ grid around ρ*",
                **GRID,
            )
        )
        usam_bad = sorted(usam.rho[usam.unstable])
        contrast = [r for r in usam_bad if r not in sam_bad]
        out.append(
            Claim(
                f"USAM diverges easily ({label})",
                "USAM unstable at a ρ where SAM is stable",
                f"USAM unstable at ρ = {usam_bad or 'none'} of {sorted(usam.rho)}",
                "at least one ρ",
                bool(contrast),
                **USAM_UNSTABLE,
            )
        )
    return out


FIGURE = Figure(
    "dai_fig3",
    "CIFAR-10 early training: CNN-tanh and FCN-ReLU, GD/SAM/USAM",
    draw,
    claims,
    gpu=True,
    cite="Dai Fig. 3",
    notes="Cohen et al.'s setup, which Dai et al. build on: first 5,000 training images, per-pixel "
    "standardized, squared loss ½‖f(x) − e_y‖² averaged over examples, full batch, η = 0.025, "
    "300 steps. ρ ∈ {0.01, …, 5} is our choice (the paper does not list its ρ values), a log grid that straddles "
    "USAM's threshold ρ* = (2/η − λ)/λ² for λ_max at the initialization (measured on all 5,000 images) between "
    "≈ 4 and ≈ 50; ρ* and ρ/‖w₀‖ are reported. "
    "A run counts as unstable when it diverges or its final loss exceeds its initial loss.",
)
