"""``samrepro-plot``: one metric of a user's own sweep (a run folder tree or a ``samrepro-collect`` CSV)
against the step or against a config key, coloured, styled and split by config keys, seeds averaged.

A line is one configuration apart from its seed: ``--seeds band`` draws the mean over its seeds with a
min–max band, ``--seeds lines`` every seed. A diverged run ends in an × at its last finite logged
point (usually the step where its loss passed loss_ceiling). Against a config key (``-x lr``) a point is
a run's last finite value, a line joins the runs that did not diverge.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from samrepro.collect import collect, run_folders
from samrepro.figures import save
from samrepro.records import SUMMARY

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.lines import Line2D  # noqa: E402

RUN_COLUMNS = ("status", "steps_done", "diverged_at", "run", "run_dir")  # per run, not config keys
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


class PlotError(ValueError):
    """Bad user input: one line for the CLI."""


def load(source: Path) -> pd.DataFrame:
    """A sweep folder's runs (collected) or a CSV written by ``samrepro-collect``."""
    if source.is_dir():
        df = collect(run_folders(source))
    elif source.is_file():
        df = pd.read_csv(source)
    else:
        raise PlotError(f"{source}: no such folder or CSV")
    if df.empty or "task" not in df:
        raise PlotError(f"{source}: holds no finished run (a sweep folder, or a CSV written by samrepro-collect)")
    return df


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metrics: collect writes them first, before the config (which starts with ``task``)."""
    return [c for c in df.columns[: df.columns.get_loc("task")] if c != "step"]


def config_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns[df.columns.get_loc("task"):] if c not in RUN_COLUMNS]


def check(option: str, name: str | None, allowed: Sequence[str], what: str) -> None:
    if name is not None and name not in allowed:
        raise PlotError(f"{option} {name}: no such {what}; allowed: {', '.join(allowed)}")


def where(df: pd.DataFrame, conditions: Sequence[str]) -> pd.DataFrame:
    """Keeps the rows where ``KEY=VALUE`` (``VALUE`` may list alternatives: ``opt=sam,usam``) holds for each."""
    for condition in conditions:
        key, sep, value = condition.partition("=")
        if not sep:
            raise PlotError(f"--where {condition}: expected KEY=VALUE, e.g. --where opt=sam")
        check("--where", key, config_columns(df), "config key")
        values = [value] if value.startswith("[") else value.split(",")
        column = df[key]
        if pd.api.types.is_numeric_dtype(column):
            try:
                keep = np.isclose(column.to_numpy(float)[:, None], np.array(values, float)).any(axis=1)
            except ValueError:
                raise PlotError(f"--where {condition}: {key} takes numbers") from None
        else:
            keep = column.astype(str).isin(values)
        if not keep.any():
            raise PlotError(f"--where {condition}: no run has it; {key} takes "
                            f"{', '.join(map(str, sorted(column.astype(str).unique())))}")
        df = df[keep]
    return df


def label(keys: Sequence[str], values: tuple) -> str:
    """``0.1`` for one key, ``opt=sam, lr=0.1`` for several."""
    if len(keys) == 1:
        return f"{values[0]:g}" if isinstance(values[0], float) else str(values[0])
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, values, strict=True))


def palette(n: int) -> list:
    """Distinct colours: tab10 or tab20 while they last, then viridis."""
    if n > 20:
        return [plt.get_cmap("viridis")(i / (n - 1)) for i in range(n)]
    return [plt.get_cmap("tab10" if n <= 10 else "tab20")(i) for i in range(n)]


def plot(df: pd.DataFrame, y: str, x: str = "step", hue: str | None = None, style: str | None = None,
         col: str | None = None, seeds: str = "band", logx: bool = False, logy: bool = False) -> tuple[object, str]:
    """The figure and a one-line account of it. Keys that vary between runs but are given no role
    (``hue``: by default all of them) separate lines of the same colour; a note says which."""
    run = "run_dir" if "run_dir" in df else "run"
    varying = [k for k in config_columns(df) if k != "seed" and df[k].astype(str).nunique() > 1]
    hues = [hue] if hue else [k for k in varying if k not in (x, style, col)]
    others = [k for k in varying if k not in (x, style, col, *hues)]
    df = df[np.isfinite(df[y])]
    if x != "step" and "step" in df:  # one point per run: its last finite value
        df = df.sort_values("step").groupby(run, sort=False).tail(1)
    ticks = None  # against a config key: each of its values labelled (a name such as opt at 0, 1, …)
    if x != "step" and not pd.api.types.is_numeric_dtype(df[x]):
        names = sorted(df[x].astype(str).unique())
        df = df.assign(**{x: df[x].astype(str).map({v: i for i, v in enumerate(names)})})
        ticks = (range(len(names)), names)
    elif x != "step" and df[x].nunique() <= 10:
        ticks = (np.unique(df[x]), [label([x], (v,)) for v in np.unique(df[x])])
    hue_values = list(df[hues].drop_duplicates().sort_values(hues).itertuples(index=False, name=None))
    colors = dict(zip(hue_values, palette(len(hue_values)), strict=True))
    styles = {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(sorted(df[style].unique()))} if style else {}
    panels = sorted(df[col].unique()) if col else [None]
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols + 1.8, 3.6 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    by_seed = seeds == "lines" and "seed" in df
    line_keys = [*hues, *([style] if style else []), *others, *(["seed"] if by_seed else [])]
    n_lines = n_diverged = 0
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = df if col is None else df[df[col] == panel]
        for key, runs in sub.groupby(line_keys) if line_keys else [((), sub)]:
            color, ls = colors[key[: len(hues)]], styles[key[len(hues)]] if style else "-"
            finished = runs if x == "step" else runs[runs.status != "diverged"]
            stats = finished.groupby(x)[y].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], color=color, ls=ls, lw=1.4, marker=None if x == "step" else "o",
                    ms=3.5)
            if not by_seed and "seed" in runs and runs.seed.nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)
            diverged = runs[runs.status == "diverged"].sort_values(x).groupby(run).tail(1)
            ax.plot(diverged[x], diverged[y], "x", color=color, ms=8, mew=2, ls="none", zorder=5)
            n_lines += 1
            n_diverged += len(diverged)
        ax.set(xscale="log" if logx else "linear", yscale="log" if logy else "linear")
        if ticks:
            ax.set_xticks(*ticks)
        ax.grid(alpha=0.3)
        if col:
            ax.set_title(f"{col} = {label([col], (panel,))}", fontsize=10)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(x)
    for ax in axes[:, 0]:
        ax.set_ylabel(y)
    heading = Line2D([], [], ls="none")  # a legend entry without a line: the key's name, in bold
    handles = [(heading, ", ".join(hues))] if hues else []
    handles += [(Line2D([], [], color=c, lw=2), label(hues, v)) for v, c in colors.items()] if hues else []
    if style:
        handles += [(heading, style)]
        handles += [(Line2D([], [], color="k", ls=s, lw=1.4), label([style], (v,))) for v, s in styles.items()]
    if n_diverged:
        handles += [(Line2D([], [], color="k", marker="x", ms=8, mew=2, ls="none"), "diverged")]
    if handles:
        legend = fig.legend(*zip(*handles, strict=True), loc="center left", bbox_to_anchor=(1.0, 0.5),
                            frameon=False, fontsize=9, handlelength=2.6)
        for (handle, _), text in zip(handles, legend.get_texts(), strict=True):
            text.set_fontweight("bold" if handle is heading else "normal")
    fixed = [f"{k}={label([k], (df[k].iloc[0],))}" for k in ("task", "opt", "lr", "rho")
             if k in df and k not in varying]
    n_seeds = df.seed.nunique() if "seed" in df else 1
    if n_seeds > 1:
        fixed.append(f"{n_seeds} seeds: " + ("one line each" if by_seed else "mean, band min–max"))
    fig.suptitle(f"{y} against {x}" + (f" ({'; '.join(fixed)})" if fixed else ""), fontsize=11)
    fig.tight_layout()
    note = f"{n_lines} line{'s' * (n_lines != 1)}, " + (f"{n_diverged} diverged run{'s' * (n_diverged != 1)} marked ×"
                                                       if n_diverged else "no run diverged")
    if others:
        note += (f"; {', '.join(others)} also {'vary' if len(others) > 1 else 'varies'}: lines of one colour and "
                 f"style differ in {'them' if len(others) > 1 else 'it'} (use --style, --col or --where)")
    return fig, note


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="samrepro-plot", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a sweep folder (runs/<name>) or a CSV written by samrepro-collect")
    parser.add_argument("-y", metavar="METRIC", help="the metric to plot (default: the first metric column)")
    parser.add_argument("-x", default="step", metavar="KEY",
                        help="step (default), or a config key (e.g. lr): then each run's last value")
    parser.add_argument("--hue", metavar="KEY", help="config key that sets the colour (default: every key that varies)")
    parser.add_argument("--style", metavar="KEY", help="config key that sets the line style")
    parser.add_argument("--col", metavar="KEY", help="config key: one panel per value")
    parser.add_argument("--seeds", choices=("band", "lines"), default="band",
                        help="band: mean over seeds with a min–max band (default); lines: one line per seed")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="keep only runs with KEY=VALUE (VALUE may be a,b); repeatable")
    parser.add_argument("--logx", action="store_true", help="log-scaled x axis")
    parser.add_argument("--logy", action="store_true", help="log-scaled y axis")
    parser.add_argument("-o", "--output", type=Path, metavar="STEM",
                        help="writes STEM.png and STEM.pdf (default: SOURCE/plot_<metric>; for a CSV or a run "
                             "folder, <name>_plot_<metric> beside it)")
    args = parser.parse_args(argv)
    try:
        df = load(args.source)
        metrics, keys = metric_columns(df), config_columns(df)
        y = args.y or metrics[0]
        check("-y", y, metrics, "metric")
        check("-x", args.x, (["step"] if "step" in df else []) + keys,
              "x column" if "step" in df else "x column in a table of final values (samrepro-collect --final)")
        for option in ("hue", "style", "col"):
            check(f"--{option}", getattr(args, option), keys, "config key")
        df = where(df, args.where)
        fig, note = plot(df, y, args.x, args.hue, args.style, args.col, args.seeds, args.logx, args.logy)
    except PlotError as err:
        parser.exit(2, f"samrepro-plot: error: {err}\n")
    stem = args.output.with_suffix("") if args.output and args.output.suffix in (".png", ".pdf") else args.output
    if stem is None:  # not inside a run folder: samrepro would refuse a run folder holding other files
        folder = args.source if args.source.is_dir() and not (args.source / SUMMARY).exists() else None
        base = args.source.stem if args.source.is_file() else args.source.name
        stem = folder / f"plot_{y}" if folder else args.source.with_name(f"{base}_plot_{y}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    save(fig, stem)
    print(f"samrepro-plot: {stem}.png, {stem}.pdf: {y} against {args.x}, {note}")
