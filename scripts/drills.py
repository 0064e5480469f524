"""Drills of samrepro's guarantees (issue #20): processes racing on one folder, and inputs changed under a result.

    python scripts/drills.py race  [--trials 10] [--racers 4] [--seed 0] [--grid 5] [--steps 300] [--no-figs]
                                   [--spawn] [--churn 3] [--figure PATH]          # about 2.5 min on 2 cores
    python scripts/drills.py stale [--changes abcdefg] [--figure PATH]            # about 1.5 min on 2 cores
    python scripts/drills.py race --trials 1 --grid 2 --steps 20 --churn 1      # smoke runs: under 20 s each
    python scripts/drills.py stale --changes c

``race``: in each trial, ``--racers`` processes run one command on one folder at once, three times over: a
batched sweep (``samrepro -m``: GD, SAM and USAM on a quadratic over a grid × grid of η and ρ, ``name=race``),
a single run (``samrepro … hydra.run.dir=single``) and ``samrepro-figs dai_thm3 --results results --claims``.
Racers start together: each is forked from this process once samrepro, torch, pandas and matplotlib are
imported, and waits for a common start time, the first two exactly at it and the others after a random delay
of up to 1.2 × the command's uninterrupted time, so that they meet the folders free, locked, half written
and finished (``--spawn``: each racer is the console script itself, started by ``subprocess`` at its delay,
torch imported in each: a looser race). A racer may be refused by a live lock: exit code 2 and one line on
stderr (``samrepro-figs`` adds its line naming the failed figure); anything else on stderr, or another exit
code, is a mismatch and is printed. After each race the drill checks every run folder: its summary.json is
finished and its fingerprint is that of its config.yaml with the summary's inputs
(``samrepro.records.fingerprint``), metrics.csv has one row per logged step and, with config.yaml, is
byte-identical to the folder of one uninterrupted process (summary.json equal but for ``wall_seconds``); no
folder is lost or extra, no lock or temp file is left; ``results/`` (CSV, manifest, PNG, PDF, CLAIMS.md) is
byte-identical to the uninterrupted process's. It counts how often each run was computed in two independent
ways, which must agree and give exactly once: the summary.json writes (every racer's ``os.replace`` calls,
which is how samrepro writes every file, are logged by the racer to a file of this drill) and the racers'
own reports (the sweep's ``N runs: …, k skipped`` line, a single run's ``skipped`` line). Finally the command
is run once more: it must skip everything and write no run file. After the trials, a lock churn: the racers
take and release one existing run folder's lock (``samrepro.records.locked``) in a loop for ``--churn``
seconds; each attempt must hold it or be refused by its live holder.

``stale``: for each change of what a finished result was made from, a small command runs, the input is
changed, the same command runs again, and the second run is RECOMPUTED (summary.json rewritten with the new
inputs), REFUSED (exit code 2 and one line naming what changed) or SERVED (the old result returned). The
changes: a data folder's files (a generated CIFAR-10 copy), a ``task.init`` checkpoint re-made, the recorded
device (no GPU here: a finished folder's ``inputs.device`` edited to ``cuda``, as a GPU run would have written
it, with its fingerprint, and without), samrepro's code (a copy of the package on PYTHONPATH with a comment
added to optim.py), an experiment's grid (a value removed, then one added) and drawing code for
``samrepro-figs`` (also code the drawing imports from outside samrepro/figures), and a stage phase's step
cap raised (a tiny stage on the generated CIFAR-10, continued and compared with a fresh run of the larger
cap), with a control row (no change: skipped). It prints a table (change, expected, observed, verdict); a row
SERVED where it should not be is a FAIL, and any FAIL gives exit code 1.

Both print a verdict and, with ``--figure PATH``, draw it to PATH (.png) and its .pdf. Everything else lives
in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from samrepro.generated import write_cifar10  # numpy only: --help stays light

BIN = Path(sys.executable).parent
PACKAGE = Path(__file__).resolve().parent.parent / "samrepro"
QUADRATIC = ["task=quadratic", "task.eigenvalues=[4.0,1.0,0.25]", "task.init=[1.0,1.0,1.0]", "progress=false"]
REFUSAL = re.compile(r"samrepro: error: \S.*: (in use by process \d+ on \S+ since \S+; run it again once that one "
                     r"ends \(or delete \S+ if that process is gone\)|its lock \S+ is being taken over by another "
                     r"process; run it again)")
FIGS_FAILED = "samrepro-figs: error: 1 figure(s) failed: dai_thm3"
EVENTS = "SAMREPRO_DRILL_EVENTS"
KINDS = ("sweep", "single", "figs")


# ------------------------------------------------------------------------------------------------- racers

def log_replaces(events: str) -> None:
    """Appends ``<pid>\\t<target>`` to the file ``events`` at each ``os.replace`` of this process: samrepro
    writes every file by a temp file and os.replace (samrepro.records.write_atomic)."""
    replace = os.replace

    def logged(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()}\t{os.path.abspath(dst)}\n".encode())
        finally:
            os.close(fd)

    os.replace = logged


SITECUSTOMIZE = f'''import os
if os.environ.get("{EVENTS}"):
    import sys
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from drills import log_replaces
    log_replaces(os.environ["{EVENTS}"])
    del sys.path[0]
'''


def churn(folder: str, seconds: str) -> None:
    """Takes and releases the lock of ``folder`` (samrepro.records.locked) in a loop for ``seconds``; prints
    how often it held it, was refused by its holder, and met anything else (by type and message)."""
    from samrepro.config import ConfigError
    from samrepro.records import locked

    counts = {"held": 0, "refused": 0, "errors": {}}
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        try:
            with locked([Path(folder)]):
                counts["held"] += 1
        except Exception as err:  # noqa: BLE001 - every kind is tallied
            if isinstance(err, ConfigError) and REFUSAL.fullmatch(f"samrepro: error: {err}"):
                counts["refused"] += 1
            else:
                what = re.sub(r"\d{3,}", "N", f"{type(err).__name__}: {err}")
                counts["errors"][what] = counts["errors"].get(what, 0) + 1
    print(json.dumps(counts))


def entry(kind: str, args: list[str]) -> None:
    """The console script of ``kind`` (pyproject.toml's [project.scripts]), run in this process."""
    if kind == "locks":
        churn(*args)
    elif kind == "figs":
        from samrepro.figures.make import main
        main(args)
    else:
        from samrepro.cli import main
        sys.argv = ["samrepro", *args]
        main()


def fork_racer(kind: str, args: list[str], cwd: Path, out: Path, events: Path, start_at: float) -> int:
    """Forks a racer that runs ``kind`` with ``args`` in ``cwd`` at ``start_at`` (time.time()); its stdout
    and stderr go to ``out``.out|.err. Returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(cwd)
        for fd, suffix in ((1, ".out"), (2, ".err")):
            f = os.open(str(out) + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        log_replaces(str(events))
        time.sleep(max(0.0, start_at - time.time()))
        try:
            entry(kind, args)
            code = 0
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            if not isinstance(err.code, (int, type(None))):
                print(err.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def race(kind: str, args: list[str], cwd: Path, delays: list[float], tag: str, spawn: bool, hook: Path) -> list[dict]:
    """Runs ``len(delays)`` racers of one command on ``cwd``, racer i starting ``delays[i]`` s after a common
    start; returns each racer's exit code, stdout, stderr, delay and pid, and the os.replace log."""
    logs = cwd.parent / "logs"
    logs.mkdir(exist_ok=True)
    events = logs / f"{tag}.events"
    events.touch()
    racers = []
    if spawn:
        env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               EVENTS: str(events)}
        script = BIN / ("samrepro-figs" if kind == "figs" else "samrepro")
        t0 = time.monotonic()
        for i in sorted(range(len(delays)), key=lambda i: delays[i]):
            time.sleep(max(0.0, t0 + delays[i] - time.monotonic()))
            out = logs / f"{tag}.{i}"
            with open(str(out) + ".out", "w") as o, open(str(out) + ".err", "w") as e:
                proc = subprocess.Popen([str(script), *args], cwd=cwd, stdout=o, stderr=e, env=env)
            racers.append({"i": i, "proc": proc, "out": out, "delay": delays[i], "pid": proc.pid})
        for r in racers:
            r["rc"] = r.pop("proc").wait(timeout=900)
    else:
        start_at = time.time() + 0.2  # every racer forked by then
        for i, delay in enumerate(delays):
            out = logs / f"{tag}.{i}"
            racers.append({"i": i, "pid": fork_racer(kind, args, cwd, out, events, start_at + delay), "out": out,
                           "delay": delay})
        for r in racers:
            _, status = os.waitpid(r["pid"], 0)
            r["rc"] = os.waitstatus_to_exitcode(status)
    for r in racers:
        r["stdout"] = Path(str(r["out"]) + ".out").read_text()
        r["stderr"] = Path(str(r["out"]) + ".err").read_text()
    writes = [line.split("\t", 1) for line in events.read_text().splitlines()]
    return sorted(racers, key=lambda r: r["i"]), [(int(pid), Path(path)) for pid, path in writes]


def stderr_verdict(kind: str, racer: dict) -> str | None:
    """None if the racer ended as allowed: exit code 0 and nothing on stderr, or exit code 2 refused by a
    live lock in one line (samrepro-figs: that line and its line naming the failed figure); else why not."""
    lines = racer["stderr"].splitlines()
    if racer["rc"] == 0 and not racer["stderr"].strip():
        return None
    if racer["rc"] == 2 and lines and REFUSAL.fullmatch(lines[0]) and lines[1:] == ([FIGS_FAILED] if kind == "figs"
                                                                                    else []):
        return None
    return f"exit code {racer['rc']}, stderr:\n" + "\n".join("      | " + line for line in lines[-30:])


def computed_by_log(kind: str, racer: dict) -> int:
    """How many runs the racer says it computed (0 for a refused racer)."""
    if racer["rc"] != 0:
        return 0
    if kind == "single":
        return 0 if "skipped 1 finished run(s)" in racer["stdout"] else 1
    report = re.search(r"(\d+) runs: (.*) in [\d.]+ s", racer["stdout"])
    if not report:
        return -10**6  # no report: counted as a mismatch
    skipped = re.search(r"(\d+) skipped", report[2])
    return int(report[1]) - (int(skipped[1]) if skipped else 0)


def run_folders(root: Path) -> list[Path]:
    """Every folder below ``root`` holding a run's record or result."""
    names = ("config.yaml", "summary.json", "metrics.csv")
    return sorted({p.parent.relative_to(root) for name in names for p in root.rglob(name)
                   if ".hydra" not in p.parts[len(root.parts):]})


ROOTS = {"sweep": Path("runs/race"), "single": Path("single"), "figs": Path("runs/dai_thm3")}


def in_root(folders: list[Path], root: Path) -> list[Path]:
    return [f for f in folders if f == root or root in f.parents]


def logged_rows(steps_done: int, log_every: int) -> int:
    """metrics.csv's rows of a run that stopped at ``steps_done``: step 0, every log_every-th, and the last."""
    return len(set(range(0, steps_done + 1, log_every)) | {steps_done})


def check_folder(work: Path, reference: Path, rel: Path) -> list[str]:
    """One run folder against the uninterrupted process's (see the module docstring)."""
    from samrepro.records import FINISHED, fingerprint, load_yaml

    d, ref = work / rel, reference / rel
    problems = []
    try:
        summary = json.loads((d / "summary.json").read_text())
        config = load_yaml(d / "config.yaml")
        rows = (d / "metrics.csv").read_text().splitlines()[1:]
    except (OSError, ValueError) as err:
        return [f"{rel}: unreadable or missing ({type(err).__name__}: {err})"]
    if summary.get("status") not in FINISHED:
        problems.append(f"{rel}: summary status {summary.get('status')}")
    if summary.get("fingerprint") != fingerprint(config, summary.get("inputs")):
        problems.append(f"{rel}: summary fingerprint does not match config.yaml with the summary's inputs")
    if len(rows) != logged_rows(summary.get("steps_done", -1), config["log_every"]):
        problems.append(f"{rel}: {len(rows)} metrics rows for steps_done={summary.get('steps_done')}, "
                        f"log_every={config['log_every']}")
    for name in ("metrics.csv", "config.yaml"):
        if (d / name).read_bytes() != (ref / name).read_bytes():
            problems.append(f"{rel}: {name} differs from the uninterrupted process's")
    expected = json.loads((ref / "summary.json").read_text())
    if {**summary, "wall_seconds": 0} != {**expected, "wall_seconds": 0}:
        problems.append(f"{rel}: summary.json differs from the uninterrupted process's (beyond wall_seconds)")
    return problems


RESULT_FILES = ("results/dai_thm3.csv", "results/dai_thm3.manifest.json", "results/figures/dai_thm3.png",
                "results/figures/dai_thm3.pdf", "results/CLAIMS.md")


def compare_results(work: Path, reference: Path) -> list[str]:
    return [f"{name} {'missing' if not (work / name).exists() else 'differs from the uninterrupted process’s'}"
            for name in RESULT_FILES if not (work / name).exists()
            or (work / name).read_bytes() != (reference / name).read_bytes()]


def race_commands(grid: int, steps: int) -> dict[str, list[str]]:
    values = ",".join(f"{0.05 * 1.5**i:.3g}" for i in range(grid))
    log_every = f"log_every={max(1, steps // 20)}"
    return {"sweep": ["-m", *QUADRATIC, "opt=gd,sam,usam", f"lr={values}", f"rho={values}", f"steps={steps}",
                      log_every, "name=race"],
            "single": [*QUADRATIC, "opt=sam", "lr=0.3", "rho=0.1", f"steps={steps}", log_every, "hydra.run.dir=single"],
            "figs": ["dai_thm3", "--results", "results", "--claims"]}


def race_drill(args: argparse.Namespace, base: Path) -> int:
    commands = race_commands(args.grid, args.steps)
    kinds = [k for k in KINDS if k != "figs" or not args.no_figs]
    hook = base / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if not args.spawn:  # imported once here, so that forked racers start within milliseconds of each other
        import matplotlib
        matplotlib.use("Agg")
        import samrepro.cli  # noqa: F401
        import samrepro.figures.make  # noqa: F401
        import samrepro.runner  # noqa: F401
        from samrepro.figures import registry
        registry()
    reference = base / "reference" / "work"
    reference.mkdir(parents=True)
    durations = {}
    for kind in kinds:
        t = time.monotonic()
        (racer,), _ = race(kind, commands[kind], reference, [0.0], f"reference-{kind}", args.spawn, hook)
        durations[kind] = time.monotonic() - t
        if racer["rc"] != 0:
            sys.exit(f"the uninterrupted {kind} failed:\n{racer['stderr'][-3000:]}")
    folders = {k: in_root(run_folders(reference), ROOTS[k]) for k in kinds}
    print(f"reference: {', '.join(f'{k} {durations[k]:.1f} s ({len(folders[k])} run folders)' for k in kinds)}; "
          f"{args.racers} racers each, {'spawned' if args.spawn else 'forked'}", flush=True)
    rng = random.Random(args.seed)
    trials = []
    for t in range(1, args.trials + 1):
        work = base / f"trial{t}" / "work"
        work.mkdir(parents=True)
        trial = {"trial": t, "checked": 0, "refusals": 0, "mismatches": [], "writes": 0, "reported": 0}
        for kind in kinds:
            spread = 1.2 * durations[kind]
            delays = [0.0, 0.0][:args.racers] + [rng.uniform(0, spread) for _ in range(args.racers - 2)]
            racers, writes = race(kind, commands[kind], work, delays, f"{t}-{kind}", args.spawn, hook)
            bad = trial["mismatches"]
            for r in racers:
                why = stderr_verdict(kind, r)
                if why:
                    bad.append(f"{kind} racer {r['i']} (delay {r['delay']:.2f} s): {why}")
            trial["refusals"] += sum(r["rc"] == 2 for r in racers)
            expected = folders[kind]
            present = in_root(run_folders(work), ROOTS[kind])
            bad += [f"{kind}: lost {f}" for f in sorted(set(expected) - set(present))]
            bad += [f"{kind}: extra {f}" for f in sorted(set(present) - set(expected))]
            for rel in sorted(set(expected) & set(present)):
                bad += [f"{kind}: {p}" for p in check_folder(work, reference, rel)]
            summary_writes = {f: sum(path == (work / f / "summary.json").absolute() for _, path in writes)
                              for f in expected}
            by_log = sum(computed_by_log(kind, r) for r in racers)
            trial["writes"] += sum(summary_writes.values())
            trial["reported"] += by_log
            twice = {f: n for f, n in summary_writes.items() if n != 1}
            bad += [f"{kind}: {f} computed {n} times (summary.json writes)" for f, n in sorted(twice.items())[:5]]
            if by_log != len(expected):
                bad.append(f"{kind}: the racers' reports say {by_log} runs computed, {len(expected)} expected")
            if kind == "figs":
                bad += [f"figs after the race: {p}" for p in compare_results(work, reference)]
            leftovers = [p for p in work.rglob("*") if p.name.endswith(".tmp") or p.name == ".samrepro.lock"]
            bad += [f"{kind}: left {p.relative_to(work)}" for p in leftovers[:5]]
            (again,), again_writes = race(kind, commands[kind], work, [0.0], f"{t}-{kind}-again", args.spawn, hook)
            if stderr_verdict(kind, again) or again["rc"] != 0 or computed_by_log(kind, again) != 0:
                bad.append(f"{kind}: the command run again did not skip everything: exit code {again['rc']}, "
                           f"{again['stderr'][-500:]!r}")
            wrote = [p for _, p in again_writes if not (kind == "figs" and p.name == "CLAIMS.md")]
            bad += [f"{kind}: the command run again wrote {p.relative_to(work.absolute())}" for p in wrote[:5]]
            if kind == "figs":
                bad += [f"figs after running it again: {p}" for p in compare_results(work, reference)]
            trial["checked"] += len(expected)
            trial.setdefault("computers", {})[kind] = sorted({pid for pid, p in writes if p.name == "summary.json"})
            trial.setdefault("rc", {})[kind] = [r["rc"] for r in racers]
        shutil.rmtree(work.parent)
        trials.append(trial)
        codes = "; ".join(f"{k}: exit codes {' '.join(map(str, trial['rc'][k]))}" for k in kinds)
        print(f"trial {t}: {trial['checked']} run folders checked, {trial['refusals']} refusals, "
              f"{len(trial['mismatches'])} mismatches ({codes})", flush=True)
    mismatches = [f"trial {tr['trial']}: {m}" for tr in trials for m in tr["mismatches"]]
    if args.churn > 0:
        mismatches += lock_churn(args, base, hook)
    print(f"race: {len(trials)} trials × {len(kinds)} commands × {args.racers} racers; "
          f"{sum(tr['checked'] for tr in trials)} run folders checked, {sum(tr['refusals'] for tr in trials)} "
          f"refusals (exit code 2, one line), every run computed once: "
          f"{'yes' if not any('computed' in m for m in mismatches) else 'NO'} (summary.json writes "
          f"{sum(tr['writes'] for tr in trials)}, racers' reports {sum(tr['reported'] for tr in trials)}); "
          f"mismatches: {len(mismatches)}")
    for m in mismatches:
        print("  MISMATCH", m)
    if args.figure:
        draw_race(trials, args.figure)
    return len(mismatches)


def lock_churn(args: argparse.Namespace, base: Path, hook: Path) -> list[str]:
    """``--racers`` processes take and release one folder's lock in a loop for ``--churn`` seconds: every
    attempt must hold the lock or be refused by its live holder in one line (the lock's narrowest windows:
    a holder releasing it while another reads who holds it)."""
    work = base / "churn" / "work"
    (work / "run").mkdir(parents=True)  # a run folder that exists, as samrepro's own runs lock them
    if args.spawn:
        racers = [{"i": i, "proc": subprocess.Popen([sys.executable, __file__, "_churn", str(work / "run"),
                                                     str(args.churn)], stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, text=True)} for i in range(args.racers)]
        for r in racers:
            r["stdout"], r["stderr"] = r["proc"].communicate(timeout=600)
            r["rc"] = r.pop("proc").returncode
    else:
        racers, _ = race("locks", [str(work / "run"), str(args.churn)], work, [0.0] * args.racers, "churn",
                         False, hook)
    bad = [f"lock churn racer {r['i']}: exit code {r['rc']}, stderr:\n" + "\n".join(
        "      | " + line for line in r["stderr"].splitlines()[-12:]) for r in racers if r["rc"] or r["stderr"]]
    counts = [json.loads(r["stdout"]) for r in racers if r["rc"] == 0 and r["stdout"].strip()]
    errors: dict[str, int] = {}
    for c in counts:
        for what, n in c["errors"].items():
            errors[what] = errors.get(what, 0) + n
    bad += [f"lock churn: {n} × {what}" for what, n in errors.items()]
    bad += [f"lock churn: left {p.relative_to(work)}" for p in work.rglob("*") if p.is_file()]
    print(f"lock churn: {args.racers} processes for {args.churn:g} s took one folder's lock "
          f"{sum(c['held'] for c in counts):,} times, were refused by its live holder "
          f"{sum(c['refused'] for c in counts):,} times, met anything else {sum(errors.values())} times", flush=True)
    return bad


def draw_race(trials: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samrepro.figures import save

    x = [tr["trial"] for tr in trials]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4), sharex=True, height_ratios=(1, 1))
    top.bar(x, [tr["checked"] for tr in trials], color="C0")
    top.set_ylabel("run folders\nchecked")
    bottom.bar([i - 0.2 for i in x], [tr["refusals"] for tr in trials], width=0.4, color="C1",
               label="refused (exit 2, one line)")
    bottom.bar([i + 0.2 for i in x], [len(tr["mismatches"]) for tr in trials], width=0.4, color="C3",
               label="mismatches")
    bottom.set_ylabel("racers / mismatches")
    bottom.set_xlabel("trial")
    bottom.set_xticks(x)
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over one
    total = sum(len(tr["mismatches"]) for tr in trials)
    top.set_title(f"race drill: {len(trials)} trials, {sum(tr['checked'] for tr in trials)} run folders checked, "
                  f"{total} mismatches", fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3, axis="y")
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path.with_suffix(""))


# ------------------------------------------------------------------------------------------------- stale


def file_state(path: Path) -> tuple | None:
    return (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) if path.exists() else None


class Stale:
    """The rows of the stale-input matrix, each a dict: change, expected, observed, verdict, note."""

    def __init__(self, base: Path):
        self.base = base
        self.rows: list[dict] = []
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SAMREPRO_DATA")}

    def run(self, cmd: list[str], cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
        script = BIN / cmd[0]
        return subprocess.run([str(script), *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    def observe(self, proc: subprocess.CompletedProcess, watched: list[Path], before: list) -> str:
        """RECOMPUTED (exit code 0, a watched file rewritten), SERVED (exit code 0, none rewritten), REFUSED
        (exit code 2, one line on stderr) or ERROR."""
        if proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1:
            return "REFUSED"
        if proc.returncode != 0:
            return "ERROR"
        return "RECOMPUTED" if [file_state(p) for p in watched] != before else "SERVED"

    def add(self, change: str, expected: str, observed: str, note: str = "", ok: bool | None = None) -> None:
        if ok is None:
            ok = observed == expected
        verdict = "PASS" if ok else "FAIL"
        self.rows.append({"change": change, "expected": expected, "observed": observed, "verdict": verdict,
                          "note": note})

    def package_copy(self, name: str, edits: dict[str, str | None], start: Path = PACKAGE) -> Path:
        """A copy of the samrepro package (its config files included) in ``<base>/<name>/samrepro``, with
        ``edits``: file → text appended (a comment), or a (old, new) replacement given as 'old\\0new'."""
        root = self.base / name
        shutil.copytree(start, root / "samrepro", symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for rel, edit in edits.items():
            path = root / "samrepro" / rel
            text = path.read_text()
            if "\0" in edit:
                old, new = edit.split("\0")
                assert old in text, (rel, old)
                path.write_text(text.replace(old, new))
            else:
                path.write_text(text + edit)
        return root

    # -------------------------------------------------------------------------- run folders (samrepro)
    def quadratic_chain(self) -> None:
        """No change (control), the recorded device changed (with and without its fingerprint)."""
        from samrepro.records import fingerprint, load_yaml
        from samrepro.runner import resolve_device

        work = self.base / "quadratic"
        work.mkdir()
        cmd = ["samrepro", *QUADRATIC, "opt=sam", "lr=0.2", "rho=0.1", "steps=50", "device=cpu", "hydra.run.dir=run"]
        first = self.run(cmd, work)
        assert first.returncode == 0, first.stderr
        run = work / "run"
        watched = [run / "summary.json", run / "metrics.csv"]
        before = [file_state(p) for p in watched]
        control = "auto" if resolve_device("auto").type == "cpu" else "cpu"  # auto is the GPU where there is one
        again = self.run([*cmd[:-2], f"device={control}", cmd[-1]], work)
        self.add(f"none (control): the same command, device={control}" + (" (= cpu here)" if control == "auto" else ""),
                 "SKIPPED", self.observe(again, watched, before).replace("SERVED", "SKIPPED"),
                 "a finished run of the same config and inputs is skipped, not rewritten")
        summary = json.loads((run / "summary.json").read_text())
        summary["inputs"]["device"] = "cuda"
        summary["fingerprint"] = fingerprint(load_yaml(run / "config.yaml"), summary["inputs"])
        (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        before = [file_state(p) for p in watched]
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        now = json.loads((run / "summary.json").read_text())["inputs"]["device"]
        self.add("(c) device: recorded inputs.device=cuda, fingerprint updated", "RECOMPUTED", observed,
                 f"no GPU here: a finished folder's summary.json edited as a GPU run would have written it, rerun "
                 f"with device=cpu; inputs.device now {now}; says 'recomputed … (device)': "
                 f"{'recomputed' in proc.stdout and '(device)' in proc.stdout}",
                 ok=observed == "RECOMPUTED" and now == "cpu")
        summary = json.loads((run / "summary.json").read_text())
        summary["inputs"]["device"] = "cuda"  # the fingerprint left as it was
        (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        before = [file_state(p) for p in watched]
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        self.add("(c') device: inputs.device=cuda, fingerprint not updated", "REFUSED", observed,
                 "a tampered summary: " + proc.stderr.strip()[:160] + "…",
                 ok=observed == "REFUSED" and "does not belong to its config.yaml" in proc.stderr)

    def code_chain(self) -> None:
        """(d) samrepro's code changed: a comment added to optim.py, in a copy of the package on PYTHONPATH."""
        work = self.base / "code"
        work.mkdir()
        cmd = ["samrepro", *QUADRATIC, "opt=usam", "lr=0.2", "rho=0.1", "steps=50", "hydra.run.dir=run"]
        first = self.run(cmd, work)
        assert first.returncode == 0, first.stderr
        run = work / "run"
        watched = [run / "summary.json", run / "metrics.csv"]
        old = json.loads((run / "summary.json").read_text())["inputs"]["code"]
        metrics = (run / "metrics.csv").read_bytes()
        before = [file_state(p) for p in watched]
        copy = self.package_copy("code-pkg", {"optim.py": "\n# a comment: the code changed, its results not\n"})
        proc = self.run(cmd, work, pythonpath=copy)
        observed = self.observe(proc, watched, before)
        new = json.loads((run / "summary.json").read_text())["inputs"]["code"]
        self.add("(d) code: a comment added to samrepro/optim.py", "RECOMPUTED", observed,
                 f"a copy of the package on PYTHONPATH; inputs.code {old} → {new}; rows byte-identical: "
                 f"{metrics == (run / 'metrics.csv').read_bytes()}",
                 ok=observed == "RECOMPUTED" and new != old and "(code)" in proc.stdout)

    def data_chain(self) -> None:
        """(a) a data_root's files changed (a generated CIFAR-10 copy), and changed keeping names, sizes, times."""
        work = self.base / "data"
        data = write_cifar10(work / "cifar", 40, 20)
        cmd = ["samrepro", "task=cifar10", f"task.data_root={data}", *TINY_CIFAR, "steps=2", "hydra.run.dir=run"]
        first = self.run(cmd, work)
        assert first.returncode == 0, first.stderr
        run = work / "run"
        watched = [run / "summary.json", run / "metrics.csv"]
        old = json.loads((run / "summary.json").read_text())["inputs"]["files"]
        before = [file_state(p) for p in watched]
        write_cifar10(work / "cifar", 40, 20, seed=1)  # the data re-made: other content, sizes and times
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        new = json.loads((run / "summary.json").read_text())["inputs"]["files"]
        self.add("(a) data: task.data_root's files re-made, other content", "RECOMPUTED", observed,
                 f"a generated CIFAR-10 copy, re-made with another seed; inputs.files {old} → {new}",
                 ok=observed == "RECOMPUTED" and new != old)
        batch = data / "cifar-10-batches-py" / "data_batch_1"
        stat = batch.stat()
        content = pickle.loads(batch.read_bytes())
        content["labels"] = [(y + 1) % 10 for y in content["labels"]]  # other labels: the same size
        batch.write_bytes(pickle.dumps(content, 2))
        os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        same = batch.stat().st_size == stat.st_size and batch.stat().st_mtime_ns == stat.st_mtime_ns
        before = [file_state(p) for p in watched]
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        self.add("(a') data: a data_root file changed, size and mtime kept", "RECOMPUTED", observed,
                 f"data_batch_1's labels rotated, its mtime restored (size and mtime equal: {same}): a data_root "
                 "is hashed by its files' contents")

    def init_chain(self) -> None:
        """(b) a task.init checkpoint re-made at the same path, and re-made keeping its size and mtime."""
        import torch

        from samrepro.tasks.cifar10 import make_model

        work = self.base / "init"
        data = write_cifar10(work / "cifar", 40, 20)
        ckpt = work / "init.pt"

        def make(seed: int) -> None:
            torch.manual_seed(seed)
            torch.save(make_model("fcn_relu", 4, "groupnorm").state_dict(), ckpt)

        make(0)
        cmd = ["samrepro", "task=cifar10", f"task.data_root={data}", f"task.init={ckpt}", *TINY_CIFAR, "steps=2",
               "hydra.run.dir=run"]
        first = self.run(cmd, work)
        assert first.returncode == 0, first.stderr
        run = work / "run"
        watched = [run / "summary.json", run / "metrics.csv"]
        key = lambda: json.loads((run / "summary.json").read_text())["inputs"]["files"].get("task.init")  # noqa: E731
        old, before = key(), [file_state(p) for p in watched]
        make(1)
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        self.add("(b) init: task.init checkpoint re-made, same path", "RECOMPUTED", observed,
                 f"other weights; inputs.files[task.init] {old} → {key()}",
                 ok=observed == "RECOMPUTED" and key() != old)
        stat, old, before = ckpt.stat(), key(), [file_state(p) for p in watched]
        make(2)
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        same = ckpt.stat().st_size == stat.st_size
        proc = self.run(cmd, work)
        observed = self.observe(proc, watched, before)
        self.add("(b') init: checkpoint re-made, size and mtime kept", "RECOMPUTED", observed,
                 f"same size: {same}; a task file's content is hashed", ok=observed == "RECOMPUTED" and key() != old)

    def stage_chain(self) -> None:
        """(g) a stage phase's step cap raised: continued in its folder, equal to a fresh run with that cap."""
        work = self.base / "stage"
        data = write_cifar10(work / "cifar", 40, 20)
        conf = work / "conf" / "stage"
        conf.mkdir(parents=True)
        (conf / "drill_tiny.yaml").write_text(TINY_STAGE)
        cmd = ["samrepro", "--config-dir", str(work / "conf"), "task=cifar10", "stage=drill_tiny",
               f"task.data_root={data}", *TINY_CIFAR]
        procs = {}
        for name, caps in (("continued", (4, 8)), ("fresh", (8,))):
            for cap in caps:
                procs[name, cap] = self.run([*cmd, f"name={name}", f"stage.phases.fullbatch.steps={cap}"], work)
        phase = {n: next(work.glob(f"runs/{n}/*/fullbatch"), None) for n in ("continued", "fresh")}
        capped = [p.returncode == 2 and "stopped at its cap" in p.stderr for p in procs.values()]
        resumed = "resumed from step 4" in procs["continued", 8].stdout
        equal = all(phase.values()) and all(
            (phase["continued"] / f).read_bytes() == (phase["fresh"] / f).read_bytes() for f in ("metrics.csv",))
        observed = ("CONTINUED" if resumed and equal else "RECOMPUTED" if equal else
                    "SERVED" if "stopped at its cap of steps=4" in procs["continued", 8].stderr else "DIFFERS")
        self.add("(g) stage: a phase's step cap raised 4 → 8", "CONTINUED", observed,
                 f"a tiny stage (--config-dir) on generated CIFAR-10, its multistep decays at steps 4 and 6.7; each "
                 f"command stopped at its cap (exit 2, one line): {all(capped)}; resumed "
                 f"from step 4: {resumed}; metrics.csv byte-identical to a fresh cap-8 run: {equal}",
                 ok=observed == "CONTINUED" and all(capped))

    # -------------------------------------------------------------------------- samrepro-figs
    def figs_chain(self) -> None:
        """(e) an experiment's grid changed (a value removed, then added), (f) drawing code changed, (f')
        code the drawing uses outside samrepro/figures changed (samrepro/theory.py: dai_thm3 draws 2/η with it)."""
        work = self.base / "figs"
        work.mkdir()
        cmd = ["samrepro-figs", "dai_thm3", "--results", "results"]
        first = self.run(cmd, work)
        assert first.returncode == 0, first.stderr
        csv, png, pdf = (work / "results" / p for p in ("dai_thm3.csv", "figures/dai_thm3.png", "figures/dai_thm3.pdf"))
        experiment = "conf/experiment/dai_thm3.yaml"
        grid = "0.013888888888888888,0.027777777777777776,0.041666666666666664,0.05277777777777778"
        removed, added = grid.rsplit(",", 1)[0], grid + ",0.03333333333333333"
        copies = {"grid-removed": self.package_copy("grid-removed", {experiment: f"{grid}\0{removed}"})}
        copies["grid-added"] = self.package_copy("grid-added", {experiment: f"{grid}\0{added}"})
        copies["drawing"] = self.package_copy("drawing", {"figures/dai_thm3.py": "\n# drawing code changed\n"},
                                              start=copies["grid-added"] / "samrepro")
        copies["theory"] = self.package_copy("theory", {"theory.py": "\n# code the drawing uses changed\n"},
                                             start=copies["drawing"] / "samrepro")
        with ThreadPoolExecutor(2) as pool:  # fresh results folders for the two grids, beside this chain
            fresh = {name: pool.submit(self.fresh_figs, name, copies[name]) for name in ("grid-removed", "grid-added")}
            for name, grid_now, what in (("grid-removed", removed, "a value removed (γ = 1.9)"),
                                         ("grid-added", added, "a value added (γ = 1.2)")):
                before = [file_state(csv)]
                proc = self.run(cmd, work, pythonpath=copies[name])
                observed = self.observe(proc, [csv], before)
                import pandas as pd

                lrs = sorted(set(pd.read_csv(csv).lr)) if csv.exists() else []
                want = sorted(float(v) for v in grid_now.split(","))
                same = fresh[name].result() == csv.read_bytes()
                self.add(f"(e) grid: {what}", "RECOMPUTED", observed,
                         f"samrepro-figs dai_thm3 with its experiment YAML edited (a copy of the package on "
                         f"PYTHONPATH); CSV's η values = the new grid: {lrs == want}; byte-identical to a fresh "
                         f"results folder: "
                         f"{same}", ok=observed == "RECOMPUTED" and lrs == want and same)
        for name, change in (("drawing", "(f) drawing code: a comment in figures/dai_thm3.py"),
                             ("theory", "(f') drawing code's import: a comment in theory.py")):
            before = [file_state(p) for p in (png, pdf)]
            csv_before = file_state(csv)
            proc = self.run(cmd, work, pythonpath=copies[name])
            observed = self.observe(proc, [png, pdf], before)
            uses = " (dai_thm3.draw plots 2/η with theory.gd_limit_y2)" if name == "theory" else ""
            self.add(change, "RECOMPUTED", observed, f"figure redrawn{uses}: {observed == 'RECOMPUTED'}; CSV left "
                     f"as it was: {file_state(csv) == csv_before}")

    def fresh_figs(self, name: str, copy: Path) -> bytes:
        work = self.base / f"fresh-{name}"
        work.mkdir()
        proc = self.run(["samrepro-figs", "dai_thm3", "--results", "results"], work, pythonpath=copy)
        assert proc.returncode == 0, proc.stderr
        return (work / "results" / "dai_thm3.csv").read_bytes()


TINY_CIFAR = ["task.model=fcn_relu", "task.width=4", "task.subset=32", "task.test_subset=16", "task.batch_size=16",
              "task.eval_subset=null", "device=cpu", "progress=false"]
TINY_STAGE = """\
# A tiny stage for scripts/drills.py: one full-batch phase; its multistep decay at 1/2 and 5/6 of horizon 8,
# so that a cap of 4 raised to 8 crosses both decays.
name: drill_tiny
save_to: tiny.pt
phases:
  fullbatch:
    opt: {name: gd}
    lr: 0.05
    lr_schedule: {name: multistep, final_ratio: 0.01, horizon: 8}
    rho: 0.0
    task: {batch_size: null, confusion_copies: 0, augment: false, chunk_size: 16}
    steps: 4
    log_every: 1
    checkpoint_every: 2
    until: {train_acc: 1.0}
"""


def stale_drill(args: argparse.Namespace, base: Path) -> int:
    stale = Stale(base)
    by_letter = {"e": stale.figs_chain, "f": stale.figs_chain, "g": stale.stage_chain, "b": stale.init_chain,
                 "a": stale.data_chain, "c": stale.quadratic_chain, "d": stale.code_chain}
    chains = [c for c in dict.fromkeys(by_letter[k] for k in "efgbacd") if any(
        by_letter[k] == c for k in args.changes)]  # the longest first
    failures = []
    with ThreadPoolExecutor(2) as pool:
        for chain, future in [(c, pool.submit(c)) for c in chains]:
            try:
                future.result()
            except Exception:  # a chain that could not run: a failure, with its reason
                failures.append(f"{chain.__name__}: {traceback.format_exc(limit=3)}")
    order = "abcdefg"
    rows = sorted(stale.rows, key=lambda r: (order.index(r["change"][1]) if r["change"][0] == "(" else -1,
                                             r["change"][2] == "'", stale.rows.index(r)))
    width = 60
    print(f"{'change':<{width}}  {'expected':<10}  {'observed':<10}  verdict")
    for r in rows:
        print(f"{r['change']:<{width}}  {r['expected']:<10}  {r['observed']:<10}  {r['verdict']}")
        if r["note"]:
            print(f"    {r['note']}")
    for f in failures:
        print("  CHAIN FAILED", f)
    fail = [r for r in rows if r["verdict"] == "FAIL"]
    served = [r for r in rows if r["observed"] == "SERVED" and r["expected"] != "SERVED"]
    print(f"stale: {len(rows)} changes; {sum(r['verdict'] == 'PASS' for r in rows)} PASS, {len(fail)} FAIL; "
          f"SERVED: {len(served)}"
          + "".join(f"\n  SERVED {r['change']} ({r['verdict']})" for r in served))
    if args.figure:
        draw_stale(rows, args.figure)
    return len(fail) + len(failures)


def draw_stale(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samrepro.figures import save

    colours = {"PASS": "#b7e1b0", "FAIL": "#f4a6a6"}
    fig, ax = plt.subplots(figsize=(9, 0.25 * (len(rows) + 1) + 0.3))
    ax.axis("off")
    cells = [[r["change"][:95] + ("…" if len(r["change"]) > 95 else ""), r["expected"], r["observed"], r["verdict"]]
             for r in rows]
    table = ax.table(cells, colLabels=["change", "expected", "observed", "verdict"], cellLoc="left",
                     colWidths=[0.64, 0.13, 0.13, 0.1], bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for i, r in enumerate(rows, 1):
        for j in range(4):
            table[i, j].set_facecolor(colours[r["verdict"]])
    ax.set_title("stale-input drill: the second run after a change", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path.with_suffix(""))


# ------------------------------------------------------------------------------------------------- main

def main() -> None:
    if sys.argv[1:2] == ["_churn"]:  # a lock-churn racer of race --spawn
        churn(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="drill", required=True)
    r = sub.add_parser("race", help="processes racing on one folder")
    r.add_argument("--trials", type=int, default=10, help="races of each command (default: 10)")
    r.add_argument("--racers", type=int, default=4, help="processes in each race (default: 4)")
    r.add_argument("--seed", type=int, default=0, help="seed of the racers' start delays")
    r.add_argument("--grid", type=int, default=5, help="η and ρ values of the sweep (default: 5: 75 runs)")
    r.add_argument("--steps", type=int, default=300, help="steps of each run (default: 300)")
    r.add_argument("--no-figs", action="store_true", help="leave out the samrepro-figs race")
    r.add_argument("--spawn", action="store_true", help="racers are the console scripts, not forked processes")
    r.add_argument("--churn", type=float, default=3.0,
                   help="seconds of the lock churn at the end (default: 3; 0: none)")
    s = sub.add_parser("stale", help="inputs changed under a finished result")
    s.add_argument("--changes", default="abcdefg",
                   help="the changes to drill, by letter (default: abcdefg; c includes the control row)")
    for p in (r, s):
        p.add_argument("--figure", type=Path, help="draw the result to this file (.png and .pdf); default: none")
    args = parser.parse_args()
    if args.drill == "stale" and (not args.changes or set(args.changes) - set("abcdefg")):
        parser.error(f"--changes {args.changes}: must be letters of abcdefg")
    if args.drill == "race":
        for key in ("trials", "grid", "steps"):
            if getattr(args, key) < 1:
                parser.error(f"--{key} {getattr(args, key)}: must be an integer > 0")
        if args.racers < 2:
            parser.error(f"--racers {args.racers}: must be an integer > 1")
    base = Path(tempfile.mkdtemp(prefix=f"samrepro-{args.drill}-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the temp folder is removed on a kill too
    started = time.monotonic()
    try:
        failed = (race_drill if args.drill == "race" else stale_drill)(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.drill}: {time.monotonic() - started:.0f} s; verdict: {'FAIL' if failed else 'PASS'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
