"""Ahn et al. 2023a Fig. 1: GD on the sparse-coding ReLU network, final bias and test accuracy vs η.

Claim: a sharp phase transition at η = 8π/d² (``theory.ahn_gd_threshold``): below it b stays ≈ 0 and
the network stays the linear classifier (test accuracy Φ(λ/√d) ≈ 58.4%); above it GD is unstable at
initialization (η > 2/λ_max), b becomes negative and the test accuracy rises (≈ 70–74%).

Each η is read at its own step 10/η (Ahn et al.'s iteration count) from one batched run of 10/η_min
steps. The GD stability estimate 2/λ_max(∇²L) at initialization is the ``lambda_max`` column at step 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save

BIAS_ZERO = 0.02  # "b ≈ 0": |b| ≤ 0.02
ACC_SLACK = 0.02  # "≈ 58%": within 2 points of Φ(λ/√d)
ACC_GAIN = 0.05  # "accuracy rises": ≥ 5 points above Φ(λ/√d)
THRESHOLD_TOL = 0.3  # measured transition within ±30% of 8π/d²


def at_own_step(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's row at step round(10/η) (Ahn et al.'s iteration count)."""
    target = (10 / df.lr).round().astype(int)
    return df[df.step == target]


def settings(df: pd.DataFrame) -> tuple[int, float]:
    return int(df["task.d"].iloc[0]), float(df["task.signal"].iloc[0])


def transition(bias: pd.Series) -> float | None:
    """The geometric midpoint of the two adjacent grid values of η (the index of ``bias``, sorted)
    between which the final bias first changes sign; None when it never does."""
    signs = np.sign(bias.to_numpy())
    change = np.flatnonzero(signs[1:] != signs[:-1])
    if len(change) == 0:
        return None
    i = change[0]
    return float(np.sqrt(bias.index[i] * bias.index[i + 1]))


def draw(df: pd.DataFrame, stem: Path) -> None:
    d, signal = settings(df)
    rows = at_own_step(df)
    per_lr = rows.groupby("lr")[["bias", "test_acc"]].agg(["mean", "min", "max"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, label in (
        (axes[0], "bias", "final bias b"),
        (axes[1], "test_acc", "final test accuracy (%)"),
    ):
        scale = 100 if col == "test_acc" else 1
        ax.plot(rows.lr, rows[col] * scale, "o", color="tab:blue", alpha=0.35, ms=4, label="each seed")
        ax.plot(per_lr.index, per_lr[(col, "mean")] * scale, "-", color="tab:blue", label="mean")
        ax.axvline(theory.ahn_gd_threshold(d), color="k", ls="--", lw=1, label=r"$8\pi/d^2$ (Ahn et al.)")
        ax.set(xlabel=r"learning rate $\eta$", ylabel=label)
    axes[0].axhline(0, color="0.6", lw=0.8)
    axes[1].axhline(
        100 * theory.linear_classifier_accuracy(signal, d),
        color="tab:red",
        ls=":",
        label=r"linear classifier $\Phi(\lambda/\sqrt{d})$",
    )
    peak = 2 / df[df.lr == df.lr.min()].groupby("seed").lambda_max.max()
    axes[0].set_title(
        f"GD stability 2/λ_max at the sharpest point (smallest η): {peak.min():.2e} … {peak.max():.2e}",
        fontsize=9,
    )
    axes[1].legend(fontsize=8)
    fig.suptitle(
        f"Ahn et al. Fig. 1 (our reconstruction): GD for 10/η iterations, d = {d}, "
        f"n = {int(df['task.n_train'].iloc[0])}, λ = {signal:g}"
    )
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    d, signal = settings(df)
    predicted = float(theory.ahn_gd_threshold(d))
    linear = theory.linear_classifier_accuracy(signal, d)
    rows = at_own_step(df)
    per_lr = rows.groupby("lr")[["bias", "test_acc"]].mean()
    init = 2 / df[df.step == 0].lambda_max
    smallest = df[df.lr == df.lr.min()]
    peak = 2 / smallest.groupby("seed").lambda_max.max()
    out = [
        Claim(
            "GD stability estimate 2/λ_max = 8π/d² (diagnostic)",
            f"{predicted:.3e}",
            f"at init {init.min():.2e} … {init.max():.2e}; at the sharpest point of the smallest-η run "
            f"{peak.min():.2e} … {peak.max():.2e} over {len(peak)} seeds",
            "±10% (sharpest point)",
            bool((abs(peak / predicted - 1) <= 0.1).all()),
            note="at init the offset (a+ − a−)·Σ|x_i|/2 is O(1) for some seeds and saturates ℓ'', "
            "so λ_max there "
            "is seed-dependent; it peaks once GD has balanced the offset, below d²/(4π) because the "
            "margins have grown by then",
        )
    ]
    below, above = per_lr[per_lr.index < predicted], per_lr[per_lr.index > predicted]
    ok_below = bool(
        (below.bias.abs() <= BIAS_ZERO).all() and (abs(below.test_acc - linear) <= ACC_SLACK).all()
    )
    out.append(
        Claim(
            "η < 8π/d²: b stays ≈ 0, test accuracy ≈ Φ(λ/√d)",
            f"|b| ≈ 0, acc ≈ {100 * linear:.1f}%",
            f"b ∈ [{below.bias.min():+.3f}, {below.bias.max():+.3f}], acc ∈ "
            f"[{100 * below.test_acc.min():.1f}, "
            f"{100 * below.test_acc.max():.1f}]% over {len(below)} η",
            f"|b| ≤ {BIAS_ZERO}, ±{100 * ACC_SLACK:g} points",
            ok_below,
            note=""
            if ok_below
            else "in our reconstruction gradient flow itself learns b < 0 within time ηT = 10 (the "
            "signal coordinate's "
            "gradient drives it), so small η already thresholds",
        )
    )
    ok_above = bool((above.bias < 0).all() and (above.test_acc >= linear + ACC_GAIN).all())
    out.append(
        Claim(
            "η > 8π/d²: b < 0 and test accuracy rises",
            f"b < 0, acc ≥ {100 * (linear + ACC_GAIN):.1f}%",
            f"b ∈ [{above.bias.min():+.3f}, {above.bias.max():+.3f}], acc ∈ "
            f"[{100 * above.test_acc.min():.1f}, "
            f"{100 * above.test_acc.max():.1f}]% over {len(above)} η",
            "all η above",
            ok_above,
            note=""
            if ok_above
            else "the edge-of-stability oscillation of a+ − a− does move b away from 0, but here "
            "toward b > 0: every unit "
            "stays on, the network becomes exactly linear and λ_max collapses far below 2/η",
        )
    )
    measured = transition(per_lr.bias)
    per_seed = {
        seed: transition(runs.set_index("lr").bias.sort_index()) for seed, runs in rows.groupby("seed")
    }
    seeds = ", ".join(f"seed {k}: {v:.2e}" if v else f"seed {k}: none" for k, v in per_seed.items())
    out.append(
        Claim(
            "measured GD threshold (where the final bias changes regime) = 8π/d²",
            f"{predicted:.3e}",
            f"mean over seeds: {measured:.2e} = {measured / predicted:.2f}·8π/d²; {seeds}"
            if measured
            else f"no sign change of the mean final bias; {seeds}",
            f"±{100 * THRESHOLD_TOL:g}%",
            bool(measured and abs(measured / predicted - 1) <= THRESHOLD_TOL),
            note="each seed has a sharp transition close to its own 2/λ_max peak (diagnostic row); "
            "its direction "
            "is reversed relative to Ahn et al. (rows above)",
        )
    )
    return out


FIGURE = Figure(
    "ahn_fig1",
    "sparse coding: GD phase transition in η",
    draw,
    claims,
    notes="Network f(x) = Σ_i [ReLU(a+·x_i + b) − ReLU(−a−·x_i + b)] with scalar a±, b (REFERENCE.md's "
    "reconstruction; scalar weights are the form whose init sharpness gives 2/λ_max = 8π/d²), mean "
    "logistic loss over n = 300, d = 200, λ = 3, 10,000 test samples (test_seed 1000), training set "
    "data_seed 0. Init a± = |N(0, 1/(2d))|, b = 0: with independent signs half the draws start in a "
    "degenerate state (both units on the same half-line, accuracy 50% forever). Each η runs in one "
    "batch of 10/η_min = 31,250 steps and is read at its own step 10/η; 2 seeds. Also tried outside "
    "the committed sweep: a symmetric init a− = a+ (no initial output offset, so no initial catapult) "
    "— then every η in [3.2e-4, 1.2e-3] learns b ≈ −0.77 and 73% by ηT = 10 (gradient flow alone "
    "learns the threshold in this reconstruction), with no transition at all.",
)
