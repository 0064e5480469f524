"""``samrepro task=<name> opt=<gd|sam|usam|gd_ascent> lr=η rho=ρ steps=N seed=s``: one run, and
``samrepro -m …``: a sweep.

The thin entry point: Hydra parses the command line, composes the config and runs the task function
below; samrepro's callback (:class:`hydra_plugins.samrepro_launcher.Checks`) checks the config before any
folder is made. Every Hydra feature works as Hydra documents it (``--help``, ``--cfg``, ``--info``, tab
completion, ``--config-dir``, sweeps with ``glob()``/``range()``, interpolation, callbacks). Bad input
ends with exit code 2 and one line naming the key and what is allowed. This module imports no torch:
the task function imports the runner when a run starts.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra_plugins.samrepro_launcher import (
    BatchedJoblibLauncher,
    BatchedLauncher,
    BatchedSubmititLauncher,
    BatchedSweeper,
    hydra_error_line,
    hydra_record,
    job_value,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from samrepro.config import ConfigError, fail, interruption

log = logging.getLogger("samrepro")
CONF_MODULE = "samrepro.conf"
for plugin in (BatchedSweeper, BatchedLauncher, BatchedJoblibLauncher, BatchedSubmititLauncher):
    Plugins.instance().register(plugin)  # Hydra's own scan misses editable installs


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="config")
def run(cfg: DictConfig) -> dict | float:
    """One job (``samrepro …``, or a job of a sweep under Hydra's basic, joblib or submitit launcher):
    returns its summary and ``run_dir`` — or, with ``objective=final.<metric>``, that number — as the
    batched launcher does for each of its jobs."""
    from samrepro import runner  # torch: only once a run starts

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    record = hydra_record(cfg, OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False, enum_to_str=True))
    if "stage" in cfg:
        summary = runner.run_stage(cfg, run_dir, record)
    else:
        job = runner.Run(OmegaConf.to_container(cfg, resolve=True), run_dir, record)
        summary = runner.run([job], threads=runner.thread_share(cfg.threads, hydra_cfg.launcher))[0]
    final = ", ".join(f"{k}={v:.6g}" for k, v in summary["final"].items())
    log.info("%s after %d steps: %s -> %s", summary["status"], summary["steps_done"], final, run_dir)
    return job_value({**summary, "run_dir": str(run_dir)}, cfg.objective)


@contextmanager
def one_line_errors():
    """Hydra's and OmegaConf's errors, samrepro's ConfigError and the system's (OSError: a full disk, a
    folder without write permission) as the CLI contract says: one line, exit code 2 (``HYDRA_FULL_ERROR=1``
    set by the user keeps Hydra's full report)."""
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its multi-line report
    try:
        yield
    except Exception as err:
        if (stop := interruption(err)) is not None:  # a Ctrl-C while Hydra composes, as its error or OmegaConf's
            raise stop from None
        if isinstance(err, ConfigError):
            fail(str(err))
        if isinstance(err, (HydraException, OmegaConfBaseException)) and not user_full_error:
            fail(hydra_error_line(err))
        if isinstance(err, BrokenPipeError):  # the reader of the output has gone (samrepro --help | head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        if isinstance(err, OSError):  # a full disk, a read-only folder, a name too long: the path, the reason
            fail(f"{err.filename or ''}: {err.strerror or err}")
        raise
    finally:
        if not user_full_error:
            del os.environ["HYDRA_FULL_ERROR"]


def multirun(overrides: Sequence[str]) -> list[Path]:
    """``samrepro -m <overrides>`` in this process (Hydra's sweeper and the configured launcher, by default
    the batched one); returns the jobs' run folders in job order (relative to the working folder when
    inside it). Bad input raises SystemExit(2) after its one line, as on the command line."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with one_line_errors(), initialize_config_module(version_base="1.3", config_module=CONF_MODULE,
                                                      job_name="cli"):
        returns = GlobalHydra.instance().hydra.multirun(config_name="config", task_function=run.__wrapped__,
                                                        overrides=[*overrides, "hydra.mode=MULTIRUN"],
                                                        with_log_configuration=False)
    folders = [Path(r.hydra_cfg.hydra.runtime.output_dir if r.hydra_cfg else r.return_value["run_dir"])
               for batch in returns for r in batch]  # the batched launcher's summary names its folder
    return [d.relative_to(Path.cwd()) if d.is_relative_to(Path.cwd()) else d for d in folders]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def interruptible(program: str, kept: str) -> Iterator[None]:
    """SIGTERM (a time limit, ``scancel``, ``kill``) is an interruption like Ctrl-C; either ends the block
    with one line, ``<program>: interrupted; <kept>``, and exit code 130."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt:
        print(f"{program}: interrupted; {kept}", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Console entry point: Hydra's command line, with one-line errors and interruptions (the running
    configurations keep their rows and say so)."""
    with interruptible("samrepro", "finished runs are kept, runs in progress keep the rows they logged (and say "
                                   "interrupted, unless a parallel launcher killed their worker first): the same "
                                   "command goes on from there"), one_line_errors():
        run()


def figs() -> None:
    """Console entry point of ``samrepro-figs`` (:mod:`samrepro.figures.make`), whose imports (torch, pandas,
    matplotlib) take seconds: an interruption during them is one line too."""
    with interruptible("samrepro-figs", "the runs in progress say so in their folders, and the finished runs and "
                                        "figures are kept: the same command goes on from there"):
        from samrepro.figures.make import main as make_figures

        make_figures()
