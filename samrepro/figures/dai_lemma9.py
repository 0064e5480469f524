"""Dai et al. Lemma 9 (eq. 4), the SAM descent lemma, checked at every step of SAM runs on ½wᵀΛw:

    L(w_{t+1}) ≤ L(w_t) − ½η(2 − ηβ)‖∇L(w_t)‖² + η²β³ρ²/2,   stated for convex β-smooth L, η < 2/β.

The proof drops −(η − η²β)⟨∇L(w_{t+½}), ∇L(w_t)⟩ ≤ −(η − η²β)‖∇L(w_t)‖², true only for η ≤ 1/β. On the top
eigendirection e1 of a quadratic, L(w_{t+1}) − eq. (4) = η(ηβ − 1)·βρ‖∇L(w_t)‖ exactly: eq. (4) fails at
every step with w ∉ e1^⊥ once η > 1/β; ``theory.sam_descent_excess`` is that missing term (our correction).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.columns import grid_values, quadratic_iterates, setting

CITE = "Dai Lemma 9 (eq. 4)"
ROUNDING = 1e-9  # a violation: L(w_{t+1}) above the bound by more than this × (L(w_t) + η²β³ρ²/2)


def steps(df: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """One row per SAM step t → t+1 of every run (consecutive logged rows), with eq. (4)'s right side
    ``bound``, the corrected one ``corrected`` (+ ``theory.sam_descent_excess``), ``bias`` = η²β³ρ²/2,
    ``next_loss`` = L(w_{t+1}), and ``violated`` (eq. 4, beyond rounding); β = max(task.eigenvalues)."""
    lam = np.asarray(setting(df, "task.eigenvalues"), dtype=float)
    beta = float(lam.max())
    df = df.sort_values(["run", "step"])
    grad_norm = np.linalg.norm(quadratic_iterates(df) * lam, axis=1)
    df = df.assign(grad_norm=grad_norm, next_loss=df.groupby("run").loss.shift(-1),
                   next_step=df.groupby("run").step.shift(-1))
    df = df[df.next_step == df.step + 1]
    bound = theory.sam_descent_bound(df.loss, df.grad_norm, df.lr, df.rho, beta)
    corrected = bound + theory.sam_descent_excess(df.grad_norm, df.lr, df.rho, beta)
    bias = df.lr**2 * beta**3 * df.rho**2 / 2
    slack = ROUNDING * (df.loss + bias)
    return df.assign(bound=bound, bias=bias, corrected=corrected, violated=df.next_loss > bound + slack,
                     corrected_violated=df.next_loss > corrected + slack), beta


def per_run(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (η, ρ): steps, violations of eq. (4) and of the corrected bound, and the largest excess over
    each, in units of eq. (4)'s bias term η²β³ρ²/2."""
    rows = rows.assign(excess=(rows.next_loss - rows.bound) / rows.bias,
                       corrected_excess=(rows.next_loss - rows.corrected) / rows.bias)
    return rows.groupby(["lr", "rho"]).agg(
        steps=("step", "size"), violations=("violated", "sum"), corrected_violations=("corrected_violated", "sum"),
        excess=("excess", "max"), corrected_excess=("corrected_excess", "max")).reset_index()


def draw(df: pd.DataFrame, stem: Path) -> None:
    rows, beta = steps(df)
    runs = per_run(rows)
    fig, (ax_n, ax_x, ax_t) = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
    for (rho, group), marker, color in zip(runs.groupby("rho"), "os", ("tab:green", "tab:purple"), strict=True):
        for ax, printed, corrected in ((ax_n, group.violations / group.steps, group.corrected_violations / group.steps),
                                       (ax_x, group.excess, group.corrected_excess)):
            ax.plot(group.lr, printed, marker + "-", color=color, label=f"eq. (4), ρ = {rho:g}")
            ax.plot(group.lr, corrected, marker + ":", color=color, mfc="none", ms=9, label=f"corrected, ρ = {rho:g}")
    for ax in (ax_n, ax_x):
        ax.axvline(1 / beta, color="tab:red", ls="--", lw=1, label="η = 1/β (the proof's limit)")
        ax.set(xlabel="η", xlim=(0, 2 / beta))
    ax_n.set(ylabel="fraction of steps violating", title="steps where the bound fails")
    ax_x.axhline(0, color="k", lw=0.8)
    ax_x.set_yscale("symlog", linthresh=0.1)
    ax_x.set(ylabel="max_t (L(w_{t+1}) − bound) / (η²β³ρ²/2)",
             title="largest excess over the bound (≤ 0: holds)")
    ax_n.legend(fontsize=7)
    lr = float(df.lr[df.lr > 1 / beta].min())
    rho = float(df.rho.max())
    trace = rows[(rows.lr == lr) & (rows.rho == rho)]
    ax_t.plot(trace.step + 1, trace.next_loss, "k-", lw=1.5, label="L(w_{t+1}) (SAM)")
    ax_t.plot(trace.step + 1, trace.bound, "tab:red", ls="--", label="eq. (4)")
    ax_t.plot(trace.step + 1, trace.corrected, "tab:blue", ls=":", lw=2, label="eq. (4) + η(ηβ−1)βρ‖∇L(w_t)‖")
    ax_t.set(yscale="log", xscale="log", xlabel="step t + 1", ylabel="loss",
             title=f"one run above 1/β: η = {lr:g}, ρ = {rho:g}")
    ax_t.legend(fontsize=7)
    lam = setting(df, "task.eigenvalues")
    fig.suptitle(f"Dai et al. Lemma 9 at every SAM step on ½wᵀΛw, Λ = diag{tuple(lam)}, w0 = "
                 f"{tuple(setting(df, 'task.init'))}, {setting(df, 'steps')} steps", fontsize=10)
    save(fig, stem)


def claims(df: pd.DataFrame) -> list[Claim]:
    rows, beta = steps(df)
    runs = per_run(rows)
    proven = runs.lr <= 1 / beta
    bad = runs[runs.violations > 0]

    def count(part: pd.DataFrame, column: str) -> str:
        return f"{int(part[column].sum())}/{int(part.steps.sum())} steps violate ({len(part)} runs)"

    return [Claim(
        "SAM's one-step descent (eq. 4) at every step, η < 2/β", "L(w_{t+1}) ≤ L(w_t) − ½η(2−ηβ)‖∇L(w_t)‖² + "
        "η²β³ρ²/2 at every step", count(runs, "violations") + (
            f"; violated for η ∈ {grid_values(bad.lr)} only (1/β = {1 / beta:g}), per η: "
            + ", ".join(f"{lr:g}: {int(n)}/{int(k)}" for lr, (n, k) in
                        bad.groupby("lr")[["violations", "steps"]].sum().iterrows())
            + f"; by up to {runs.excess.max():.3g}× the bias term" if len(bad) else ""),
        f"exact (rounding: {ROUNDING:g} × (L(w_t) + η²β³ρ²/2))", len(bad) == 0, kind="paper", cite=CITE,
        source="exact: an inequality with its constants",
        note="" if bad.empty else "the proof bounds −(η−η²β)⟨∇L(w_{t+½}),∇L(w_t)⟩ by −(η−η²β)‖∇L(w_t)‖², "
        "which needs η ≤ 1/β; above it the term is positive and on e1 adds exactly η(ηβ−1)βρ‖∇L(w_t)‖"),
        Claim("eq. (4) at every step where its proof holds (η ≤ 1/β)", "no violation for η ≤ 1/β",
              count(runs[proven], "violations") + f"; largest excess {runs[proven].excess.max():.3g}× the "
              "bias term", "exact", bool((runs[proven].violations == 0).all()), kind="extension",
              source="exact: eq. (4) on the range of η its proof covers"),
        Claim("eq. (4) + η·max(0, ηβ−1)·βρ‖∇L(w_t)‖ at every step, η < 2/β",
              "no violation; equality on e1", count(runs, "corrected_violations")
              + f"; largest excess {runs.corrected_excess.max():.3g}× the bias term (0: the bound is attained)",
              "exact", bool((runs.corrected_violations == 0).all()), kind="extension",
              source="exact: our corrected inequality (⟨∇L(w_{t+½}) − ∇L(w_t), ∇L(w_t)⟩ ≤ βρ‖∇L(w_t)‖)")]


FIGURE = Figure("dai_lemma9", "SAM's descent lemma step by step", draw, claims, cite=CITE,
                notes="Λ = diag(2, 0.5) (β = 2), w0 = (1, 1), SAM with η ∈ {0.1, …, 0.95} (1/β = 0.5, 2/β = 1), "
                      "ρ ∈ {0.1, 0.5}, 200 steps, every step logged; ‖∇L(w_t)‖ = ‖Λw_t‖ from the logged w_t.")
