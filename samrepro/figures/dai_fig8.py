"""Dai et al. Fig. 8 (App. B.1): as Fig. 5, from Damian et al.'s "full-batch checkpoint" (full-batch GD to
100% train accuracy). Claim: USAM still gets stuck while SAM keeps increasing its test accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samrepro.figures import Claim
from samrepro.figures.dai_fig5 import (
    CHECKPOINT,
    COVERED,
    GRID,
    MOVED,
    NOT_RUN,
    ON_MANIFOLD,
    accuracy_changes,
    checkpoint_claim,
    draw_accuracies,
    grid_claim,
    paper,
    sam_drifts,
    usam_threshold,
    with_quick_profile,
)


def draw(df: pd.DataFrame, stem: Path) -> None:
    draw_accuracies(
        df,
        stem,
        r"Dai et al. Fig. 8: ResNet18 from the full-batch checkpoint, "
        rf"$\eta$ = {df.lr.iloc[0]:g}, batch {df['task.batch_size'].iloc[0]:g}",
    )


CITE = "Dai Fig. 8 (App. B.1)"


def claims(df: pd.DataFrame) -> list[Claim]:
    if df.empty:
        return [
            Claim(c, p, "not run", "", None, NOT_RUN, **role)
            for c, p, role in (
                ("the full-batch checkpoint is a global minimum", "train acc 100 %", CHECKPOINT),
                ("USAM's ρ grid straddles its threshold ρ* = (2/η − λ)/λ²", "some ρ < ρ* and some ρ > ρ*", GRID),
                ("USAM (ρ < ρ*) gets stuck at the full-batch checkpoint", "test acc does not rise", paper(CITE)),
                ("SAM drifts along the minima for every ρ", "train acc stays ≈100%, test acc rises", paper(CITE)),
            )
        ]
    runs = accuracy_changes(df)
    usam = runs[runs.opt == "usam"]
    stable = usam[usam.rho < usam_threshold(df)[1]]
    stuck = stable.test_change < MOVED
    return [
        checkpoint_claim(df, "full-batch", None),
        grid_claim(df, usam),
        Claim(
            "USAM (ρ < ρ*) gets stuck at the full-batch checkpoint",
            "test acc does not rise",
            f"{int(stuck.sum())}/{len(stable)} USAM runs with ρ < ρ*; test change max "
            f"{stable.test_change.max():+.3f}",
            f"Δtest < {MOVED}",
            bool(len(stable)) and bool(stuck.all()),
            "" if len(stable) else "no USAM ρ below ρ*",
            **paper(CITE),
        ),
        sam_drifts(runs, CITE),
    ]


NOTES = (
    "The full-batch checkpoint is regenerated (stage=fullbatch_init: full-batch GD, lr 0.2 with ×0.1 at 1/2 and "
    "5/6 of the 4,000-step cap — our choice — to 100% train accuracy; the quick profile: on the first 10,000 "
    "images, and dai_fig8_quick trains on them). ρ grid and epochs as in dai_fig5; USAM above its measured "
    f"threshold ρ* leaves the minimum, so 'stuck' is judged below ρ*; SAM runs with ηρ²T < {COVERED:g} are not "
    f"judged; on the manifold = train acc ≥ {ON_MANIFOLD}."
)
FIGURE, FIGURES = with_quick_profile("dai_fig8", "ResNet18 on CIFAR-10 from the full-batch checkpoint", draw, claims,
                                     NOTES, "dai_fig8's claims on the first 10,000 training images, 100 epochs.")
