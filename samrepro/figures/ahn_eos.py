"""Edge of stability on the sparse-coding network (Ahn et al. 2023a, "learning threshold neurons via the edge
of stability"; Dai et al. §4: GD's useful η are "large to the point where GD shows very unstable behavior (à la
Edge-of-Stability (Cohen et al., 2021))"). Along GD paths with η above 8π/d² — where gradient flow's sharpness
peaks at 2/(8π/d²) (ahn_fig1's calibration) — λ_max of the loss Hessian (the task's exact 3×3 metric) is read
against 2/η: EoS caps it at 2/η. How long it stays there, up to Ahn's T = 10/η, is our probe.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.sparse_coding import NETWORK, settings

CITE = "Ahn et al. 2023a (edge of stability), as Dai §4 cite it"
BAND = 0.10  # "at 2/η": within 10% (ahn_fig1's SHARPNESS_TOL for the same Hessian)
TIME = 10  # Ahn's T = 10/η


def edge(df: pd.DataFrame) -> pd.DataFrame:
    """Per row: ``time`` = ηt and ``ratio`` = λ_max/(2/η) = ηλ_max/2, up to ηt = TIME."""
    df = df.assign(time=df.step * df.lr, ratio=df.lambda_max * df.lr / 2)
    return df[df.step <= (TIME / df.lr).round()]


def per_lr(rows: pd.DataFrame) -> pd.DataFrame:
    """Per η: the peak of ηλ_max/2 and its ηt, the first and last ηt within BAND of 1, the share of the
    logged rows between them that are within it, and ηλ_max/2 at ηt = TIME."""
    out = []
    for lr, run in rows.sort_values("step").groupby("lr"):
        near = run[(run.ratio - 1).abs() <= BAND]
        span = run[run.time.between(near.time.min(), near.time.max())]
        out.append({"lr": lr, "peak": run.ratio.max(), "peak_time": run.time[run.ratio.idxmax()],
                    "first": near.time.min(), "last": near.time.max(),
                    "held": ((span.ratio - 1).abs() <= BAND).mean(), "end": run.ratio.iloc[-1]})
    return pd.DataFrame(out)


def draw(df: pd.DataFrame, stem: Path) -> None:
    d, _, c = settings(df)
    threshold = float(theory.ahn_gd_threshold(d, c))
    rows = edge(df)
    fig, (ax, ax_b) = plt.subplots(1, 2, figsize=(12.5, 4.6), layout="constrained")
    for lr, run in rows.groupby("lr"):
        line, = ax.plot(run.time, run.ratio, label=f"η = {lr:.3g} ({lr / threshold:.1f}× 8π/d²)")
        ax_b.plot(run.time, run.bias, color=line.get_color())
    ax.axhspan(1 - BAND, 1 + BAND, color="0.9", label=f"2/η ± {100 * BAND:g}%")
    ax.axhline(1, color="k", ls="--", lw=1)
    for axis in (ax, ax_b):
        axis.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="ηt (linear below 1)", ylabel="λ_max · η/2", ylim=(0, 1.3),
           title="sharpness against 2/η along GD (gradient flow would peak at η/(8π/d²) ≥ 1.5)")
    ax.legend(fontsize=7, loc="upper right")
    ax_b.set(xlabel="ηt (linear below 1)", ylabel="bias b", title="b: the threshold neuron")
    fig.suptitle(f"Edge of stability on the sparse-coding network: GD above 8π/d², c = {c:g}, d = {d}, "
                 f"to ηt = {TIME} (λ_max of the exact 3×3 Hessian, every {int(df.log_every.iloc[0])} steps)",
                 fontsize=10)
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    d, _, c = settings(df)
    threshold = float(theory.ahn_gd_threshold(d, c))
    table = per_lr(edge(df))
    caps = ((table.peak - 1).abs() <= BAND).all() and (table.lr > threshold).all()
    holds = (table["last"] >= TIME * (1 - BAND)) & (table.held == 1)
    return [Claim(
        "above 8π/d² GD's sharpness rises to 2/η and stops there (edge of stability)",
        "max_t λ_max·η/2 = 1, where gradient flow's peak would be η/(8π/d²) > 1",
        "; ".join(f"η = {r.lr / threshold:.1f}×: peak {r.peak:.3f} at ηt = {r.peak_time:.2f}"
                  for r in table.itertuples()), f"±{100 * BAND:g}%", bool(caps), kind="paper", cite=CITE,
        source=f"ours: {100 * BAND:g}%, as ahn_fig1's 2/λ_max calibration of the same Hessian (logged every "
        f"{int(df.log_every.iloc[0])} steps)"),
        Claim("GD stays at the edge until T = 10/η", f"λ_max·η/2 within ±{100 * BAND:g}% of 1 from its arrival "
              f"to ηt = {TIME} (Cohen et al.'s EoS: the sharpness hovers at 2/η)",
              "; ".join(f"η = {r.lr / threshold:.1f}×: within the band for ηt ∈ [{r.first:.2f}, {r.last:.2f}], "
                        f"{r.end:.2f} at ηt = {TIME}" for r in table.itertuples()),
              f"±{100 * BAND:g}% to ηt ≥ {TIME * (1 - BAND):g}", bool(holds.all()), kind="extension",
              source="ours: how long the edge lasts, the band of the claim above",
              note="" if holds.all() else "the edge is a transient (ηt ≲ 2): as b keeps falling (fewer active "
              "units, the bias panel) λ_max drops below 2/η and stays below; the rest of the run is stable GD")]


FIGURE = Figure("ahn_eos", "sparse coding: GD at the edge of stability", draw, claims, cite=CITE,
                notes=f"{NETWORK} Here c = 1. GD with η = 1/N, N ∈ {{1060, 800, 400, 160}} (1.5, 2, 4, 10 × 8π/d²), "
                      "data seed 0, init seed 0, one batch of 10/η_min = 10,600 steps logged every 20; each η "
                      "read to its own ηt = 10.")
