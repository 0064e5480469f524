"""What the sparse-coding figures share (ahn_fig1, dai_fig6, dai_fig7, dai_fig9): the calibration
text, dead/diverged outcomes, mean ± band curves, and Dai et al.'s claims (§4, App. B.2).

Outcomes: a run ``diverged`` (summary status: a non-finite loss or one above ``loss_ceiling``) stops
early; a run is ``dead`` when its last logged ``dead_frac`` exceeds ``task.dead_fraction`` (every
unit off on most test points, f = 0 there; ``samrepro.tasks.sparse_coding.is_dead``) — a result of
the run, not a failure of it. Curves end where a diverged run stopped (red ×); a dead run's end is a
black ○.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, final_rows, save
from samrepro.tasks.sparse_coding import is_dead

ACC_MARGIN = 0.02  # "beats" / "within": 2 points of test accuracy
COLORS = {"gd": "0.55", "sam": "tab:blue", "usam": "tab:orange"}
STYLES = {"gd": "-", "sam": "-", "usam": "--"}
NETWORK = (
    "Network (our reading of Ahn et al. eq. 2): f(x) = Σ_i [a₊·ReLU(x_i + b) + "
    "a₋·ReLU(−x_i + b)], the dictionary ±e_i fixed and a₊, a₋, b trained (Ahn's threshold neuron = "
    "a non-zero first-layer bias; a± ~ N(0, 1/(2d)) with signs is an output-weight init; b = 0); "
    "d = 200, n = 300, λ = 3, 10,000 test points (f = 0 is an error). Loss: c × the MEAN logistic "
    "loss — its curvature d²/(4π) along a₊ = a₋ puts GD's threshold 2/λ_max at 8π/(c·d²), Ahn's 8π/d² "
    "for c = 1 (a summed loss would put it at 8π/(n·d²), below every η of Ahn's axis). Dead network: "
    "every unit off on more than half the test points (task.dead_fraction = 0.5), shown as ○, "
    "distinct from divergence (×)."
)
DAI_SCALE = (
    "Dai's loss scale is not given; USAM's ρ is not invariant to rescaling the loss (SAM's is), so "
    "Dai's (η, ρ) run on c·L, never with η rescaled alone: c = 8π/(0.05·d²) ≈ 0.01257 puts GD's "
    "threshold at η = 0.05, so Dai's η = 0.025 sits at half of it, where Dai say GD's η is 'not large "
    "enough'."
)


def settings(df: pd.DataFrame) -> tuple[int, float, float]:
    """(d, λ, loss_mult c) of the runs."""
    return int(df["task.d"].iloc[0]), float(df["task.signal"].iloc[0]), float(df["task.loss_mult"].iloc[0])


def dead(df: pd.DataFrame) -> pd.Series:
    """Per row: the network is dead there (``is_dead`` on the row's ``dead_frac``)."""
    return is_dead(df["dead_frac"], df["task.dead_fraction"])


def outcome_counts(runs: pd.DataFrame) -> str:
    """' (k/n diverged, m/n dead)' for the final rows of a group of runs, or ''."""
    n = len(runs)
    parts = [f"{k}/{n} {what}" for what, k in (("diverged", int((runs.status == "diverged").sum())),
                                                 ("dead", int(dead(runs).sum()))) if k]
    return f" ({', '.join(parts)})" if parts else ""


def panels(title: str) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    axes[0].set(xlabel="iteration", ylabel="test accuracy (%)")
    axes[1].set(xlabel="iteration", ylabel="bias b")
    axes[1].axhline(0, color="0.7", lw=0.8)
    fig.suptitle(title, fontsize=10)
    return fig, axes


def curve(ax: plt.Axes, runs: pd.DataFrame, column: str, **style) -> None:
    """Mean over the runs (seeds) that end alive at each logged step, with a light min–max band; a run
    that ends dead is drawn on its own (thin), never averaged with live ones. Each run's last point is
    marked × when it diverged and ○ when it ended dead. After a run diverged the mean is over the runs
    still going."""
    scale = 100 if column == "test_acc" else 1
    ends = final_rows(runs)
    dead_runs = set(ends.run[dead(ends)])
    live = runs[~runs.run.isin(dead_runs)]
    if len(live):
        stats = live.groupby("step")[column].agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"] * scale, **style)
        ax.fill_between(stats.index, stats["min"] * scale, stats["max"] * scale, color=style.get("color"),
                        alpha=0.08, lw=0)
    for k, (_, run) in enumerate(runs[runs.run.isin(dead_runs)].groupby("run")):
        thin = {**style, "lw": 0.7, "alpha": 0.8, "label": style.get("label") if not len(live) and k == 0 else None}
        ax.plot(run.step, run[column] * scale, **thin)
    for mask, marker in ((ends.status == "diverged", dict(marker="x", color="red", ms=8, mew=2)),
                         (dead(ends), dict(marker="o", mfc="none", color="k", ms=8))):
        ax.plot(ends.step[mask], ends[column][mask] * scale, ls="none", **marker)


def lr_label(lr: float, d: int, loss_mult: float) -> str:
    return rf"$\eta$={lr:g} ({lr / theory.ahn_gd_threshold(d, loss_mult):.2g}× GD threshold)"


RHO_CMAPS = {"sam": plt.cm.Blues, "usam": plt.cm.Purples}  # Dai's Fig. 9: SAM blue, USAM violet (largest ρ darkest)


def draw_runs(df: pd.DataFrame, stem: Path, title: str, by: str, label) -> None:
    """Test accuracy and bias vs iteration, SAM solid, USAM dashed, GD grey (coloured when it is the only
    optimizer). Over η: one colour per η. Over ρ (Dai's Fig. 9 caption: USAM ρ = 0.5 "dashed violet", SAM
    ρ = 0.5 "solid blue"): SAM in blues, USAM in violets, darker for larger ρ; GD ignores ρ and is drawn
    once. The legend lists the diverged × and dead ○ markers only when some run ends so."""
    opts = [o for o in ("gd", "sam", "usam") if o in set(df["opt"])]
    values = sorted(df[by].unique())
    fig, axes = panels(title)
    for i, value in enumerate(values):
        shade = 0.45 + 0.55 * i / max(1, len(values) - 1)
        for opt in opts:
            cmap = RHO_CMAPS.get(opt, plt.cm.Greys)
            color = plt.cm.viridis(i / max(1, len(values) - 0.5)) if by == "lr" else cmap(shade)
            if opt == "gd" and by == "rho" and i > 0:
                continue
            runs = df[(df[by] == value) & (df["opt"] == opt)]
            grey = opt == "gd" and len(opts) > 1
            name = "GD" if grey and by == "rho" else (None if grey else f"{opt.upper()} {label(value)}")
            style = dict(color=COLORS["gd"], lw=3, alpha=0.6) if grey else dict(color=color, lw=1.2)
            for ax, col in zip(axes, ("test_acc", "bias"), strict=True):
                curve(ax, runs, col, ls=STYLES[opt], **style,
                      label=f"{name}{outcome_counts(final_rows(runs))}" if name else None)
    d, signal, _ = settings(df)
    axes[0].axhline(100 * theory.linear_classifier_accuracy(signal, d), color="tab:red", ls=":", lw=1,
                    label=r"linear classifier $\Phi(\lambda/\sqrt{d})$")
    if "gd" in opts and len(opts) > 1 and by == "lr":
        axes[0].plot([], [], color=COLORS["gd"], lw=3, alpha=0.6, label="GD (each η)")
    ends = final_rows(df)
    if (ends.status == "diverged").any():
        axes[0].plot([], [], ls="none", marker="x", color="red", mew=2, label="diverged (end)")
    if dead(ends).any():
        axes[0].plot([], [], ls="none", marker="o", mfc="none", color="k",
                     label="dead (end; drawn alone, not averaged)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=4,
               fontsize=7)
    save(fig, stem)


def summary_table(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per (optimizer, ``by``): mean bias and test accuracy at the last logged step and halfway
    (``steps``/2), and how many runs diverged or ended dead."""
    final = final_rows(df)
    half = df[df.step == df.steps // 2].groupby(["opt", by])[["bias", "test_acc"]].mean()
    table = final.groupby(["opt", by]).agg(
        bias=("bias", "mean"), test_acc=("test_acc", "mean"),
        diverged=("status", lambda s: int((s == "diverged").sum())), runs=("status", "size"))
    table["dead"] = dead(final).groupby([final["opt"], final[by]]).sum()
    return table.join(half.add_suffix("_half"))


def healthy(row: pd.Series) -> bool:
    return row.diverged == 0 and row.dead == 0


def fmt(value: float, by: str) -> str:
    return f"{'η' if by == 'lr' else 'ρ'}={value:g}"


def role(cite: str | None, source: str) -> dict:
    """A claim's class: a paper claim citing ``cite``, or (``cite`` None, the default of the claims below)
    our own probe."""
    return dict(kind="paper", cite=cite, source=source) if cite else dict(kind="extension", source=source)


def gd_monotone(table: pd.DataFrame, cite: str | None = None) -> Claim:
    """Dai §4 (after Ahn et al.): GD with a larger η learns a more negative b and a higher accuracy."""
    gd = table.loc["gd"].sort_index()
    ok = bool((np.diff(gd.bias) < 0).all() and (np.diff(gd.test_acc) > 0).all() and gd.apply(healthy, axis=1).all())
    return Claim(
        "GD: larger η learns a more negative bias and a higher test accuracy",
        "final b decreasing and final accuracy increasing in η",
        "; ".join(f"η={lr:g}: b={r.bias:+.3f}, acc={100 * r.test_acc:.1f}%" for lr, r in gd.iterrows()),
        "strictly monotone, no divergence",
        ok,
        **role(cite, "the sentence's monotone trend, exact"),
    )


def sam_beats_gd(table: pd.DataFrame, by: str, gd_rows: dict, cite: str | None = None) -> Claim:
    """Dai §4 / B.2: SAM learns b < 0 and a higher accuracy than GD, wherever GD is not already at the
    ceiling (within ``ACC_MARGIN`` of the best final accuracy of any run of the figure); where GD is,
    SAM must be within ``ACC_MARGIN`` of GD."""
    ceiling = float(table.test_acc.max())
    results, parts = [], []
    for value, sam in table.loc["sam"].iterrows():
        gd = gd_rows[value]
        at_ceiling = gd.test_acc >= ceiling - ACC_MARGIN
        gain = -ACC_MARGIN if at_ceiling else ACC_MARGIN  # at the ceiling: SAM stays there too
        ok = healthy(sam) and sam.bias < 0 and sam.test_acc >= gd.test_acc + gain
        results.append(ok)
        parts.append(f"{fmt(value, by)}: SAM b={sam.bias:+.3f} acc={100 * sam.test_acc:.1f}%{outcome_note(sam)} vs "
                     f"GD acc={100 * gd.test_acc:.1f}%" + (" (GD at the ceiling)" if at_ceiling else ""))
    return Claim(
        f"SAM learns b < 0 and beats GD at every {'η' if by == 'lr' else 'ρ'}",
        f"b < 0 and acc ≥ GD + {100 * ACC_MARGIN:g} points where GD is below the ceiling "
        f"({100 * ceiling:.1f}%, the best run) − {100 * ACC_MARGIN:g}, else acc ≥ GD − {100 * ACC_MARGIN:g}",
        "; ".join(parts),
        "every value; no divergence, not dead",
        all(results),
        **role(cite, f"ours: Dai give curves ('outstanding performance'), no margin; {100 * ACC_MARGIN:g} "
                     "points, and the ceiling rule where GD is already at the best accuracy"),
    )


def outcome_note(row: pd.Series) -> str:
    parts = [f"{int(row[k])}/{int(row.runs)} {k}" for k in ("diverged", "dead") if row[k]]
    return f" ({', '.join(parts)})" if parts else ""


def usam_like_gd(table: pd.DataFrame, by: str, values: Sequence[float], gd_rows: dict,
                 cite: str | None = None) -> Claim:
    """Dai §4 / B.2: USAM with ρ = 0.01 nearly degenerates to GD."""
    usam = table.loc["usam"]
    ok = [healthy(usam.loc[v]) and abs(usam.loc[v].test_acc - gd_rows[v].test_acc) <= ACC_MARGIN for v in values]
    return Claim(
        "USAM (ρ = 0.01) performs like GD",
        f"|acc_USAM − acc_GD| ≤ {100 * ACC_MARGIN:g} points",
        "; ".join(f"{fmt(v, by)}: USAM b={usam.loc[v].bias:+.3f} acc={100 * usam.loc[v].test_acc:.1f}%"
                  f"{outcome_note(usam.loc[v])} vs GD acc={100 * gd_rows[v].test_acc:.1f}%" for v in values),
        f"±{100 * ACC_MARGIN:g} points at every value",
        all(ok),
        **role(cite, f"ours: 'nearly degenerates to that of GD' read as ±{100 * ACC_MARGIN:g} points"),
    )


def usam_between(table: pd.DataFrame, rhos: Sequence[float], gd: pd.Series, cite: str | None = None) -> Claim:
    """Dai App. B.2: USAM with moderate ρ "manages to decrease the bias and improve its accuracy, though
    with a slower speed than SAM with the same choices of ρ" — an order, no margin: b_USAM < b_GD and
    acc_GD < acc_USAM < acc_SAM, halfway and at the end."""
    parts, ok = [], []
    for rho in rhos:
        usam, sam = table.loc[("usam", rho)], table.loc[("sam", rho)]
        for when, suffix in (("halfway", "_half"), ("end", "")):
            acc_u, acc_s, acc_g = (r[f"test_acc{suffix}"] for r in (usam, sam, gd))
            b_u, b_g = usam[f"bias{suffix}"], gd[f"bias{suffix}"]
            ok.append(healthy(usam) and b_u < b_g and acc_g < acc_u < acc_s)
            parts.append(f"ρ={rho:g} {when}: b GD {b_g:+.3f}, USAM {b_u:+.3f}; acc GD {100 * acc_g:.1f}%, "
                         f"USAM {100 * acc_u:.1f}%{outcome_note(usam)}, SAM {100 * acc_s:.1f}%")
    return Claim(
        f"USAM with ρ ∈ {{{', '.join(f'{r:g}' for r in rhos)}}} lowers b and beats GD, more slowly than SAM",
        "b_USAM < b_GD and acc_GD < acc_USAM < acc_SAM, halfway and at the end",
        "; ".join(parts),
        "every ρ, both times; the order only",
        all(ok),
        **role(cite, "the sentence states an order, no margin (our former 2-point margin is dropped)"),
    )


def usam_diverges(table: pd.DataFrame, rho: float, cite: str | None, note: str = "") -> Claim:
    """Dai App. B.2: USAM with ρ = 0.5 diverges (SAM with the same ρ does not). Diverged = status
    ``diverged`` (non-finite loss or above the ceiling); a dead network is reported, not counted."""
    usam = table.loc[("usam", rho)]
    return Claim(
        f"USAM with ρ = {rho:g} diverges",
        "every seed diverges",
        f"{int(usam.diverged)}/{int(usam.runs)} diverged, {int(usam.dead)}/{int(usam.runs)} dead; final "
        f"b={usam.bias:+.3f}, acc={100 * usam.test_acc:.1f}%",
        "all seeds",
        bool(usam.diverged == usam.runs),
        note=note if usam.diverged < usam.runs else "",
        **role(cite, "exact: every seed (the caption: USAM with ρ = 0.5 'diverges and becomes invisible')"),
    )
