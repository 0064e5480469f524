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
from samrepro.train import CHECKPOINT, load_checkpoint, lr_schedule, train

log = logging.getLogger("samrepro")
CONF_MODULE = "samrepro.conf"
OmegaConf.register_new_resolver("or_default", lambda value, default: value or default, replace=True)


def execute(base: DictConfig, runs: Sequence[dict], run_dirs: Sequence[Path], progress: bool = True,
            threads: int | None = None) -> list[dict]:
    """Runs configurations of ``base`` that differ only in ``runs[i]`` = {opt, lr, rho, seed}, as one
    batch: the task is built once with one parameter slice per configuration, the optimizer gets
    per-slice η, ρ and normalization, and each configuration gets its own run folder. A task that
    cannot batch (``config_dim = False``) is built once and runs the configurations one after another.
    ``threads``: torch's CPU threads during the run (None: unchanged).

    Optional keys of ``base`` (absent from the default config): ``until`` (metric → threshold at which
    a run stops), ``checkpoint_every`` (steps; a run folder holding a checkpoint resumes from it), and
    ``epoch_units: true`` (``steps``, ``log_every`` and ``checkpoint_every`` count epochs of the task).
    """
    device = resolve_device(base.device)
    task = tasks.build(base.task, len(runs), device)
    unit = task.steps_per_epoch if base.get("epoch_units") else 1
    until = dict(base.get("until") or {})
    unknown = [k for k in until if k not in task.metric_names]
    require(not unknown, "until", unknown, f"unknown metric; allowed: {', '.join(task.metric_names)}")
    checkpoint_every = base.get("checkpoint_every", 0) * unit
    require(not checkpoint_every or not task.config_dim, "checkpoint_every", base.get("checkpoint_every"),
            "needs a task that runs one configuration at a time")
    jobs = list(zip(runs, run_dirs, strict=True))
    groups = [jobs] if task.config_dim else [[job] for job in jobs]
    lr_factor = lr_schedule(base.lr_schedule.name, base.lr_schedule.final_ratio, base.steps * unit)
    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return [summary for group in groups for summary in _run_group(
            base, task, group, unit, until, checkpoint_every, lr_factor, progress)]
    finally:
        torch.set_num_threads(default_threads)


def _run_group(base: DictConfig, task: tasks.Task, group: Sequence[tuple[dict, Path]], unit: int,
               until: dict, checkpoint_every: int, lr_factor, progress: bool) -> list[dict]:
    """One batch of ``execute``: the optimizer, the run folders (resuming from a checkpoint), the trainer."""
    values = {key: [run[key] for run, _ in group] for key in ("opt", "lr", "rho", "seed")}
    try:
        optimizer = SAM(task.init_params(values["seed"]), values["opt"], values["lr"], values["rho"],
                        config_dim=task.config_dim, momentum=base.opt.momentum,
                        weight_decay=base.opt.weight_decay, eps=base.opt.eps)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    start = 0
    if checkpoint_every and (Path(group[0][1]) / CHECKPOINT).exists():
        start = load_checkpoint(group[0][1], task, optimizer)
        log.info("resumed from step %d: %s", start, group[0][1])
    records = [RunRecord(d, {"task": base.task.name, **run}, task.metric_names, resume_step=start)
               for run, d in group]
    return train(task, optimizer, records, steps=base.steps * unit, log_every=base.log_every * unit,
                 loss_ceiling=base.loss_ceiling, seeds=values["seed"], progress=progress, lr_factor=lr_factor,
                 until=until, checkpoint_every=checkpoint_every, start_step=start)


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
        if cfg.get("stage"):
            from samrepro.stages import run_stage  # stages build on execute (below)

            summary = run_stage(cfg, run_dir)
        else:
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
