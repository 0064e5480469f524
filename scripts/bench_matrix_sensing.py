"""Batched vs one-by-one: the cost of the whole Dai Fig. 2 sweep against its slowest single run.

All configurations of ``experiment=dai_fig2`` (GD, SAM, USAM × ρ) share the sensing matrices, so
``samrepro.runner`` runs them as one task with a configuration dimension: params [C, d, d], one copy of
the A_i. This script runs that batch once, then every configuration alone, each with the same
(shortened) settings, and prints the times and the ratio batched / slowest single run, measured in
this one process. Run folders go to a temporary folder.

    python scripts/bench_matrix_sensing.py [--steps 300] [--d 40] [--r 2] [--sharpness-every 0]
    python scripts/bench_matrix_sensing.py --steps 5 --d 6 --r 1      # a smoke run: seconds
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps of every run (default: 300)")
    parser.add_argument("--d", type=int, default=None, help="task.d (default: the experiment's)")
    parser.add_argument("--r", type=int, default=None, help="task.r (default: the experiment's)")
    parser.add_argument("--sharpness-every", type=int, default=0, help="task.sharpness_every (0: off)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be an integer > 0")

    import torch  # after parsing: --help needs neither torch nor Hydra
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from samrepro.cli import CONF_MODULE
    from samrepro.config import ConfigError
    from samrepro.runner import Run, execute

    overrides = [f"steps={args.steps}", f"log_every={args.steps}", f"device={args.device}",
                 f"task.sharpness_every={args.sharpness_every}"]
    overrides += [f"task.{k}={v}" for k, v in (("d", args.d), ("r", args.r)) if v is not None]
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        base = compose("config", overrides=["experiment=dai_fig2", *overrides], return_hydra_config=True)
    grid = {k: str(v).split(",") for k, v in base.hydra.sweeper.params.items()}
    with open_dict(base):
        del base["hydra"]  # its ${hydra:…} keys resolve only inside a Hydra job; a Run needs none of them
    runs = [{k: (v if k == "opt" else float(v)) for k, v in zip(grid, values)}
            for values in itertools.product(*grid.values())]
    print(f"dai_fig2: {len(runs)} configurations, d={base.task.d}, r={base.task.r}, {args.steps} steps, "
          f"torch threads={torch.get_num_threads()}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        def timed(selected: list[dict], tag: str) -> float:
            dirs = [Path(tmp) / f"{tag}{i}" for i in range(len(selected))]
            for d in dirs:  # what runner.run makes (and locks) before it calls execute
                d.mkdir()
            start = time.perf_counter()
            execute(base, [Run.of(base, d, **run) for run, d in zip(selected, dirs)], ["new"] * len(selected))
            return time.perf_counter() - start

        try:
            timed(runs[:1], "warmup")
            batched = timed(runs, "batched")
            print(f"batched, all {len(runs)}: {batched:.2f} s", flush=True)
            singles = []
            for i, run in enumerate(runs):
                singles.append(timed([run], f"single{i}"))
                print(f"  alone: {run['opt']:>4} rho={run['rho']:<5g} {singles[-1]:7.2f} s", flush=True)
        except ConfigError as err:
            parser.error(str(err))
    slowest = max(range(len(runs)), key=lambda i: singles[i])
    print(f"one by one, total: {sum(singles):.2f} s")
    name = f"{runs[slowest]['opt']} rho={runs[slowest]['rho']:g}"
    print(f"slowest single run ({name}): {singles[slowest]:.2f} s")
    print(f"ratio batched / slowest single run: {batched / singles[slowest]:.2f}")


if __name__ == "__main__":
    main()
