"""What a user's command costs, timed as whole commands in this one run, each in a fresh temporary folder:

0. answers without torch: ``samrepro --help`` against ``python -c "import torch"`` (the goal is a ratio
   < 0.5), and a user's grid against one run at the defaults (``task=quadratic``, 1,000 steps, a row per
   step): 60, 300 and 2,700 runs, with the marginal cost of a run (every time a median of 3: a file's creation
   here costs 5x more in the minute after a large deletion), and the 2,700 runs again with two rows per run
   (``log_every=1000``);
1. the 2,700-configuration grid of ``stability_quadratic`` written out on the command line
   (``samrepro -m task=quadratic … opt=gd,sam,usam lr=<30 values> rho=<30 values>``, the batched launcher)
   against ``samrepro-figs stability_quadratic`` (its sweep through the same launcher, plus its CSV and
   figure): the ratio should be ≤ 1.5;
2. a 60-run sweep (``opt=gd,sam,usam lr=0.1,…,0.5 rho=0.05,…,0.3 steps=500``) with samrepro's batched
   sweeper and launcher against Hydra's basic sweeper and launcher (``hydra/sweeper=basic
   hydra/launcher=basic``: every job composed up front, then run one after another — how every
   ``samrepro -m`` ran before the batched path; the goal is ≥ 10×), and against Hydra's basic launcher
   behind the batched sweeper;
3. ``samrepro-figs`` (``make figs``) in an empty folder, every run and every computed figure made anew (as
   after a change of the code that computes runs): its wall and CPU time, and each figure's seconds.

Each time is printed as it is measured (the whole script: about ten minutes on 2 CPU cores). The folders are
deleted only at the end (about 2 GB): on ext4 without a journal, creating a file scans the inodes deleted in
the last seconds to minutes, so a command that follows the deletion of another's 20,000 files would pay for it.

    python scripts/bench_sweep.py
    python scripts/bench_sweep.py --quick    # a smoke run: small grids, no part 1
    python scripts/bench_sweep.py --parts 03 # parts 0 and 3 only
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FOLDERS = tempfile.TemporaryDirectory()  # every command's folder, deleted when the script ends
CONF = Path(__file__).resolve().parent.parent / "conf"
SWEEP = {"opt": "gd,sam,usam", "lr": "0.1,0.2,0.3,0.4,0.5", "rho": "0.05,0.1,0.2,0.3", "steps": "500"}
QUICK_SWEEP = {"opt": "gd,sam", "lr": "0.1,0.2", "rho": "0.05", "steps": "20"}


def timed(cmd: list[str]) -> float:
    """Wall-clock seconds of ``cmd`` run to the end in a fresh folder; exits with its error if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tempfile.mkdtemp(dir=FOLDERS.name), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"bench_sweep.py: {' '.join(cmd[:3])} … failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def median_time(cmd: list[str], repeats: int) -> float:
    return sorted(timed(cmd) for _ in range(repeats))[repeats // 2]


def startup_and_grids(sizes: list[int], repeats: int) -> None:
    """Part 0: --help against importing torch; a grid of n runs (lr values × 3 seeds) against one run."""
    t_help = median_time([str(BIN / "samrepro"), "--help"], repeats)
    t_torch = median_time([sys.executable, "-c", "import torch"], repeats)
    print(f"samrepro --help: {t_help:.2f} s; python -c 'import torch': {t_torch:.2f} s "
          f"(ratio {t_help / t_torch:.2f}; goal < 0.5)", flush=True)
    for log_every, what, grids in ((1, "a row per step", sizes), (1000, "two rows: log_every=1000", sizes[-1:])):
        run = [str(BIN / "samrepro"), "task=quadratic", "progress=false", f"log_every={log_every}"]
        t_one = median_time(run, repeats)
        print(f"one run (task=quadratic, 1,000 steps, {what}): {t_one:.2f} s", flush=True)
        for n in grids:
            lrs = ",".join(f"{0.001 * (i + 1):.3f}" for i in range(n // 3))
            t = median_time([*run[:1], "-m", *run[1:], f"lr={lrs}", "seed=0,1,2"], repeats)
            print(f"  {n} runs: {t:.2f} s (ratio to one run {t / t_one:.2f}; marginal cost of a run "
                  f"{1000 * (t - t_one) / (n - 1):.1f} ms)", flush=True)


def grid_against_figs() -> None:
    """Part 1: the stability_quadratic grid, on the command line and through samrepro-figs."""
    from omegaconf import OmegaConf

    exp = OmegaConf.load(CONF / "experiment" / "stability_quadratic.yaml")
    grid = [f"{k}={v}" for k, v in exp.hydra.sweeper.params.items()]
    task = [f"task.eigenvalues=[{','.join(map(str, exp.task.eigenvalues))}]",
            f"task.init=[{','.join(map(str, exp.task.init))}]"]
    cli = [str(BIN / "samrepro"), "-m", "task=quadratic", *task, *grid, f"steps={exp.steps}",
           f"log_every={exp.log_every}", "progress=false", "threads=1", "name=grid"]
    t_cli = timed(cli)
    print(f"2,700-configuration grid, samrepro -m: {t_cli:.1f} s", flush=True)
    t_figs = timed([str(BIN / "samrepro-figs"), "stability_quadratic", "--results", "results"])
    print(f"2,700-configuration grid, samrepro-figs stability_quadratic: {t_figs:.1f} s "
          f"(ratio samrepro -m / samrepro-figs {t_cli / t_figs:.2f}; goal ≤ 1.5)", flush=True)


def batched_against_basic(sweep: dict[str, str]) -> None:
    """Part 2: one sweep with the batched sweeper and launcher, Hydra's basic ones, and a mix."""
    runs = len(sweep["opt"].split(",")) * len(sweep["lr"].split(",")) * len(sweep["rho"].split(","))
    cmd = [str(BIN / "samrepro"), "-m", "task=quadratic", *(f"{k}={v}" for k, v in sweep.items()), "progress=false"]
    label = f"{runs}-run sweep ({sweep['steps']} steps)"
    t_batched = timed(cmd)
    print(f"{label}, batched sweeper and launcher: {t_batched:.1f} s", flush=True)
    t_before = timed([*cmd, "hydra/sweeper=basic", "hydra/launcher=basic"])
    print(f"{label}, Hydra's basic sweeper and launcher: {t_before:.1f} s "
          f"(speed-up of batched {t_before / t_batched:.1f}x)", flush=True)
    t_basic = timed([*cmd, "hydra/launcher=basic"])
    print(f"{label}, batched sweeper, Hydra's basic launcher: {t_basic:.1f} s ({t_basic / t_batched:.1f}x)",
          flush=True)


def make_figs() -> None:
    """Part 3: samrepro-figs from scratch in an empty folder (its workers' CPU time included)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([str(BIN / "samrepro-figs")], cwd=tempfile.mkdtemp(dir=FOLDERS.name), capture_output=True,
                          text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"bench_sweep.py: samrepro-figs failed:\n{done.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"samrepro-figs, every run and figure made anew: {wall:.0f} s wall, {cpu:.0f} s CPU "
          f"(goal ≤ 160 s wall)", flush=True)
    times = sorted(((float(m[2]), m[1]) for m in re.finditer(r"^(\S+): \d+ rows in ([\d.]+) s", done.stdout, re.M)),
                   reverse=True)
    print("  per figure: " + ", ".join(f"{name} {seconds:.1f} s" for seconds, name in times), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="part 0 with a 3-run grid, no part 1, part 2 on 4 runs (opt=gd,sam lr=0.1,0.2 rho=0.05) "
                             "of 20 steps")
    parser.add_argument("--parts", default="0123", help="the parts to run, e.g. 03 (default: all)")
    args = parser.parse_args()
    if "0" in args.parts:
        startup_and_grids([3] if args.quick else [60, 300, 2700], 1 if args.quick else 3)
    if "1" in args.parts and not args.quick:
        grid_against_figs()
    if "2" in args.parts:
        batched_against_basic(QUICK_SWEEP if args.quick else SWEEP)
    if "3" in args.parts and not args.quick:
        make_figs()


if __name__ == "__main__":
    main()
