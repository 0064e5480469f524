"""The run folder (DESIGN §3): metrics.csv, summary.json, config.yaml, and collecting run folders.

``metrics.csv`` is tidy, one row per logged step, ``step`` first; floats are written with ``repr`` so
the same run gives the same bytes. ``summary.json`` is written atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import yaml

YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YamlDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

FINISHED = ("completed", "diverged")


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def is_finished(run_dir: Path) -> bool:
    """True when the run folder holds a completed or diverged run (a sweep skips those)."""
    summary = read_summary(run_dir)
    return summary is not None and summary["status"] in FINISHED


class RunRecord:
    """Writes one run's folder as it goes: rows as they are logged, the summary last.

    ``identity`` (task, opt, lr, rho, seed) is repeated in the summary; the full config is in
    ``.hydra/config.yaml``, written by Hydra (CLI) or by ``samrepro.sweep`` (batched sweeps).
    """

    def __init__(self, run_dir: Path, identity: dict, metric_names: Sequence[str], resume_step: int = 0):
        """``resume_step`` > 0 continues a run resumed from a checkpoint of that step: the rows
        logged up to it are kept, later ones dropped."""
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "summary.json").unlink(missing_ok=True)
        self.identity = identity
        self.columns = ("step", *metric_names)
        kept = []
        if resume_step:
            with open(self.dir / "metrics.csv", newline="") as f:
                kept = [row for row in csv.reader(f)][1:]
            kept = [row for row in kept if int(row[0]) <= resume_step]
        self._file = open(self.dir / "metrics.csv", "w", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerows([self.columns, *kept])
        self.last: dict[str, float] = {}
        self.steps_logged = 0
        if kept:
            self.last = {k: float(v) for k, v in zip(self.columns[1:], kept[-1][1:], strict=True)}
            self.steps_logged = int(kept[-1][0])

    def write_row(self, step: int, metrics: dict[str, float]) -> None:
        self._csv.writerow([step, *(repr(float(metrics[k])) for k in self.columns[1:])])
        self._file.flush()
        self.last = dict(metrics)
        self.steps_logged = step

    def finish(self, status: str, steps_done: int, wall_seconds: float, **extra: object) -> dict:
        self._file.close()
        summary = {
            "status": status,
            "steps_done": steps_done,
            **extra,
            "final": self.last,
            "wall_seconds": round(wall_seconds, 3),
            **self.identity,
        }
        write_json_atomic(self.dir / "summary.json", summary)
        return summary


def load_yaml(path: Path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=YamlLoader)


def dump_yaml(payload: object, path: Path) -> None:
    Path(path).write_text(yaml.dump(payload, Dumper=YamlDumper, sort_keys=False))


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = str(value) if isinstance(value, list) else value
    return out


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).rglob("summary.json"))


def collect(run_dirs: Iterable[Path], metrics: bool = True) -> pd.DataFrame:
    """One tidy DataFrame of many runs: config columns (flattened, e.g. ``task.loss``), the summary's
    ``status``/``steps_done``/``diverged_at``, ``run`` (the folder's name) and ``run_dir``, and
    (``metrics=True``) one row per
    logged step; otherwise one row per run with the final metrics."""
    rows = []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if summary is None:
            continue
        info = _flatten(load_yaml(Path(run_dir) / ".hydra" / "config.yaml"))
        info.update(status=summary["status"], steps_done=summary["steps_done"],
                    diverged_at=summary.get("diverged_at"), run=Path(run_dir).name,
                    run_dir=str(run_dir))
        if metrics:
            with open(Path(run_dir) / "metrics.csv", newline="") as f:
                rows += [{**{k: float(v) for k, v in r.items()}, **info} for r in csv.DictReader(f)]
        else:
            rows.append({**summary["final"], **info})
    df = pd.DataFrame(rows)
    if metrics and not df.empty:
        df["step"] = df["step"].astype(int)
    return df


def collect_main(argv: Sequence[str] | None = None) -> None:
    """``samrepro-collect SWEEP_DIR [-o out.csv] [--final]``: a sweep's run folders as one CSV."""
    parser = argparse.ArgumentParser(prog="samrepro-collect", description=collect_main.__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="CSV to write (default: stdout)")
    parser.add_argument("--final", action="store_true", help="one row per run (final metrics)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.exit(2, f"samrepro-collect: error: sweep_dir={args.sweep_dir}: not a directory\n")
    df = collect(run_folders(args.sweep_dir), metrics=not args.final)
    df.to_csv(args.output or sys.stdout, index=False)
