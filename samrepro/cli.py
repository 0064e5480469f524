"""``samrepro task=<name> opt=<gd|sam|usam|gd_ascent> lr=η rho=ρ steps=N seed=s`` (DESIGN §2).

One run: compose the config (Hydra), validate it, build the task and the optimizer, call the trainer,
write the run folder. ``samrepro -m …`` runs a sweep through any Hydra launcher; finished runs are
skipped. Bad input ends with exit code 2 and one line naming the key and what is allowed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from samrepro import tasks
from samrepro.config import ConfigError, require, resolve_device, run_values, validate
from samrepro.optim import SAM
from samrepro.records import RunRecord, is_finished
from samrepro.train import lr_schedule, train

log = logging.getLogger("samrepro")
CONF_MODULE = "samrepro.conf"
OmegaConf.register_new_resolver("or_default", lambda value, default: value or default, replace=True)


def execute(base: DictConfig, runs: Sequence[dict], run_dirs: Sequence[Path], progress: bool = True,
            threads: int | None = None) -> list[dict]:
    """Runs configurations of ``base`` that differ only in ``runs[i]`` = {opt, lr, rho, seed}, as one
    batch: the task is built once with one parameter slice per configuration, the optimizer gets
    per-slice η, ρ and normalization, and each configuration gets its own run folder. ``threads``:
    torch's CPU threads during the run (None: unchanged).
    """
    device = resolve_device(base.device)
    task = tasks.build(base.task, len(runs), device)
    require(task.config_dim or len(runs) == 1, "task", base.task.name, "runs one configuration at a time")
    seeds = [r["seed"] for r in runs]
    try:
        optimizer = SAM(task.init_params(seeds), [r["opt"] for r in runs], [r["lr"] for r in runs],
                        [r["rho"] for r in runs], config_dim=task.config_dim, momentum=base.opt.momentum,
                        weight_decay=base.opt.weight_decay, eps=base.opt.eps)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    records = [RunRecord(d, {"task": base.task.name, **r}, task.metric_names) for d, r in zip(run_dirs, runs)]
    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return train(task, optimizer, records, steps=base.steps, log_every=base.log_every,
                     loss_ceiling=base.loss_ceiling, seeds=seeds, progress=progress,
                     lr_factor=lr_schedule(base.lr_schedule.name, base.lr_schedule.final_ratio, base.steps))
    finally:
        torch.set_num_threads(default_threads)


def fail(message: str) -> None:
    print(f"samrepro: error: {message}", file=sys.stderr)
    sys.exit(2)


def thread_share(threads: int | None, launcher: DictConfig) -> int | None:
    """Torch CPU threads for one job, so that parallel jobs do not oversubscribe the cores: the
    ``threads`` key if set, else the launcher's share (joblib: cores // n_jobs; submitit or Slurm:
    cpus_per_task), else None (torch's default: all cores, right for one job at a time)."""
    if threads:
        return int(threads)
    target = str(launcher.get("_target_", ""))
    if "Joblib" in target:
        n_jobs = launcher.get("n_jobs") or -1
        cores = os.cpu_count() or 1
        return max(1, cores // (cores if n_jobs < 0 else n_jobs))
    cpus = launcher.get("cpus_per_task") or os.environ.get("SLURM_CPUS_PER_TASK")
    return int(cpus) if cpus else None


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="config")
def run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if is_finished(run_dir):
        log.info("skipped (already finished): %s", run_dir)
        return
    try:
        validate(cfg)
        summary = execute(cfg, [run_values(cfg)], [run_dir], progress=cfg.progress,
                          threads=thread_share(cfg.threads, hydra_cfg.launcher))[0]
    except ConfigError as err:
        if not (run_dir / "metrics.csv").exists():  # only Hydra's own files: not a result, remove them
            shutil.rmtree(run_dir, ignore_errors=True)
        fail(str(err))
    final = ", ".join(f"{k}={v:.6g}" for k, v in summary["final"].items())
    log.info("%s after %d steps: %s -> %s", summary["status"], summary["steps_done"], final, run_dir)


def config_groups() -> dict[str, list[str]]:
    """The config groups (task, opt, experiment, …) and the names each allows."""
    root = resources.files(CONF_MODULE)
    return {d.name: sorted(f.name.removesuffix(".yaml") for f in d.iterdir() if f.name.endswith(".yaml"))
            for d in root.iterdir() if d.is_dir() and not d.name.startswith("__")}


def check_overrides(args: Sequence[str]) -> None:
    """Catches bad command-line input before Hydra creates any run folder (one line per error)."""
    from hydra import compose, initialize_config_module
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    try:
        overrides = OverridesParser.create().parse_overrides(list(args))
    except HydraException as err:
        raise ConfigError(f"malformed override: {str(err).splitlines()[0]}") from err
    groups = config_groups()
    for o in overrides:
        key = o.key_or_group
        if key in groups:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            for v in values:
                require(v in groups[key], key, v, f"unknown; allowed: {', '.join(groups[key])}")
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        for combo in BasicSweeper.split_arguments(overrides, None)[0]:
            try:
                cfg = compose("config", overrides=combo)
            except HydraException as err:
                raise ConfigError(str(err).splitlines()[0]) from err
            validate(cfg)


def main() -> None:
    """Console entry point: validate the command line, then hand over to Hydra."""
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        check_overrides(overrides)
    except ConfigError as err:
        fail(str(err))
    try:
        run()
    except KeyboardInterrupt:
        print("samrepro: interrupted; finished rows and summary.json (status interrupted) are kept",
              file=sys.stderr)
        sys.exit(130)
