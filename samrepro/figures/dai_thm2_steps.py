"""Dai et al. Thm 2's per-step statements on the scalar factorization ½(xy)² (App. D, Thm 11's setup:
2x0 > y0 > x0 ≫ 0, η = 1/(x0² + y0²)), judged at every logged step.

SAM: L(w_{t+1}) < L(w_t) while x_t, y_t ≥ 5ρ (Lemma 13); if |x_t| ≤ 5ρ ≤ y_t then |x_{t+1}| ≤ 5ρ and
y_{t+1} ≤ (1 − ½ηρ²)y_t (Lemma 14, and the same with x and y swapped). USAM with ρ ≥ 15η: |x_{t+1}| ≥ 2|x_t| and
|y_{t+1}| ≥ 2|y_t| for all t ≥ 1 (Thm 15). dai_thm2 judges where the runs end; this figure the steps.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, save
from samrepro.figures.columns import setting

RATE_TOP = 2.0  # the drift panel's upper limit (in units of ηρ²)


def pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Every logged step t of every run with its successor t + 1 (columns x1, y1, loss1), the radius 5ρ, and
    Lemma 14's small coordinate a and large b: (x, y) if |x_t| ≤ |y_t| else (y, x)."""
    df = df.sort_values(["run", "step"])
    nxt = df.groupby("run")[["step", "x", "y", "loss"]].shift(-1)
    p = df.assign(step1=nxt.step, x1=nxt.x, y1=nxt.y, loss1=nxt.loss).dropna(subset=["step1"])
    p = p[p.step1 == p.step + 1]
    swap = p.x.abs() > p.y.abs()
    return p.assign(radius=theory.sam_factorization_radius(p.rho), a=p.x.where(~swap, p.y), b=p.y.where(~swap, p.x),
                    a1=p.x1.where(~swap, p.y1), b1=p.y1.where(~swap, p.x1))


def lemma14(p: pd.DataFrame) -> pd.DataFrame:
    """SAM's steps inside Lemma 14's hypothesis |a_t| ≤ 5ρ ≤ |b_t|, with |a_{t+1}|/5ρ, the signed
    b_{t+1}/b_t, and the measured rate (1 − b_{t+1}/b_t)/(ηρ²) (Lemma 14 guarantees ½)."""
    s = p[(p["opt"] == "sam") & (p.a.abs() <= p.radius) & (p.b.abs() >= p.radius)]
    return s.assign(a_out=s.a1.abs() / s.radius, shrink=s.b1 / s.b, rate=(1 - s.b1 / s.b) / (s.lr * s.rho**2))


def eq9_max_rho(lr: float) -> float:
    """The largest ρ for which the last step of Dai's eq. (9), 6ηρ(4/(5η) + ρ² + 2ρ√(4/(5η))) ≤ 5ρ, holds:
    the root of 6ηρ² + 12ρ√(4η/5) = 1/5."""
    a, b = 6 * lr, 12 * np.sqrt(0.8 * lr)
    return (-b + np.sqrt(b**2 + 4 * a * 0.2)) / (2 * a)


def draw(df: pd.DataFrame, stem: Path) -> None:
    lr = setting(df, "lr")
    p = pairs(df)
    steps14 = lemma14(p)
    fig, (ax, ax_r, ax_u) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    sam = df[df["opt"] == "sam"]
    for i, (rho, run) in enumerate(sam.groupby("rho")):
        color = plt.cm.viridis(i / max(1, sam.rho.nunique() - 1))
        ax.plot(run.step, np.maximum(run.x.abs(), run.y.abs()), color=color, lw=1, label=f"ρ = {rho:g}")
        ax.axhline(theory.sam_factorization_radius(rho), color=color, ls=":", lw=0.8)
        s = steps14[steps14.rho == rho]
        off = s.rate > RATE_TOP
        note = f" ({off.sum()} off scale, up to {s.rate[off].max():.3g})" if off.any() else ""
        ax_r.plot(s.step[~off], s.rate[~off], ".", ms=2, color=color, label=f"ρ = {rho:g}{note}")
    ax.set(yscale="log", xlabel="step", ylabel="max(|x_t|, |y_t|)", title="SAM (dotted: 5ρ)")
    ax.legend(fontsize=7)
    ax_r.axhline(0.5, color="k", ls="--", lw=0.8, label="Lemma 14's guaranteed ½")
    ax_r.set(xlabel="step", ylabel="(1 − y_(t+1)/y_t)/(ηρ²)", ylim=(0, RATE_TOP),
             title="SAM's drift per step, where |x_t| ≤ 5ρ ≤ y_t")
    ax_r.legend(fontsize=7, markerscale=4)
    usam = df[df["opt"] == "usam"]
    for i, (rho, run) in enumerate(usam.groupby("rho")):
        color = plt.cm.plasma(i / max(1, usam.rho.nunique()))
        above = rho >= theory.usam_factorization_min_rho(lr) - 1e-12
        ax_u.plot(run.step, run.x.abs(), "o-", color=color, label=f"|x_t|, ρ = {rho:g}" + ("" if above else " < 15η"))
        ax_u.plot(run.step, run.y.abs(), "s--", color=color, mfc="none", label=f"|y_t|, ρ = {rho:g}")
    ax_u.set(yscale="log", xlabel="step", ylabel="|x_t|, |y_t|", xticks=np.arange(0, usam.step.max() + 1),
             title="USAM until float64 overflows (Thm 15: ×2 or more a step)")
    ax_u.legend(fontsize=7)
    x0, y0 = setting(df, "task.init")
    fig.suptitle(f"Dai et al. Lemmas 13, 14 and Thm 15: ½(xy)² from ({x0:g}, {y0:g}), η = 1/{1 / lr:.0f}, "
                 "every step logged")
    save(fig, stem)


def thm15_claim(p: pd.DataFrame, final: pd.DataFrame, label: str, **scope) -> Claim:
    """Thm 15 on the USAM runs of ``p`` (steps t ≥ 1)."""
    grow = np.minimum(p.x1.abs() / p.x.abs(), p.y1.abs() / p.y.abs())
    later = p.step >= 1
    return Claim(
        f"USAM doubles |x_t| and |y_t| every step ({label})", "|x_(t+1)| ≥ 2|x_t|, |y_(t+1)| ≥ 2|y_t| for t ≥ 1",
        f"min growth factor over t ≥ 1 = {grow[later].min():.3g} ({int(later.sum())} steps; at t = 0: "
        f"{grow[~later].min():.3g}); {int((final.status == 'diverged').sum())}/{len(final)} runs diverged, by step "
        f"{int(final.step.max()) + 1}", "exact", bool((grow[later] >= 2).all() and later.any()),
        kind="paper", cite="Dai Thm 2 (formal: Thm 15)", source="Thm 15's factor 2 (exact)", **scope)


def claims(df: pd.DataFrame) -> list[Claim]:
    lr = setting(df, "lr")
    p = pairs(df)
    sam = p[(p["opt"] == "sam") & (p.x >= p.radius) & (p.y >= p.radius)]
    ratio13 = sam.loss1 / sam.loss
    s14 = lemma14(p)
    bound = 1 - 0.5 * s14.lr * s14.rho**2
    rates = s14.groupby("rho").rate.median()
    out = [
        Claim("SAM's loss decreases while x_t, y_t ≥ 5ρ", "L(w_(t+1)) < L(w_t) at every such step",
              f"max L(w_(t+1))/L(w_t) = {ratio13.max():.3g} over {len(sam)} steps "
              f"({', '.join(f'{n} at ρ = {r:g}' for r, n in sam.groupby('rho').size().items())})",
              "exact", bool((ratio13 < 1).all() and len(sam)), kind="paper", cite="Dai Lemma 13 (Thm 12)",
              source="Lemma 13 (exact)"),
        Claim("SAM's drift: |x_(t+1)| ≤ 5ρ and y_(t+1) ≤ (1 − ½ηρ²)y_t while |x_t| ≤ 5ρ ≤ y_t",
              "both at every such step (x, y swapped alike)",
              f"{len(s14)} steps: max |x_(t+1)|/5ρ = {s14.a_out.max():.3f}, max (y_(t+1)/y_t)/(1 − ½ηρ²) = "
              f"{(s14.shrink / bound).max():.6f}; the measured rate (1 − y_(t+1)/y_t)/(ηρ²) has median "
              + ", ".join(f"{v:.3f} (ρ = {r:g})" for r, v in rates.items())
              + f", min {s14.rate.min():.3f}: about twice the printed ½",
              "exact", bool(len(s14) and (s14.a_out <= 1).all() and (s14.shrink <= bound).all()), kind="paper",
              cite="Dai Lemma 14 (Thm 12)", source="Lemma 14's constants (exact)",
              note=f"the proof's eq. (9) holds only for ρ ≤ {eq9_max_rho(lr):.3f} at η = 1/{1 / lr:.0f} (its "
                   "'η ≪ 1'); the conclusion holds beyond it here"),
    ]
    usam = p[p["opt"] == "usam"]
    final = df[df["opt"] == "usam"].groupby("run").tail(1)
    above = theory.usam_factorization_min_rho(lr) - 1e-12
    out.append(thm15_claim(usam[usam.rho >= above], final[final.rho >= above], "ρ ≥ 15η"))
    if (usam.rho < above).any():
        out.append(thm15_claim(usam[usam.rho < above], final[final.rho < above], "ρ < 15η", in_hypotheses=False,
                               note="ρ < 15η: Thm 15 says nothing here (shown, not scored)"))
    return out


FIGURE = Figure("dai_thm2_steps", "½(xy)²: SAM's and USAM's steps against Lemmas 13, 14 and Thm 15", draw, claims,
                cite="Dai Lemma 13, 14, Thm 15",
                notes="dai_thm2's setting, (x0, y0) = (5, 7), η = 1/74; SAM and USAM at ρ ∈ {0.1, 0.203, 0.5, 1} "
                      "(15η = 0.2027), 1,000 steps, every step logged; SAM's ε = 1e-100 (eq. 1's exact "
                      "normalization); USAM runs until its loss leaves float64 (loss_ceiling 1e300): 3–4 steps.")
