"""Many run folders as one tidy table (``samrepro-collect``), for the figures and for a user's own sweep.

Its columns are the metrics (``step`` first), the run's identity under the names of ``summary.json``
(``task``, ``opt``, ``lr``, ``rho``, ``seed``), the other config keys flattened (``task.d``,
``lr_schedule.name``, …), the summary's ``status``, ``steps_done`` and ``diverged_at``, and ``run`` (the
folder's name) and ``run_dir``. pandas is imported where it is used: a run does not need it.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from samrepro.records import CONFIG, METRICS, SUMMARY, flatten, load_yaml, read_summary, write_atomic

if TYPE_CHECKING:
    import pandas as pd

IDENTITY = {"task.name": "task", "opt.name": "opt"}  # config key → its name in summary.json and the table


def run_folders(root: Path) -> list[Path]:
    """Every run folder below ``root`` (a stage's own folder, which holds its phases' runs, is not one)."""
    return sorted(p.parent for p in Path(root).rglob(SUMMARY) if (p.parent / METRICS).exists())


def run_columns(run_dir: Path, summary: dict) -> dict:
    """One run's config (flattened; lists as strings; ``task.name``/``opt.name`` as ``task``/``opt``) and
    its summary's status."""
    config = flatten(load_yaml(run_dir / CONFIG))
    info = {IDENTITY.get(k, k): str(v) if isinstance(v, list) else v for k, v in config.items()}
    info.update(status=summary["status"], steps_done=summary["steps_done"],
                diverged_at=summary.get("diverged_at"), run=run_dir.name, run_dir=str(run_dir))
    return info


def collect(run_dirs: Iterable[Path], metrics: bool = True) -> pd.DataFrame:
    """One tidy DataFrame of many runs (the module's columns): one row per logged step (``metrics=True``),
    otherwise one row per run with its final metrics. Folders without a summary (unfinished) are left out."""
    import pandas as pd

    rows, names = [], {}  # names: every run's metric columns, in order (runs of several tasks differ)
    for run_dir in map(Path, run_dirs):
        summary = read_summary(run_dir)
        if summary is None or not (run_dir / METRICS).exists():
            continue
        info = run_columns(run_dir, summary)
        if metrics:
            with open(run_dir / METRICS, newline="") as f:
                reader = csv.DictReader(f)
                rows += [{**{k: float(v) for k, v in r.items()}, **info} for r in reader]
                names.update(dict.fromkeys(reader.fieldnames))
        else:
            rows.append({**summary["final"], **info})
            names.update(dict.fromkeys(summary["final"]))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if metrics:
        df["step"] = df["step"].astype(int)
    return df[[*names, *(c for c in df if c not in names)]]


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    write_atomic(Path(path), df.to_csv(index=False, lineterminator="\n"))


def describe(df: pd.DataFrame) -> str:
    """``27 runs (24 completed, 3 diverged), 2,700 rows``."""
    runs = df.drop_duplicates("run_dir")
    statuses = ", ".join(f"{n} {s}" for s, n in Counter(runs.status).most_common())
    return f"{len(runs)} runs ({statuses}), {len(df):,} rows"


def collect_main(argv: Sequence[str] | None = None) -> None:
    """Every finished run folder below SWEEP_DIR (e.g. runs/<name>) as one tidy CSV: the metrics, the run's
    task, opt, lr, rho and seed, its other config keys (task.d, lr_schedule.name, …), status, steps_done
    and diverged_at. Says on stderr how many runs and rows it wrote."""
    parser = argparse.ArgumentParser(prog="samrepro-collect", description=collect_main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep's folder (runs/<name>) or any folder above run folders")
    parser.add_argument("-o", "--output", type=Path, help="CSV to write (default: stdout)")
    parser.add_argument("--final", action="store_true",
                        help="one row per run with its final metrics (default: one row per logged step)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.exit(2, f"samrepro-collect: error: sweep_dir={args.sweep_dir}: not a directory\n")
    df = collect(run_folders(args.sweep_dir), metrics=not args.final)
    if df.empty:
        parser.exit(2, f"samrepro-collect: error: sweep_dir={args.sweep_dir}: holds no finished run folder "
                       f"({SUMMARY} beside {METRICS})\n")
    if args.output:
        write_csv_atomic(df, args.output)
    else:
        try:
            df.to_csv(sys.stdout, index=False, lineterminator="\n")
        except BrokenPipeError:  # the reader stopped early (| head): no traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
    print(f"samrepro-collect: {describe(df)} → {args.output or 'stdout'}", file=sys.stderr)
