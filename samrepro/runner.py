"""The runner: resolved run configs in, run folders out — the one path behind a single run, every sweep
(through the batched launcher or any Hydra launcher) and every stage.

``run`` first claims every folder (``records.claim``: nothing is written until all are checked), skips
the runs already finished with their very config, runs once each group of GD runs that differ only in ρ
(GD ignores ρ, and SAM or USAM at ρ = 0 is GD; the others get the same rows and ``same_as``), and runs the rest
batched: runs whose configs differ only in ``opt.name``, ``lr``, ``rho``, ``seed``, ``steps`` and
``lr_schedule`` share one task with a configuration dimension, so a 30 × 30 × 3 grid costs about one run's
Python overhead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import numpy  # noqa: F401  before torch, whose C extension imports it and discards any error of that import:
import torch  # a Ctrl-C or SIGTERM in those 40 ms was lost, numpy left half-imported (AttributeError later)
from omegaconf import DictConfig, OmegaConf

from samrepro import __version__, tasks
from samrepro.config import ConfigError, DeviceName, require, validate, validate_run
from samrepro.optim import SAM
from samrepro.records import (
    CHECKPOINT,
    HYDRA_DIR,
    METRICS,
    SUMMARY,
    RunRecord,
    claim,
    config_diff,
    fingerprint,
    left_by_the_dead,
    link_or_copy,
    locked,
    read_summary,
    remove_run_temps,
    write_atomic,
    write_config,
    yaml_text,
)
from samrepro.train import load_checkpoint, lr_schedule, train

log = logging.getLogger("samrepro")
MAX_BATCH = 4096  # configurations in one batch (memory, not open files, bounds it: one file is open at a time)


@dataclass
class Run:
    """One run: its resolved config (no ``hydra`` node), its folder, and the ``.hydra/`` record Hydra's own
    launcher would write there (file name → payload or its YAML text), written once the folder is claimed."""

    config: dict
    dir: Path
    hydra_record: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: DictConfig, run_dir: Path, **values: object) -> Run:
        """The run of a composed config, with ``opt`` (a rule name), ``lr``, ``rho`` or ``seed`` changed."""
        config = OmegaConf.to_container(cfg, resolve=True)
        if "opt" in values:
            config["opt"] = {**config["opt"], "name": values.pop("opt")}
        return cls({**config, **values}, Path(run_dir))

    @property
    def values(self) -> dict:
        """The keys in which the runs of one batch may differ."""
        return {"opt": self.config["opt"]["name"], "lr": self.config["lr"], "rho": self.config["rho"],
                "seed": self.config["seed"]}

    @cached_property
    def inputs(self) -> dict:
        return run_inputs(self.config)

    def identity(self) -> dict:
        return {"task": self.config["task"]["name"], **self.values}

    def write_hydra_record(self) -> None:
        """Into its folder, locked (its stale temp files removed then)."""
        if self.hydra_record:
            folder = os.path.join(self.dir, HYDRA_DIR)
            with suppress(FileExistsError):
                os.mkdir(folder)
            for name, payload in self.hydra_record.items():  # a payload, or its YAML text
                text = payload if isinstance(payload, str) else yaml_text(payload)
                write_atomic(os.path.join(folder, name), text, clean=False)


BATCH_VALUES = ("lr", "rho", "seed", "steps", "lr_schedule")  # top-level keys in which a batch's runs may differ


def batch_key(config: Mapping, values: Sequence[str] = BATCH_VALUES) -> str:
    """Equal for configs that may share a batch: equal but for opt.name and ``values`` (each configuration
    has its own η, ρ, seed, steps and LR schedule; gd_ascent needs its own batch: its step differs in kind)."""
    rest = {k: v for k, v in config.items() if k not in ("opt", *values)}
    opt = {k: v for k, v in config["opt"].items() if k != "name"}
    return json.dumps([rest, opt, config["opt"]["name"] == "gd_ascent"], sort_keys=True, default=str)


def gd_key(config: Mapping) -> str | None:
    """GD ignores ρ, and SAM or USAM with ρ = 0 is GD (bit for bit): runs with equal keys are the same
    computation (None for every other run)."""
    if config["opt"]["name"] != "gd" and not (config["opt"]["name"] in ("sam", "usam") and config["rho"] == 0):
        return None
    return fingerprint({**config, "opt": {**config["opt"], "name": "gd"}, "rho": 0.0})


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


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu`` / ``cuda`` force it."""
    require(name in DeviceName.__members__, "device", name, f"allowed: {', '.join(DeviceName.__members__)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    require(name != "cuda" or torch.cuda.is_available(), "device", name,
            "no CUDA GPU is available here; use device=cpu or auto")
    return torch.device(name)


# The modules whose code computes a run (with a task's own module): their hash is part of every run's inputs.
COMPUTING = ("optim.py", "train.py", "runner.py", "records.py", "sharpness.py", "tasks")


@cache
def code_version(task_target: str) -> str:
    """samrepro's version and a hash of the code that computes runs of ``task_target``'s task: the
    COMPUTING modules and, for a task of the user's own package, its module."""
    root = Path(__file__).parent
    files = sorted(p for name in COMPUTING for p in ((root / name).rglob("*.py") if (root / name).is_dir()
                                                       else [root / name]))
    spec = importlib.util.find_spec(task_target.rpartition(".")[0])
    if spec is not None and spec.origin and not Path(spec.origin).resolve().is_relative_to(root.resolve()):
        files.append(Path(spec.origin))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]
    return f"{__version__}+{digest}"


@cache
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_inputs(config: Mapping) -> dict:
    """What a run's result depends on beyond its config, and a finished folder must match to be reused: the
    code that computes it, the effective device, the content of every file a task key names (e.g. a
    ``task.init`` checkpoint) and the files of a task's ``data_root`` folder (names and contents; a file's
    digest is computed once per process, path, size and mtime)."""
    files = {}
    for key, value in config["task"].items():
        if key == "data_root":
            folder = tasks.data_folder(value)
            listing = sorted((str(p.relative_to(folder)), _file_sha256(p.resolve(), st.st_size, st.st_mtime_ns))
                             for p in folder.rglob("*") if p.is_file() for st in [p.stat()]) if folder.is_dir() else []
            files[f"task.{key}"] = hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
        elif isinstance(value, str) and value and os.path.isfile(value):
            stat = os.stat(value)
            files[f"task.{key}"] = _file_sha256(Path(value).resolve(), stat.st_size, stat.st_mtime_ns)
    return {"code": code_version(config["task"].get("_target_", "")),
            "device": resolve_device(config["device"]).type, "files": files}


@cache
def task_contract(task: str, device: str) -> tuple[tuple[str, ...], bool]:
    """The metric names and ``config_dim`` of the task of the JSON ``task`` config, built for one configuration."""
    built = tasks.build(OmegaConf.create(json.loads(task)), 1, resolve_device(device))
    return tuple(built.metric_names), built.config_dim


def check_config(config: Mapping) -> None:
    """ConfigError for a resolved run config whose keys are not valid (:func:`samrepro.config.validate`; the
    task's own, checked as it is built; ``until`` and ``checkpoint_every``, which depend on the task)."""
    validate(OmegaConf.create(config), composed=False)
    names, config_dim = task_contract(json.dumps(config["task"], sort_keys=True), config["device"])
    unknown = [k for k in config["until"] if k not in names]
    require(not unknown, "until", unknown, f"unknown metric; allowed: {', '.join(names)}")
    require(not config["checkpoint_every"] or not config_dim, "checkpoint_every", config["checkpoint_every"],
            "needs a task that runs one configuration at a time")


def check(runs: Sequence[Run]) -> list[str]:
    """What :func:`run` checks before it writes anything: raises ConfigError for a config that is not valid,
    a folder it may not use, or two runs of different configs in one folder; returns each run's claim
    (``new``, ``done`` or ``resume``, and ``same`` for a run whose folder an earlier run of the same config
    has: it is computed once)."""
    for config in {batch_key(r.config, ("lr", "rho", "seed")): r.config for r in runs}.values():
        check_config(config)  # lr, rho, seed and opt.name: below, run by run
    for r in runs:
        validate_run(**r.values)
    first: dict[str, Run] = {}
    for r in runs:
        other = first.setdefault(os.path.abspath(r.dir), r)
        if other is not r and fingerprint(other.config) != fingerprint(r.config):
            raise ConfigError(f"{r.dir}: two jobs of this sweep map to this folder with different configs "
                              f"({'; '.join(config_diff(other.config, r.config))}); give them folders of their own "
                              f"(hydra.sweep.subdir=… must tell them apart)")
    return ["same" if first[os.path.abspath(r.dir)] is not r else claim(r.dir, r.config, r.inputs)
            for r in runs]


def run(runs: Sequence[Run], threads: int | None = None, claims: Sequence[str] | None = None) -> list[dict]:
    """Runs what is not finished yet; returns every run's summary, in order (``skipped: true`` added to
    those finished before). Raises ConfigError before writing anything (:func:`check`, unless ``claims`` says
    what it returned for these runs) for a config that is not valid or a folder it may not use, and for a
    folder that another live process holds (:func:`samrepro.records.locked`: the folders are locked while
    their runs compute; a finished folder still locked by a killed process of this host is locked and
    released too, so that its dead lock and temp files go). ``threads``: torch's CPU threads (None: each
    config's ``threads`` key, else torch's default)."""
    states = check(runs) if claims is None else claims
    cleared = [r.dir for r, s in zip(runs, states) if s == "done" and left_by_the_dead(r.dir)]  # a killed run's lock
    with locked([*(r.dir for r, s in zip(runs, states) if s not in ("done", "same")), *cleared]):
        states = [claim(r.dir, r.config, r.inputs) if s not in ("done", "same") else s  # claimed again, locked:
                  for r, s in zip(runs, states)]  # another process may have finished a run meanwhile
        return _run_claimed(runs, states, threads)


def span(folders: Sequence[Path]) -> str:
    """The first and last of ``folders``, for a log line."""
    return str(folders[0]) if len(folders) == 1 else f"{folders[0]} … {folders[-1]}"


def _run_claimed(runs: Sequence[Run], states: Sequence[str], threads: int | None) -> list[dict]:
    """:func:`run` once every folder is claimed and locked."""
    summaries: list[dict | None] = [read_summary(r.dir) for r in runs]
    skipped = [r.dir for r, s in zip(runs, states) if s == "done"]
    if skipped:
        log.info("skipped %d finished run(s) of the same config: %s", len(skipped), span(skipped))
    stale = {r.dir: [k for k in r.inputs if old.get("inputs", {}).get(k) != r.inputs[k]] or
             ["rerun=true" if r.config.get("rerun") else "a damaged metrics.csv"]
             for r, s, old in zip(runs, states, summaries) if s == "new" and old}  # finished, yet recomputed
    if stale:
        log.info("recomputed %d finished run(s) (%s): %s", len(stale),
                 ", ".join(sorted({k for keys in stale.values() for k in keys})), span(list(stale)))
    summaries = [old if s == "done" else None for s, old in zip(states, summaries)]
    computed: dict[str, int] = {}  # GD key → the first run of that key: it computes (or computed) it
    copies: dict[int, int] = {}  # an unfinished run → the run whose result it takes
    for i, r in enumerate(runs):
        key = gd_key(r.config) if states[i] != "same" else None
        if key is not None and computed.setdefault(key, i) != i and summaries[i] is None:
            copies[i] = computed[key]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(runs):
        if summaries[i] is None and i not in copies and states[i] != "same":
            groups[batch_key(r.config)].append(i)
    for members in groups.values():
        base = OmegaConf.create(runs[members[0]].config)
        for start in range(0, len(members), MAX_BATCH):
            chunk = members[start:start + MAX_BATCH]
            for i, summary in zip(chunk, execute(base, [runs[i] for i in chunk], [states[i] for i in chunk], threads)):
                summaries[i] = summary
    for i, j in copies.items():
        summaries[i] = copy_result(runs[j], runs[i], summaries[j])
    first = {os.path.abspath(r.dir): i for i, r in reversed(list(enumerate(runs)))}
    return [summaries[first[os.path.abspath(r.dir)]] if state == "same" else
            {**summaries[i], "skipped": True} if state == "done" else summaries[i]
            for i, (r, state) in enumerate(zip(runs, states))]


def copy_result(source: Run, target: Run, summary: dict) -> dict:
    """``target`` is ``source`` but for ρ (which GD ignores) or for SAM/USAM at ρ = 0 (which is GD): the
    same rows, its own config, its own summary saying ``same_as``."""
    digest = write_config(target.dir, target.config, source.inputs)  # its folder made and locked by run()
    target.write_hydra_record()
    metrics = target.dir / METRICS
    # After a kill between this copy's metrics.csv and its summary, metrics.csv may be the source's file already:
    # renaming another link of that file onto it would do nothing (POSIX) and leave the temp link behind.
    if not (metrics.exists() and os.path.samefile(metrics, source.dir / METRICS)):
        write_atomic(metrics, lambda tmp: link_or_copy(source.dir / METRICS, tmp), clean=False)
    result = {**summary, **target.identity(), "fingerprint": digest, "same_as": str(source.dir)}
    write_atomic(target.dir / SUMMARY, result, clean=False)
    return result


def execute(base: DictConfig, runs: Sequence[Run], states: Sequence[str], threads: int | None = None) -> list[dict]:
    """Runs configurations of ``base`` that differ only in opt.name and BATCH_VALUES (:func:`batch_key`) as one
    batch: the task is built once with one parameter slice per configuration, the optimizer gets per-slice η,
    ρ and normalization, the trainer per-configuration steps and LR schedules, and each run gets its own
    folder. A task that cannot batch (``config_dim = False``) is built once and runs the configurations one
    after another. ``threads``: torch's CPU threads during the run (None: ``base.threads``; if that is unset
    too, one for a batch on the CPU — its tensors are small and a second intra-op thread only adds overhead:
    a 2,700-configuration quadratic sweep took 43.5 s wall with torch's 2 threads, 18.8 s with 1 — else
    unchanged). ``until``, ``checkpoint_every``, ``epoch_units`` and ``progress``: see conf/config.yaml.
    """
    device = resolve_device(base.device)
    task = tasks.build(base.task, len(runs), device)
    unit = task.steps_per_epoch if base.epoch_units else 1
    until = dict(base.until or {})
    checkpoint_every = base.checkpoint_every * unit
    jobs = list(zip(runs, states, strict=True))
    groups = [jobs] if task.config_dim else [[job] for job in jobs]
    default_threads = torch.get_num_threads()
    threads = threads or base.threads or (1 if task.config_dim and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    try:
        return [summary for group in groups for summary in _run_group(base, task, group, unit, until, checkpoint_every)]
    finally:
        torch.set_num_threads(default_threads)


def _run_group(base: DictConfig, task: tasks.Task, group: Sequence[tuple[Run, str]], unit: int,
               until: dict, checkpoint_every: int) -> list[dict]:
    """One batch of ``execute``: the optimizer, the run folders (resuming from a checkpoint), the trainer."""
    values = {key: [r.values[key] for r, _ in group] for key in ("opt", "lr", "rho", "seed")}
    try:
        optimizer = SAM(task.init_params(values["seed"]), values["opt"], values["lr"], values["rho"],
                        config_dim=task.config_dim, momentum=base.opt.momentum,
                        weight_decay=base.opt.weight_decay, eps=base.opt.eps)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    start = 0
    first, state = group[0]
    if checkpoint_every and state == "resume" and (first.dir / CHECKPOINT).exists():
        start = load_checkpoint(first.dir, task, optimizer)
        log.info("resumed from step %d: %s", start, first.dir)
    steps = [r.config["steps"] * unit for r, _ in group]  # each configuration leaves the batch after its own
    lr_factors = [lr_schedule(s["name"], s["final_ratio"], (s["horizon"] or r.config["steps"]) * unit)
                  for r, _ in group for s in [r.config["lr_schedule"]]]  # each on its own horizon
    records = [RunRecord(r.dir, r.identity(), task.metric_names, r.config, r.inputs, resume_step=start)
               for r, _ in group]  # each writes its config.yaml, samrepro's marker, first
    for r, _ in group:
        r.write_hydra_record()
    return train(task, optimizer, records, steps=steps, log_every=base.log_every * unit,
                 loss_ceiling=base.loss_ceiling, seeds=values["seed"], progress=base.progress, lr_factors=lr_factors,
                 until=until, checkpoint_every=checkpoint_every, start_step=start)


# ------------------------------------------------------------------------------------------------ stages

def run_stage(cfg: DictConfig, run_dir: Path, hydra_record: dict) -> dict:
    """``samrepro … stage=<name>``: the phases of ``cfg.stage`` in order, each in ``<run dir>/<phase>/``
    (its own run folder), phase k starting from the model phase k−1 ended with. Each phase must end by
    reaching its ``until``; a phase stopped by its step cap keeps its checkpoint and is continued, in the
    same folder, by raising its ``steps`` (the error says how; a decaying LR schedule is on the phase's
    fixed ``lr_schedule.horizon``, so it goes on as before the cap). Finished phases are skipped. The final
    model is saved to ``stage.save_to`` with the recipe and each phase's final metrics, exported again from
    the final phase's checkpoint when a finished stage's ``save_to`` is missing (or another path).

    The stage folder's own record leaves out the phases' step caps, which a continued phase raises."""
    run_dir = Path(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    record = {**resolved, "stage": {**resolved["stage"], "phases": {  # without the phases' step caps
        n: {k: v for k, v in p.items() if k != "steps"} for n, p in resolved["stage"]["phases"].items()}}}
    for name, overrides in cfg.stage.phases.items():  # every phase checked before any runs (its init: not yet)
        phase = OmegaConf.to_container(phase_config(cfg, overrides, None), resolve=True)
        check_config(phase)
        require(phase["lr_schedule"]["name"] == "constant" or phase["lr_schedule"]["horizon"],
                f"stage.phases.{name}.lr_schedule.horizon", None, "must be set: a raised cap must not move it")
    inputs = run_inputs(record)
    if claim(run_dir, record, inputs, own=list(cfg.stage.phases)) == "done" and Path(cfg.stage.save_to).exists():
        log.info("skipped (finished with this config): %s", run_dir)
        return read_summary(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_run_temps(run_dir)  # its writes below skip that, as a locked run folder's
    digest = write_config(run_dir, record, inputs)
    Run(record, run_dir, hydra_record).write_hydra_record()
    init, phases = None, {}
    for name, overrides in cfg.stage.phases.items():
        phase = phase_config(cfg, overrides, init)
        phase_dir = run_dir / name
        summary = run([Run(OmegaConf.to_container(phase, resolve=True), phase_dir)])[0]
        summary.pop("skipped", None)
        if summary["status"] != "completed":
            raise ConfigError(f"stage.phases.{name}: {summary['status']} after {summary['steps_done']} steps "
                              f"({summary['final']}); its run folder {phase_dir} is kept")
        if not summary.get("until_reached"):
            raise ConfigError(
                f"stage.phases.{name}: stopped at its cap of steps={phase.steps} ({summary['final']}) before "
                f"until={dict(phase.until or {})}; its checkpoint is kept in {phase_dir} — continue it there "
                f"by running the same command with stage.phases.{name}.steps={2 * phase.steps}")
        phases[name] = summary
        init = phase_dir / CHECKPOINT
    save_to = Path(cfg.stage.save_to)
    save_to.parent.mkdir(parents=True, exist_ok=True)
    final = summary["final"]  # the last phase's
    model = {"model": torch.load(init, map_location="cpu", weights_only=True)["task"]["model"], "recipe": resolved,
             "metrics": final, "phases": {k: v["final"] for k, v in phases.items()}}
    write_atomic(save_to, lambda tmp: torch.save(model, tmp))
    summary = {"status": "completed", "steps_done": sum(p["steps_done"] for p in phases.values()), "final": final,
               "checkpoint": str(save_to), "phases": phases, "fingerprint": digest,
               "inputs": inputs}
    write_atomic(run_dir / "summary.json", summary)
    return summary


def phase_config(cfg: DictConfig, overrides: DictConfig, init: Path | None) -> DictConfig:
    """The run config of one phase: ``cfg`` without its stage, with the phase's overrides."""
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "stage"])
    OmegaConf.set_struct(base, False)
    merged = OmegaConf.merge(base, overrides)
    if init is not None:
        merged.task.init = str(init)
    return merged
