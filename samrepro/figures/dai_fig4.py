"""Dai et al. Fig. 4: GD, SAM and USAM on ℓ(xy), η = 0.4, ρ = 0.1, from (2, √40), with Table 1's limits.

GD stops at y∞² ≈ 2/η (Thm 3: within [2/η − O(η), 2/η]); USAM stops just below ỹ² of eq. (7) (Thm 5:
y∞² ≳ (1 − η² − ρ²)ỹ²); SAM keeps drifting along the y-axis to the origin (Thm 4).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save
from samrepro.figures.columns import setting
from samrepro.tasks.single_neuron import LOSSES

COLORS = {"gd": "tab:gray", "sam": "tab:blue", "usam": "tab:orange"}
GD_SLACK = 3.0  # "O(η)" of Thm 3, checked as 0 ≤ 2/η − y∞² ≤ 3η
USAM_SLACK = 0.05  # "≳" of Thm 5, checked as y∞² ≥ 0.95·(1 − η² − ρ²)ỹ²
SAM_FRACTION = 0.01  # "y∞² ≈ 0", checked as y∞² ≤ 1% of GD's 2/η
SETTLED = 0.01  # GD/USAM have reached their limit once y² stays within 1% of its final value


def limit_claims(final: pd.DataFrame, label: str, cite: str = "Dai Table 1", in_hypotheses: bool = True,
                 note: str = "") -> list[Claim]:
    """Table 1's three limits (Thm 3, 4, 5), checked on the final rows of GD, SAM and USAM runs, cited
    as ``cite``; ``in_hypotheses=False``: the runs lie outside the theorems' hypotheses (shown, not
    scored, with ``note``)."""
    scope = dict(in_hypotheses=in_hypotheses, note=note, kind="paper")
    claims = []
    y2 = final.y**2
    gd = final["opt"] == "gd"
    gap = (theory.gd_limit_y2(final.lr) - y2)[gd] / final.lr[gd]
    claims.append(Claim(
        f"GD: y∞² ≈ 2/η ({label})", "0 ≤ 2/η − y∞² = O(η)",
        f"(2/η − y∞²)/η ∈ [{gap.min():.2f}, {gap.max():.2f}] over {gd.sum()} runs",
        f"0 ≤ (2/η − y∞²)/η ≤ {GD_SLACK:g}", bool(((gap >= 0) & (gap <= GD_SLACK)).all()),
        cite=f"{cite}, Thm 3", source=f"Thm 3's [2/η − O(η), 2/η]; the constant {GD_SLACK:g} of O(η) is ours",
        **scope))
    sam = final["opt"] == "sam"
    ratio = (y2 / theory.gd_limit_y2(final.lr))[sam]
    claims.append(Claim(
        f"SAM: y∞² ≈ 0 ({label})", "y∞² ≈ 0 (drifts to the origin)",
        f"max y∞²/(2/η) = {ratio.max():.2e} over {sam.sum()} runs",
        f"y∞² ≤ {SAM_FRACTION:g}·2/η", bool((ratio <= SAM_FRACTION).all()), cite=f"{cite}, Thm 4",
        source=f"ours: Table 1's 'y∞² ≈ 0' read as ≤ {SAM_FRACTION:.0%} of GD's 2/η", **scope))
    usam = final[final["opt"] == "usam"]
    upper = theory.usam_limit_y2(usam.lr, usam.rho)
    lower = theory.usam_limit_y2_lower(usam.lr, usam.rho)
    u2 = usam.y**2
    ok = (u2 <= upper) & (u2 >= (1 - USAM_SLACK) * lower)
    claims.append(Claim(
        f"USAM: (1+ρy∞²)y∞² ≈ 2/η ({label})", "(1−η²−ρ²)ỹ² ≲ y∞² < ỹ², ỹ² of eq. (7)",
        f"y∞²/ỹ² ∈ [{(u2 / upper).min():.3f}, {(u2 / upper).max():.3f}], "
        f"{int(ok.sum())}/{len(usam)} runs inside",
        f"y∞² ≤ ỹ² and ≥ {1 - USAM_SLACK:g}·(1−η²−ρ²)ỹ²", bool(ok.all()), cite=f"{cite}, Thm 5 (eq. 7)",
        source=f"Thm 5's bound (1−η²−ρ²)ỹ²; {USAM_SLACK:.0%} for its '≳' is ours", **scope))
    return claims


def draw(df: pd.DataFrame, stem: Path) -> None:
    lr, rho = setting(df, "lr"), setting(df, "rho")
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    xs, ys = np.meshgrid(np.linspace(-2.5, 2.5, 300), np.linspace(-0.3, 7, 300))
    ell = LOSSES[setting(df, "task.loss")][0]
    import torch

    z = ell(torch.from_numpy(xs * ys)).numpy()
    ax.contour(xs, ys, z, levels=np.geomspace(z.min() + 1e-3, z.max(), 14), colors="0.85", linewidths=0.7)
    for opt, run in df.groupby("opt"):
        ax.plot(run.x, run.y, "-o", ms=1.5, lw=0.8, color=COLORS[opt], label=opt.upper())
        ax_t.plot(run.step, run.y**2, color=COLORS[opt], label=f"{opt.upper()} $y_t^2$")
    for a in (ax, ax_t):
        a.axhline(np.sqrt(theory.gd_limit_y2(lr)) if a is ax else theory.gd_limit_y2(lr), ls="--",
                  color="k", lw=0.8, label=r"$y^2 = 2/\eta$ (GD)")
        y2u = float(theory.usam_limit_y2(lr, rho))
        a.axhline(np.sqrt(y2u) if a is ax else y2u, ls=":", color="tab:red", lw=1,
                  label=r"$y^2=\tilde y^2_{\rm USAM}$ (eq. 7)")
    x0, y0 = setting(df, "task.init")
    ax.plot([x0], [y0], "ko", ms=5)
    ax.set(xlabel="x", ylabel="y", title=rf"trajectories, $\eta$={lr:g}, $\rho$={rho:g}")
    ax.legend(fontsize=8, loc="upper left")
    ax_t.set(xscale="log", yscale="log", xlabel="step", ylabel=r"$y_t^2$", title="drift along the minima")
    ax_t.legend(fontsize=8)
    fig.suptitle(r"Dai et al. Fig. 4: $\ell(xy)$ — GD stops at $2/\eta$, USAM below $\tilde y^2$, SAM drifts to 0")
    save(fig, stem)


def settled_step(run: pd.DataFrame) -> int:
    """The first step from which y² stays at its limit: within SETTLED of its final value (GD, USAM), or
    below SAM_FRACTION·2/η (SAM, which keeps drifting toward 0)."""
    run = run.sort_values("step")
    y2 = run.y**2
    if run["opt"].iloc[0] == "sam":
        ok = y2 <= SAM_FRACTION * theory.gd_limit_y2(run.lr)
    else:
        ok = (y2 / y2.iloc[-1] - 1).abs() <= SETTLED
    outside = run.step[~ok]
    return int(outside.max()) + 1 if len(outside) else int(run.step.iloc[0])


def claims(df: pd.DataFrame) -> list[Claim]:
    out = limit_claims(final_rows(df), f"η={setting(df, 'lr'):g}, ρ={setting(df, 'rho'):g}", "Dai Fig. 4 / Table 1")
    for claim, opt in zip(out, ("gd", "sam", "usam"), strict=True):
        claim.measured += f"; there from step {settled_step(df[df['opt'] == opt])} on"
    return out


FIGURE = Figure("dai_fig4", "ℓ(xy) trajectories of GD, SAM, USAM", draw, claims, cite="Dai Fig. 4",
                notes="ℓ is the symmetrized logistic loss of App. E; 2,000 steps (each claim gives the step "
                      "from which its method stays at its limit).")
