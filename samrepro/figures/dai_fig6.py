"""Dai et al. Fig. 6: GD on the sparse-coding task (Ahn et al. 2023a) for several η; test accuracy
and bias vs iteration, mean over seeds with a min–max band.

Claim (Dai et al. §4, after Ahn et al.): GD with a larger η learns a more negative bias, hence a
higher test accuracy. Dai's (η, ρ) run on c·L with c = 8π/(0.05·d²) (``figures.sparse_coding``); these
are the GD runs of dai_fig7 (one folder, runs/dai_sparse_eta, so dai_fig7 does not run them again).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samrepro.figures import Claim, Figure
from samrepro.figures.sparse_coding import DAI_SCALE, draw_runs, gd_monotone, lr_label, settings, summary_table


def draw(df: pd.DataFrame, stem: Path) -> None:
    d, _, c = settings(df)
    draw_runs(df, stem, f"Dai et al. Fig. 6: GD, several η, on c·L (c = {c:.4g}); mean over "
              f"{df.seed.nunique()} seeds, band = min–max, dead seeds drawn alone", "lr", lambda lr: lr_label(lr, d, c))


def claims(df: pd.DataFrame) -> list[Claim]:
    return [gd_monotone(summary_table(df, "lr"), "Dai Fig. 6 (§4)")]


FIGURE = Figure(
    "dai_fig6",
    "sparse coding: GD for several η",
    draw,
    claims,
    cite="Dai Fig. 6",
    notes=f"Network, mean loss and dead-network definition as ahn_fig1. {DAI_SCALE} Dai's η ∈ "
    "{0.0125, 0.025, 0.05, 0.1, 0.2} (0.25–4× GD's threshold 0.05 on c·L), 20,000 iterations (Ahn time "
    "c·η·T from 3.1 to 50), 3 init seeds, data seed 0; the GD runs of dai_fig7.",
)
