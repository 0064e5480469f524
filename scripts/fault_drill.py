"""Fault drill: SIGKILL samrepro at random moments, resume after each kill, and compare every run folder
with an uninterrupted run of the same work.

    python scripts/fault_drill.py [--kills 24] [--seed 0] [--grid 15] [--steps 400]
                                  [--figure results/figures/fault_drill.png]
    python scripts/fault_drill.py --kills 1 --grid 2 --steps 20     # a smoke run: about half a minute

The work is a batched sweep of mixed configurations (GD, SAM and USAM on a quadratic over a 15 × 15 grid
of η and ρ by default: 675 runs, USAM diverging in part of it) and ``samrepro-figs dai_thm3`` (its sweep, its CSV
and its figure). Kills land in three phases, chosen in turn: during training (before any summary is
written), during the summary writes at the end of the batch (the first summary.json is watched for),
and during ``samrepro-figs`` (its CSV made stale first, killed as the CSV's or the figure's temp file
appears). After each kill the
drill checks that every summary.json and metrics.csv on disk parses, then runs the command again; a
trial may be killed up to three times before its last, uninterrupted run. Finally every run folder must
equal the reference: byte-identical metrics.csv, one summary.json with the same status, steps and final
metrics, no folder lost, none extra, no temp file left; and results/dai_thm3.csv byte-identical. It
prints kills survived and mismatches (both must be as stated: mismatches 0; exit code 1 otherwise) and,
with ``--figure PATH``, draws the kills to PATH (.png, and its .pdf). Everything else lives in a temporary
folder, removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FIGS = [str(BIN / "samrepro-figs"), "dai_thm3", "--results", "results"]
PHASES = ("training", "summary writes", "samrepro-figs")


def sweep_command(points: int, steps: int) -> list[str]:
    """GD, SAM and USAM on a quadratic over a points × points grid of η = ρ = 0.05·1.2^i, i < points."""
    grid = ",".join(f"{v:.3g}" for v in [0.05 * 1.2**i for i in range(points)])
    return [str(BIN / "samrepro"), "-m", "task=quadratic", "task.eigenvalues=[4.0,1.0,0.25]",
            "task.init=[1.0,1.0,1.0]", "opt=gd,sam,usam", f"lr={grid}", f"rho={grid}", f"steps={steps}",
            f"log_every={max(1, steps // 20)}", "name=drill", "progress=false"]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def finish(cmd: list[str], cwd: Path) -> str | None:
    """Runs ``cmd`` to the end; returns its error output if it failed."""
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    return None if done.returncode == 0 else done.stderr[-3000:]


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the process group; False if it had already ended."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def wait_for(predicate, proc: subprocess.Popen, limit: float = 600.0) -> bool:
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def summaries(root: Path) -> list[Path]:
    return list(root.glob("runs/*/*/summary.json"))


def check_readable(root: Path) -> list[str]:
    """Every summary.json and metrics.csv on disk parses (a kill leaves old files or new ones, never half)."""
    bad = []
    for path in summaries(root):
        try:
            json.loads(path.read_text())
        except ValueError:
            bad.append(str(path))
    for path in root.glob("runs/*/*/metrics.csv"):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            bad.append(str(path))
    return bad


def folder_state(root: Path) -> dict[str, tuple]:
    state = {}
    for d in sorted({p.parent for p in root.glob("runs/*/*/config.yaml")} | {p.parent for p in summaries(root)}):
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        metrics = (d / "metrics.csv").read_bytes() if (d / "metrics.csv").exists() else None
        state[str(d.relative_to(root))] = (metrics, s.get("status"), s.get("steps_done"), s.get("final"))
    return state


def attempt(phase: str, sweep: list[str], work: Path, rng: random.Random, durations: dict) -> dict:
    """One kill in ``phase`` (of ``sweep`` or of samrepro-figs); returns what was killed and when."""
    cmd = FIGS if phase == "samrepro-figs" else sweep
    proc = start(cmd, work)
    t0 = time.monotonic()
    if phase == "training":
        time.sleep(rng.uniform(0.3, max(0.4, durations["sweep"] * 0.9)))
        in_phase = not summaries(work)
    elif phase == "summary writes":
        in_phase = wait_for(lambda: summaries(work), proc)
        time.sleep(rng.uniform(0, 0.6))
    else:  # the CSV is made stale, so that samrepro-figs rewrites it; killed as its temp file appears
        (work / "results" / "dai_thm3.csv").unlink(missing_ok=True)
        writing = [(work / "results", "dai_thm3.csv.*.tmp"), (work / "results" / "figures", "dai_thm3.png.*.tmp")]
        in_phase = wait_for(lambda: any(any(folder.glob(name)) for folder, name in writing), proc)
    killed = kill(proc)
    return {"phase": phase, "at": time.monotonic() - t0, "killed": killed, "in_phase": in_phase,
            "unreadable": check_readable(work)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=24, help="kills to survive (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and phases")
    parser.add_argument("--grid", type=int, default=15, help="η and ρ values of the sweep (default: 15)")
    parser.add_argument("--steps", type=int, default=400, help="steps of each run of the sweep (default: 400)")
    parser.add_argument("--figure", type=Path, help="draw the kills to this file (.png and .pdf); default: none")
    args = parser.parse_args()
    for key in ("kills", "grid", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: must be an integer > 0")
    base = Path(tempfile.mkdtemp(prefix="samrepro-drill-"))
    try:
        mismatches = drill(sweep_command(args.grid, args.steps), args.kills, random.Random(args.seed), base,
                           args.figure)
    finally:
        shutil.rmtree(base)
    sys.exit(1 if mismatches else 0)


def drill(sweep: list[str], kills_wanted: int, rng: random.Random, base: Path, figure: Path | None) -> int:
    """The reference run, then trials until ``kills_wanted`` kills landed; prints and returns the mismatches."""
    reference = base / "reference"
    reference.mkdir()
    durations = {}
    for name, cmd in (("sweep", sweep), ("figs", FIGS)):
        t = time.monotonic()
        if error := finish(cmd, reference):
            sys.exit(f"the uninterrupted {name} failed:\n{error}")
        durations[name] = time.monotonic() - t
    print(f"reference: sweep {durations['sweep']:.1f} s, samrepro-figs dai_thm3 {durations['figs']:.1f} s",
          flush=True)
    expected = folder_state(reference)
    kills, trials, mismatches = [], 0, []
    while sum(k["killed"] for k in kills) < kills_wanted:
        trials += 1
        work = base / f"trial{trials}"
        work.mkdir()
        for _ in range(rng.randint(1, 3)):
            phase = PHASES[len(kills) % len(PHASES)]
            kills.append({**attempt(phase, sweep, work, rng, durations), "trial": trials})
            mismatches += [f"trial {trials}: unreadable {p}" for p in kills[-1]["unreadable"]]
        for cmd in (sweep, FIGS):
            error = finish(cmd, work)
            if error:
                mismatches.append(f"trial {trials}: the resumed {Path(cmd[0]).name} failed:\n{error}")
        got = folder_state(work)
        mismatches += [f"trial {trials}: lost {d}" for d in expected.keys() - got.keys()]
        mismatches += [f"trial {trials}: extra {d}" for d in got.keys() - expected.keys()]
        mismatches += [f"trial {trials}: differs {d}" for d in expected.keys() & got.keys() if expected[d] != got[d]]
        mismatches += [f"trial {trials}: temp file {p}" for p in work.rglob("*.tmp")]
        csv_path = Path("results", "dai_thm3.csv")
        if not (work / csv_path).exists() or (work / csv_path).read_bytes() != (reference / csv_path).read_bytes():
            mismatches.append(f"trial {trials}: results/dai_thm3.csv differs")
        shutil.rmtree(work)
        phases = ", ".join(k["phase"] for k in kills if k["trial"] == trials and k["killed"])
        print(f"trial {trials}: killed in {phases or 'none (the command had ended)'}; mismatches so far: "
              f"{len(mismatches)}", flush=True)
    survived = [k for k in kills if k["killed"]]
    print(f"{len(survived)} kills survived in {trials} trials ({len(expected)} run folders each); "
          f"mismatches: {len(mismatches)}")
    for phase in PHASES:
        ks = [k for k in survived if k["phase"] == phase]
        print(f"  {phase}: {len(ks)} kills, {sum(k['in_phase'] for k in ks)} inside the phase")
    for m in mismatches:
        print("  MISMATCH", m)
    if figure:
        draw(survived, len(mismatches), len(expected), figure.with_suffix(""))
    return len(mismatches)


def draw(kills: list[dict], mismatches: int, folders: int, stem: Path) -> None:
    """The kills by phase and time after their command started, to ``<stem>.png`` and ``<stem>.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samrepro.figures import save

    fig, ax = plt.subplots(figsize=(7, 2.8))
    for i, phase in enumerate(PHASES):
        ks = [k for k in kills if k["phase"] == phase]
        ax.scatter([k["at"] for k in ks], [i] * len(ks), marker="x", color="C3", label="SIGKILL" if i == 0 else None)
    ax.set_yticks(range(len(PHASES)), PHASES)
    ax.set_xlabel("time of the kill after the command started (s)")
    ax.set_title(f"fault drill: {len(kills)} kills, each resumed; {folders} run folders compared "
                 f"with an uninterrupted run: {mismatches} mismatches", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save(fig, stem)


if __name__ == "__main__":
    main()
