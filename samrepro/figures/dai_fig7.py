"""Dai et al. Fig. 7: SAM (solid), USAM (dashed) and GD (grey) on the sparse-coding task, ρ = 0.01,
several η; test accuracy and bias vs iteration (mean over seeds, min–max band).

Claims (Dai et al. §4): for every η, SAM learns a negative bias and a higher test accuracy than GD
(where GD is not already at the ceiling); USAM with ρ = 0.01 behaves like GD. Same runs as dai_fig6
for GD.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samrepro.figures import Claim, Figure
from samrepro.figures.sparse_coding import draw_runs, lr_label, sam_beats_gd, settings, summary_table, usam_like_gd


def draw(df: pd.DataFrame, stem: Path) -> None:
    d, _, c = settings(df)
    rho = df[df["opt"] != "gd"].rho.iloc[0]
    draw_runs(df, stem, f"Dai et al. Fig. 7: ρ = {rho:g}, on c·L (c = {c:.4g}); SAM solid, USAM dashed, GD "
              f"grey; mean over {df.seed.nunique()} seeds, band = min–max, dead seeds drawn alone", "lr",
              lambda lr: lr_label(lr, d, c))


CITE = "Dai Fig. 7 (§4)"


def claims(df: pd.DataFrame) -> list[Claim]:
    table = summary_table(df, "lr")
    gd = {lr: row for lr, row in table.loc["gd"].iterrows()}
    return [sam_beats_gd(table, "lr", gd, CITE), usam_like_gd(table, "lr", sorted(gd), gd, CITE)]


FIGURE = Figure(
    "dai_fig7",
    "sparse coding: SAM vs USAM vs GD over η (ρ = 0.01)",
    draw,
    claims,
    cite="Dai Fig. 7",
    notes="Settings of dai_fig6, whose GD runs these share (same folder); SAM and USAM with ρ = 0.01.",
)
