"""Fault drill: SIGKILL (or SIGTERM) samrepro at random moments, resume after each kill, and compare every run
folder with an uninterrupted run of the same work.

    python scripts/fault_drill.py [--kills 24] [--seed 0] [--grid 15] [--steps 400] [--signal KILL]
                                  [--sweeps quadratic,matrix_sensing,sparse_coding]
                                  [--figure results/figures/fault_drill.png]
    python scripts/fault_drill.py --kills 1 --grid 2 --steps 20     # a smoke run: about a minute

The work is three batched sweeps of mixed configurations and ``samrepro-figs dai_thm3`` (its sweep, its CSV
and its figure). The sweeps: GD, SAM and USAM on a quadratic over a 15 × 15 grid of η and ρ by default (675
runs, USAM diverging in part of it); on matrix sensing (d = 9, m = 45: 28 configurations of η, ρ and seed)
and on sparse coding (d = 15, 45 samples: 20 configurations), these two for 10 × the steps, each with
configurations that diverge within their first steps and leave the batch, so that a resumed batch is
smaller than the first one: a configuration must get the same bytes in either. Kills land in three
phases, chosen in turn (the sweep of a sweep phase too): during training (before any summary of that
sweep is written), during its summary writes (the first summary.json is watched for: a diverged
configuration's early in training, else those at the end of the batch), and during ``samrepro-figs``
(its CSV made stale first, killed as the CSV's or the figure's temp file appears). ``--signal TERM``
sends SIGTERM instead of SIGKILL (to the process group, then waits for it to exit): samrepro treats it as
an interruption (rows flushed, status ``interrupted``), and the resumed work must give the same bytes
too. After each kill the drill checks that every summary.json and metrics.csv on disk parses, then runs
the command again; a trial may be killed up to three times before its last, uninterrupted run of every
command. Finally every run folder must equal the reference: byte-identical metrics.csv, one summary.json
with the same status, steps and final metrics, no folder lost, none extra, no temp file left; and
results/dai_thm3.csv byte-identical. It prints kills survived and mismatches (both must be as stated:
mismatches 0; exit code 1 otherwise) and, with ``--figure PATH``, draws the kills to PATH (.png, and its
.pdf). Everything else lives in a temporary folder, removed at the end.
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
SWEEPS = ("quadratic", "matrix_sensing", "sparse_coding")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


def sweep_commands(points: int, steps: int, names: tuple[str, ...] = SWEEPS) -> dict[str, list[str]]:
    """Each sweep's command, by name: GD, SAM and USAM on a quadratic over a points × points grid of η = ρ =
    0.05·1.2^i, i < points, for ``steps`` steps; on matrix sensing and on sparse coding over small grids of η,
    ρ and seed with early divergences (USAM at large ρ; GD at η = 2 and a loss ceiling for sparse coding),
    for 10 × ``steps`` steps: their batches are small, and a kill must find them training after their
    early divergences have left them."""
    grid = ",".join(f"{v:.3g}" for v in [0.05 * 1.2**i for i in range(points)])
    commands = {
        "quadratic": ["task=quadratic", "task.eigenvalues=[4.0,1.0,0.25]", "task.init=[1.0,1.0,1.0]", f"lr={grid}",
                      f"rho={grid}", "name=drill"],
        "matrix_sensing": ["task=matrix_sensing", "task.d=9", "task.r=2", "task.m=45", "lr=0.02,0.05",
                           "rho=0.05,0.5,2.0", "seed=0,1", "name=drill_matrix_sensing"],
        "sparse_coding": ["task=sparse_coding", "task.d=15", "task.n_train=45", "task.n_test=301",
                          "loss_ceiling=2.0", "lr=0.2,2.0", "rho=0.5,3.0", "seed=0,1", "name=drill_sparse_coding"],
    }
    return {name: [str(BIN / "samrepro"), "-m", *commands[name], "opt=gd,sam,usam", "progress=false",
                   f"steps={n}", f"log_every={max(1, n // 20)}"]
            for name in names for n in [steps if name == "quadratic" else 10 * steps]}


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def finish(cmd: list[str], cwd: Path) -> str | None:
    """Runs ``cmd`` to the end; returns its error output if it failed."""
    done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    return None if done.returncode == 0 else done.stderr[-3000:]


def kill(proc: subprocess.Popen, sig: signal.Signals = signal.SIGKILL) -> bool | None:
    """Sends ``sig`` to the process group and waits for it to end: False if it had already ended, None if it
    was still running two minutes after a SIGTERM (it is then SIGKILLed)."""
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    return True


def wait_for(predicate, proc: subprocess.Popen, limit: float = 600.0) -> bool:
    deadline = time.monotonic() + limit
    while proc.poll() is None and time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def summaries(root: Path, sweep: str = "*") -> list[Path]:
    """The summary.json files under ``root`` (of the sweep named ``sweep``)."""
    return list(root.glob(f"runs/{sweep}/*/summary.json"))


def sweep_name(cmd: list[str]) -> str:
    """The ``name=`` of a sweep's command: its folder under runs/."""
    return next(arg.partition("=")[2] for arg in cmd if arg.startswith("name="))


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


def attempt(phase: str, sweep: str, cmd: list[str], work: Path, rng: random.Random, durations: dict,
            sig: signal.Signals) -> dict:
    """One kill in ``phase`` (of the sweep ``sweep``, whose command is ``cmd``, or of samrepro-figs); returns
    what was killed and when."""
    if phase == "samrepro-figs":
        cmd, sweep = FIGS, None
    proc = start(cmd, work)
    t0 = time.monotonic()
    if phase == "training":
        time.sleep(rng.uniform(0.3, max(0.4, durations[sweep] * 0.9)))
        in_phase = not summaries(work, sweep_name(cmd))
    elif phase == "summary writes":
        in_phase = wait_for(lambda: summaries(work, sweep_name(cmd)), proc)
        time.sleep(rng.uniform(0, 0.6))
    else:  # the CSV is made stale, so that samrepro-figs rewrites it; killed as its temp file appears
        (work / "results" / "dai_thm3.csv").unlink(missing_ok=True)
        writing = [(work / "results", "dai_thm3.csv.*.tmp"), (work / "results" / "figures", "dai_thm3.png.*.tmp")]
        in_phase = wait_for(lambda: any(any(folder.glob(name)) for folder, name in writing), proc)
    at = time.monotonic() - t0
    killed = kill(proc, sig)
    return {"phase": phase, "sweep": sweep, "at": at, "killed": killed is not False, "hung": killed is None,
            "returncode": proc.returncode, "in_phase": in_phase, "unreadable": check_readable(work)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=24, help="kills to survive (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times and phases")
    parser.add_argument("--grid", type=int, default=15, help="η and ρ values of the sweep (default: 15)")
    parser.add_argument("--steps", type=int, default=400, help="steps of each run of the sweep (default: 400)")
    parser.add_argument("--signal", choices=list(SIGNALS), default="KILL",
                        help="the signal of a kill: KILL (default) or TERM (an interruption)")
    parser.add_argument("--sweeps", default=",".join(SWEEPS),
                        help=f"the sweeps to run, comma-separated (default: {','.join(SWEEPS)})")
    parser.add_argument("--figure", type=Path, help="draw the kills to this file (.png and .pdf); default: none")
    args = parser.parse_args()
    for key in ("kills", "grid", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: must be an integer > 0")
    names = tuple(args.sweeps.split(","))
    if not names or any(n not in SWEEPS for n in names) or len(set(names)) != len(names):
        parser.error(f"--sweeps {args.sweeps}: must be distinct names among {', '.join(SWEEPS)}")
    base = Path(tempfile.mkdtemp(prefix="samrepro-drill-"))
    try:
        mismatches = drill(sweep_commands(args.grid, args.steps, names), args.kills, random.Random(args.seed), base,
                           args.figure, SIGNALS[args.signal])
    finally:
        shutil.rmtree(base)
    sys.exit(1 if mismatches else 0)


def drill(sweeps: dict[str, list[str]], kills_wanted: int, rng: random.Random, base: Path, figure: Path | None,
          sig: signal.Signals = signal.SIGKILL) -> int:
    """The reference run, then trials until ``kills_wanted`` kills (``sig``) landed; prints and returns the
    mismatches."""
    reference = base / "reference"
    reference.mkdir()
    durations = {}
    commands = {**sweeps, "samrepro-figs dai_thm3": FIGS}
    for name, cmd in commands.items():
        t = time.monotonic()
        if error := finish(cmd, reference):
            sys.exit(f"the uninterrupted {name} failed:\n{error}")
        durations[name] = time.monotonic() - t
    print(f"signal: {sig.name}; reference: " + ", ".join(f"{name} {t:.1f} s" for name, t in durations.items()),
          flush=True)
    expected = folder_state(reference)
    kills, trials, mismatches = [], 0, []
    while sum(k["killed"] for k in kills) < kills_wanted:
        trials += 1
        work = base / f"trial{trials}"
        work.mkdir()
        for _ in range(rng.randint(1, 3)):
            phase = PHASES[len(kills) % len(PHASES)]
            sweep = list(sweeps)[len(kills) // len(PHASES) % len(sweeps)]
            kills.append({**attempt(phase, sweep, sweeps[sweep], work, rng, durations, sig), "trial": trials})
            mismatches += [f"trial {trials}: unreadable {p}" for p in kills[-1]["unreadable"]]
            if kills[-1]["hung"]:
                mismatches.append(f"trial {trials}: still running 2 minutes after {sig.name} ({phase})")
            if not kills[-1]["killed"] and kills[-1]["returncode"]:
                mismatches.append(f"trial {trials}: exit code {kills[-1]['returncode']} before the kill ({phase})")
        for cmd in commands.values():
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
        phases = ", ".join(k["phase"] + (f" ({k['sweep']})" if k["sweep"] else "")
                           for k in kills if k["trial"] == trials and k["killed"])
        print(f"trial {trials}: killed in {phases or 'none (the command had ended)'}; mismatches so far: "
              f"{len(mismatches)}", flush=True)
    survived = [k for k in kills if k["killed"]]
    print(f"{len(survived)} kills survived in {trials} trials ({len(expected)} run folders each); "
          f"mismatches: {len(mismatches)}")
    for phase in PHASES:
        ks = [k for k in survived if k["phase"] == phase]
        by_sweep = ", ".join(f"{name} {sum(k['sweep'] == name for k in ks)}" for name in sweeps)
        print(f"  {phase}: {len(ks)} kills, {sum(k['in_phase'] for k in ks)} inside the phase"
              + (f" ({by_sweep})" if phase != "samrepro-figs" else ""))
    if sig != signal.SIGKILL:
        codes = sorted({k["returncode"] for k in survived})
        print(f"  exit codes after {sig.name}: {', '.join(map(str, codes))} (130: interrupted by samrepro's handler)")
    for m in mismatches:
        print("  MISMATCH", m)
    if figure:
        draw(survived, len(mismatches), len(expected), figure.with_suffix(""), sig.name)
    return len(mismatches)


def draw(kills: list[dict], mismatches: int, folders: int, stem: Path, signal_name: str = "SIGKILL") -> None:
    """The kills by phase, sweep (its colour) and time after their command started, to ``<stem>.png`` and
    ``<stem>.pdf``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samrepro.figures import save

    fig, ax = plt.subplots(figsize=(7, 2.8))
    for j, sweep in enumerate([*SWEEPS, None]):
        ks = [k for k in kills if k["sweep"] == sweep]
        if ks:
            ax.scatter([k["at"] for k in ks], [PHASES.index(k["phase"]) for k in ks], marker="x", color=f"C{j}",
                       label=sweep or "samrepro-figs dai_thm3")
    ax.set_yticks(range(len(PHASES)), PHASES)
    ax.set_xlabel("time of the kill after the command started (s)")
    ax.set_title(f"fault drill: {len(kills)} × {signal_name}, each resumed; {folders} run folders compared "
                 f"with an uninterrupted run: {mismatches} mismatches", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="killed", title_fontsize=8)
    ax.grid(alpha=0.3)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save(fig, stem)


if __name__ == "__main__":
    main()
