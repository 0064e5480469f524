"""A user's own sweep through ``samrepro -m`` against the same work inside ``samrepro-figs`` (issue: one run
path). Both are timed as whole commands, in this one run, each in a fresh folder:

1. the 2,700-configuration grid of ``stability_quadratic`` written out on the command line
   (``samrepro -m task=quadratic … opt=gd,sam,usam lr=<30 values> rho=<30 values>``, the batched launcher)
   against ``samrepro-figs stability_quadratic`` (its sweep through the same launcher, plus its CSV and
   figure): the ratio should be ≤ 1.5;
2. a 60-run sweep (``opt=gd,sam,usam lr=0.1,…,0.5 rho=0.05,…,0.3 steps=500``) with samrepro's batched
   sweeper and launcher against Hydra's basic sweeper and launcher (``hydra/sweeper=basic
   hydra/launcher=basic``: every job composed up front, then run one after another — how every
   ``samrepro -m`` ran before the batched path; the goal is ≥ 10×), and against Hydra's basic launcher
   behind the batched sweeper. The start-up both pay (Python, ``import torch``, Hydra) is timed apart, as
   ``samrepro --help``.

    python scripts/bench_sweep.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

BIN = Path(sys.executable).parent
CONF = Path(__file__).resolve().parent.parent / "conf"


def timed(cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - start


def main() -> None:
    exp = OmegaConf.load(CONF / "experiment" / "stability_quadratic.yaml")
    grid = [f"{k}={v}" for k, v in exp.hydra.sweeper.params.items()]
    task = [f"task.eigenvalues=[{','.join(map(str, exp.task.eigenvalues))}]",
            f"task.init=[{','.join(map(str, exp.task.init))}]"]
    cli = [str(BIN / "samrepro"), "-m", "task=quadratic", *task, *grid, f"steps={exp.steps}",
           f"log_every={exp.log_every}", "progress=false", "threads=1", "name=grid"]
    figs = [str(BIN / "samrepro-figs"), "stability_quadratic", "--results", "results"]
    t_cli, t_figs = timed(cli), timed(figs)
    print(f"2,700-configuration grid: samrepro -m {t_cli:.1f} s, samrepro-figs {t_figs:.1f} s, "
          f"ratio {t_cli / t_figs:.2f}")
    small = [str(BIN / "samrepro"), "-m", "task=quadratic", "opt=gd,sam,usam", "lr=0.1,0.2,0.3,0.4,0.5",
             "rho=0.05,0.1,0.2,0.3", "steps=500", "progress=false"]
    t_batched = timed(small)
    t_before = timed([*small, "hydra/sweeper=basic", "hydra/launcher=basic"])
    t_basic = timed([*small, "hydra/launcher=basic"])
    t_start = timed([str(BIN / "samrepro"), "--help"])
    print(f"60-run sweep: batched {t_batched:.1f} s; Hydra's basic sweeper and launcher {t_before:.1f} s "
          f"(speed-up {t_before / t_batched:.1f}x); batched sweeper, Hydra's basic launcher {t_basic:.1f} s "
          f"({t_basic / t_batched:.1f}x); start-up alone (samrepro --help) {t_start:.1f} s")


if __name__ == "__main__":
    main()
