"""Dai et al. Fig. 8 (App. B.1): as Fig. 5, from Damian et al.'s "full-batch checkpoint" (full-batch GD to
100% train accuracy). Claim: USAM still gets stuck while SAM keeps increasing its test accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samrepro.figures import Claim, Figure
from samrepro.figures.dai_fig5 import (
    MOVED,
    NOT_RUN,
    ON_MANIFOLD,
    accuracy_changes,
    draw_accuracies,
    sam_drifts,
)


def draw(df: pd.DataFrame, stem: Path) -> None:
    draw_accuracies(
        df,
        stem,
        r"Dai et al. Fig. 8: ResNet18 from the full-batch checkpoint, "
        rf"$\eta$ = {df.lr.iloc[0]:g}, batch {df['task.batch_size'].iloc[0]:g}",
    )


def claims(df: pd.DataFrame) -> list[Claim]:
    if df.empty:
        return [
            Claim(
                "USAM gets stuck at the full-batch checkpoint",
                "test acc flat for every ρ",
                "not run",
                "",
                None,
                NOT_RUN,
            ),
            Claim(
                "SAM drifts along the minima for every ρ",
                "train acc stays ≈100%, test acc rises",
                "not run",
                "",
                None,
                NOT_RUN,
            ),
        ]
    runs = accuracy_changes(df)
    usam = runs[runs.opt == "usam"]
    stuck = usam.test_change < MOVED
    return [
        Claim(
            "USAM gets stuck at the full-batch checkpoint",
            "test acc does not rise, for every ρ",
            f"{int(stuck.sum())}/{len(usam)} USAM runs; test change max {usam.test_change.max():+.3f}",
            f"Δtest < {MOVED}",
            bool(stuck.all()),
        ),
        sam_drifts(runs),
    ]


FIGURE = Figure(
    "dai_fig8",
    "ResNet18 on CIFAR-10 from the full-batch checkpoint",
    draw,
    claims,
    gpu=True,
    notes="The full-batch checkpoint is regenerated (samrepro task=cifar10 stage=fullbatch_init: full-batch "
    "GD, lr 0.1 (our choice), to 100% train accuracy). ρ ∈ {0.01, 0.05, 0.1, 0.5} and 100 epochs as in "
    f"dai_fig5; on the manifold = train acc ≥ {ON_MANIFOLD}.",
)
