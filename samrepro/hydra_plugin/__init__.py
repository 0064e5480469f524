"""The batched Hydra sweeper and launcher, defaults of ``samrepro -m`` (conf/hydra/), installed as
``hydra_plugins.samrepro_launcher`` (and registered by :mod:`samrepro.cli`: Hydra's scan misses editable installs).

The sweeper makes Hydra's basic sweeper's jobs, in its order, for any launcher, but checks every job before
any folder is made: it composes each distinct set of overrides other than ``lr``, ``rho`` and ``seed`` once
(Hydra composes every job: minutes for a 30 × 30 × 3 grid) and applies each job's scalars to that unresolved
config, so each job's config is the one Hydra composes for it. Each job gets the run folder and ``.hydra/``
record Hydra's launcher would write; the launcher runs them all batched (:func:`samrepro.runner.run`), and its
joblib and submitit variants (``local_parallel``, ``slurm``, ``batched_submitit_local``) in chunks
(:func:`chunk`), each batched in a worker process or job.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import itertools
import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from samrepro.config import ConfigError, fail, interruption, is_int, require, run_dirname, validate
from samrepro.records import YamlDumper, YamlLoader, read_summary, write_atomic

if TYPE_CHECKING:  # the runner imports torch: it is imported once runs are built, not to print --help
    from samrepro import runner

log = logging.getLogger(__name__)
SCALARS = ("lr", "rho", "seed")
JOB_KEYS = ("override_dirname", "id", "num")  # what Hydra's launcher sets in hydra.job for each job
SWEEP_MARKER = "# samrepro sweep record"  # multirun.yaml's first line: samrepro wrote it
DEFAULT_SUBDIR = "${run_dirname:${hydra:job.override_dirname}}"  # conf/config.yaml's hydra.sweep.subdir


def hydra_record(cfg: DictConfig, hydra: dict) -> dict:
    """The ``.hydra/`` record Hydra's own ``run_job`` writes (off in conf/config.yaml, so that samrepro
    writes it only into a folder it has checked): the unresolved config, the hydra node, the overrides."""
    return {"config.yaml": OmegaConf.to_container(cfg, resolve=False), "hydra.yaml": hydra,
            "overrides.yaml": hydra["hydra"]["overrides"]["task"]}


def job_value(summary: dict, objective: str | None) -> dict | float:
    """What a job returns to its sweeper: its summary (with ``run_dir``), or with ``objective=final.<metric>``
    that final metric as a float, for sweepers that optimize (Optuna, Nevergrad)."""
    if objective is None:
        return summary
    metric = objective.removeprefix("final.")
    require(metric in summary["final"], "objective", objective,
            f"unknown metric; allowed: {', '.join(f'final.{m}' for m in summary['final'])}")
    return float(summary["final"][metric])


def hydra_error_line(err: Exception) -> str:
    """One line of a Hydra or OmegaConf error; an unknown config-group choice lists the allowed ones."""
    if isinstance(err, MissingConfigException) and err.options:
        group = os.path.dirname(err.missing_cfg_file)
        choice = os.path.basename(err.missing_cfg_file)
        return f"{group}={choice}: unknown; allowed: {', '.join(sorted(err.options))}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    if lines[0].startswith("Ambiguous value for argument"):
        return f"{lines[0].split(' ', 4)[-1]}: a sweep needs -m (samrepro -m …); a list is key=[a,b]"
    if lines[0].startswith("Error parsing override"):
        return f"malformed override: {' '.join(lines[:2])}"
    return " ".join(lines[:2])


def checked_folder(cfg: DictConfig, key: str) -> Path:
    """The output folder ``key`` (``hydra.run.dir`` or ``hydra.sweep.dir``) of a valid composed config, which
    must be creatable: its first existing ancestor a writable folder; else one line and exit 2."""
    saved = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)  # what ${hydra:…} interpolations read
        validate(cfg)
        folder = Path(str(OmegaConf.select(cfg, key)))
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        require(existing.is_dir(), key, folder, f"{existing} is a file, not a folder; choose another folder")
        require(os.access(existing, os.W_OK | os.X_OK), key, folder, f"{existing} is not writable; choose another "
                                                                       f"folder")
        return folder
    except ConfigError as err:
        fail(str(err))
    except OSError as err:  # e.g. a folder name too long
        fail(f"{key}={err.filename}: {err.strerror}")
    finally:
        HydraConfig.instance().cfg = saved


class Checks(Callback):
    """samrepro's Hydra callback (conf/config.yaml ``hydra.callbacks.samrepro``): checks the composed
    config and its output folder before Hydra makes any folder (one line, exit 2); after a single run that
    failed on bad input found later (a task's own keys), removes the empty folders that run made."""

    def __init__(self) -> None:
        self.created: list[Path] = []

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        folder = Path(os.path.abspath(checked_folder(config, "hydra.run.dir")))  # no '..' among its parents
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: object) -> None:
        error = job_return._return_value
        if job_return.status == JobStatus.FAILED and isinstance(error, ConfigError):
            for p in self.created:
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            fail(str(error))  # before Hydra reports the failed job in several lines

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        checked_folder(config, "hydra.sweep.dir")


_UNSIGNED = r"(?:0|[1-9]\d*)"  # Hydra's grammar (OverrideLexer.g4) for INT and FLOAT, without '_', inf and nan
_POINT = rf"(?:{_UNSIGNED}?\.\d+|{_UNSIGNED}\.)"
_NUMBER = re.compile(rf"({'|'.join(SCALARS)})=(?:(?P<int>[+-]?{_UNSIGNED})|(?P<float>[+-]?(?:(?:{_UNSIGNED}|{_POINT})"
                     rf"[eE][+-]?\d+|{_POINT})))")


@cache
def _parse(item: str) -> Override:
    """Hydra's parse of one override. ``lr``, ``rho`` or ``seed`` set to a plain number is read as Hydra's
    grammar reads it (int or float of the text) without its parser, which takes about a millisecond a string."""
    match = _NUMBER.fullmatch(item)
    if match is None:
        return OverridesParser.create().parse_override(item)
    value = int(match["int"]) if match["int"] is not None else float(match["float"])
    return Override(OverrideType.CHANGE, match[1], ValueType.ELEMENT, value, input_line=item)


@cache
def _yaml_item(line: str) -> str:
    return yaml.dump([line], Dumper=YamlDumper, allow_unicode=True)


def overrides_yaml(lines: Sequence[str]) -> str:
    """The overrides as Hydra's overrides.yaml (a YAML list of strings), each item rendered once per process."""
    return "".join(map(_yaml_item, lines)) if lines else "[]\n"


def _is_scalar(o: Override) -> bool:
    return o.key_or_group in SCALARS and o.type == OverrideType.CHANGE and not o.is_sweep_override()


def _shared(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides other than its scalar lr, rho and seed: the jobs that share them share a compose."""
    return tuple(o for o in overrides if not _is_scalar(_parse(o)))


class BatchedSweeper(Sweeper):
    """Hydra's basic sweeper (the Cartesian product of the swept values, ``hydra.sweeper.params`` first,
    then the command line's; a key given twice keeps its last value), with every job checked before any
    folder is made (one compose per group of jobs that differ only in lr, rho and seed), launched as one
    batch, and a summary of the sweep at the end."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        self.max_batch_size = max_batch_size  # jobs handed to the launcher at a time (None: all)
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def jobs(self, arguments: Sequence[str]) -> list[list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        choices: dict[str, list[str]] = {}
        for o in parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments]):
            key = o.get_key_element()
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    raise ConfigError(f"{o.input_line}: samrepro's sweeper (Hydra's basic semantics) takes lists, "
                                      f"range() and glob(); interval() and tag() need a sweeper that samples "
                                      f"them, e.g. hydra/sweeper=optuna")
                choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            else:
                choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        return [list(job) for job in itertools.product(*choices.values())]

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from samrepro import runner  # noqa: F401 (torch and the runner, imported before the freeze below)

        gc.freeze()  # what exists now (torch, Hydra, the config) lives as long as the sweep: the cyclic collector,
        try:  # which the allocations of a large sweep run hundreds of times, skips it (0.4 s of a 2,700-run sweep)
            return self._sweep(arguments)
        finally:
            gc.unfreeze()

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from samrepro import runner

        started = time.perf_counter()
        try:
            jobs = self.jobs(arguments)
            if len(jobs) > 1000:  # a huge sweep says what it does before the checks that precede any write
                log.info(f"{len(jobs)} jobs: checking every config and folder before any run starts")
            require(self.max_batch_size is None or (is_int(self.max_batch_size) and self.max_batch_size > 0),
                    "hydra.sweeper.max_batch_size", self.max_batch_size, "must be null or an integer > 0")
            runs = build_runs(self.hydra_context, self.config, jobs, 0)  # every job's config, composed
            claims = runner.check(runs)  # every config and folder checked before the sweep makes any folder
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            record = sweep_dir / "multirun.yaml"
            old = record.read_text(errors="replace") if record.is_file() else None
            require(old is None or sweep_record(old), "hydra.sweep.dir", sweep_dir, f"its {record.name} is not a "
                    f"sweep's record (no '{SWEEP_MARKER}' line); it is left as it was — choose another folder (name=…)")
        except ConfigError as err:
            fail(str(err))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        text = f"{SWEEP_MARKER}\n{OmegaConf.to_yaml(self.config)}"
        if old != text:  # a finished sweep run again writes nothing
            write_atomic(record, text)
        size = self.max_batch_size or len(jobs)
        returns = []
        for start in range(0, len(jobs), size):
            batch, part = (jobs[start:start + size], start), slice(start, start + size)
            returns.append(self.launcher.launch(*batch, runs=runs[part], claims=claims[part])
                           if isinstance(self.launcher, BatchedLauncher) else self.launcher.launch(*batch))
            for r in returns[-1]:
                _ = r.return_value  # raises a failed job's exception
        log.info(sweep_report([r for batch in returns for r in batch], sweep_dir, time.perf_counter() - started))
        return returns


def sweep_record(text: str) -> bool:
    """Whether ``text`` is a sweep's multirun.yaml: samrepro's (its marker line), or Hydra's own record of a
    multirun (an older samrepro's, or Hydra's launcher's), which a sweep rewrites as Hydra does."""
    try:
        return text.startswith(SWEEP_MARKER) or yaml.load(text, Loader=YamlLoader)["hydra"]["mode"] == "MULTIRUN"
    except (ValueError, yaml.YAMLError, TypeError, KeyError):
        return False


def sweep_report(returns: Sequence[JobReturn], sweep_dir: Path, seconds: float) -> str:
    """The line that ends a sweep: how its runs ended, how long it took, where they are, what to do next."""
    summaries = [r.return_value if isinstance(r.return_value, dict) else
                 read_summary(Path(r.hydra_cfg.hydra.runtime.output_dir)) or {} for r in returns]
    counts = Counter("skipped" if s.get("skipped") else s.get("status", "failed") for s in summaries)
    dead = sum(bool(s.get("dead")) for s in summaries)
    parts = [f"{counts.pop(k)} {k}" for k in ("completed", "diverged", "interrupted", "skipped") if k in counts]
    parts += [f"{n} {k}" for k, n in counts.items()] + ([f"{dead} dead"] if dead else [])
    return (f"{len(returns)} runs: {', '.join(parts)} in {seconds:.1f} s → {sweep_dir}\n"
            f"next: samrepro-collect {sweep_dir} -o {sweep_dir}/runs.csv   |   samrepro-plot {sweep_dir}")


def override_dirname(overrides: Sequence[Override], rule: dict) -> str:
    """Hydra's ``hydra.job.override_dirname`` (``rule``: hydra.job.config.override_dirname): the task
    overrides not excluded, sorted, joined."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in rule["exclude_keys"])
    return re.sub("=", rule["kv_sep"], rule["item_sep"].join(lines))


class _Template:
    """The composed config shared by the jobs that differ only in lr, rho and seed."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.task_keys = [k for k in cfg if k != "hydra"]
        self.task = OmegaConf.to_container(OmegaConf.masked_copy(cfg, self.task_keys), resolve=False)
        # hydra.yaml once, with a placeholder for each value a job sets; a job fills them in (JSON scalars
        # and lists are YAML): dumping ~150 lines per job would cost more than a small step
        hydra = OmegaConf.to_container(cfg.hydra, resolve=False, enum_to_str=True)
        hydra["job"].update({k: f"__samrepro_{k}__" for k in JOB_KEYS})
        hydra["overrides"]["task"] = "__samrepro_task__"
        hydra["runtime"]["output_dir"] = "__samrepro_output_dir__"
        self.hydra_yaml = yaml.dump({"hydra": hydra}, Dumper=YamlDumper, sort_keys=False, allow_unicode=True)
        self.rule = OmegaConf.to_container(cfg.hydra.job.config.override_dirname, resolve=True)
        # A job's folder in plain Python where it depends on the job only through override_dirname (the
        # default subdir, no interpolation in the task keys): resolving it with OmegaConf per job costs
        # more than a small step
        sweep = hydra["sweep"]
        self.plain_dir = None if "${" in json.dumps(self.task, default=str) or sweep["subdir"] != DEFAULT_SUBDIR or any(
            f"{k}}}" in str(sweep["dir"]) for k in ("hydra:job.", *SCALARS)) else str(cfg.hydra.sweep.dir)

    def job(self, overrides: Sequence[str], idx: int) -> runner.Run:
        """The run of one job: its resolved config, its folder and its ``.hydra/`` record."""
        from samrepro import runner

        parsed = [_parse(o) for o in overrides]
        scalars = {o.key_or_group: o.value() for o in parsed if _is_scalar(o)}
        task_overrides = [o for o in parsed if not o.is_hydra_override()]
        dirname = override_dirname(task_overrides, self.rule)
        job = {"override_dirname": dirname, "id": str(idx), "num": idx}
        if self.plain_dir is not None:
            run_dir, resolved = Path(self.plain_dir) / run_dirname(dirname), None
        else:
            current = HydraConfig.instance().cfg.hydra  # what ${hydra:…} reads: this template's copy
            with open_dict(self.cfg), read_write(self.cfg.hydra), read_write(current):
                self.cfg.update(scalars)
                self.cfg.hydra.job.update(job)
                current.job.update(job)
                run_dir = Path(str(self.cfg.hydra.sweep.dir)) / str(self.cfg.hydra.sweep.subdir)
                current.runtime.output_dir = os.path.abspath(run_dir)  # ${hydra:runtime.output_dir}
                resolved = {k: OmegaConf.to_container(self.cfg[k], resolve=True) if OmegaConf.is_config(self.cfg[k])
                            else self.cfg[k] for k in self.task_keys}
        task = {**self.task, **scalars}  # top-level keys only change: the nested dicts are shared, never mutated
        lines = [o.input_line for o in task_overrides]
        values = {**job, "task": lines, "output_dir": os.path.abspath(run_dir)}
        hydra_yaml = re.sub(r"__samrepro_(\w+?)__", lambda m: json.dumps(values[m.group(1)]), self.hydra_yaml)
        record = {"config.yaml": task, "hydra.yaml": hydra_yaml, "overrides.yaml": overrides_yaml(lines)}
        return runner.Run(resolved or task, run_dir, record)


def build_runs(hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> list[runner.Run]:
    """Each job's run (config, folder, ``.hydra/`` record), composed once per group of jobs that differ only
    in lr, rho and seed; a compose error is a ConfigError naming the job's overrides."""
    by_template: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, overrides in enumerate(job_overrides):
        by_template[_shared(overrides)].append(i)
    runs: list[runner.Run | None] = [None] * len(job_overrides)
    saved = HydraConfig.instance().cfg
    try:
        for shared, members in by_template.items():
            try:
                cfg = hydra_context.config_loader.load_sweep_config(config, list(shared))
            except HydraException as err:
                raise ConfigError(hydra_error_line(err)) from err
            HydraConfig.instance().set_config(cfg)
            validate(cfg)  # the keys as composed (a resolved config no longer shows what reads a key of the user's)
            template = _Template(cfg)
            for i in members:
                runs[i] = template.job(job_overrides[i], initial_job_idx + i)
    finally:
        HydraConfig.instance().cfg = saved
    return runs


def _listening(callbacks: object, *events: str) -> list[Callback]:
    """The configured callbacks that implement one of ``events`` (samrepro's own Checks does not)."""
    return [c for c in getattr(callbacks, "callbacks", []) if any(
        getattr(type(c), e, None) is not getattr(Callback, e) for e in events)]


class BatchedLauncher(Launcher):
    """Runs a whole sweep in this process, batched (see the module docstring)."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               runs: Sequence[runner.Run] | None = None, claims: Sequence[str] | None = None) -> Sequence[JobReturn]:
        """Runs the jobs (``runs``: their runs, when the sweeper has built them already, and ``claims``: what
        its :func:`samrepro.runner.check` of them said). Hydra's callbacks get on_job_start for every job before
        the batch starts and on_job_end for each after it ends."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(f"Launching {len(job_overrides)} jobs batched")
        try:
            runs = runs or build_runs(self.hydra_context, self.config, job_overrides, initial_job_idx)
            listeners = _listening(self.hydra_context.callbacks, "on_job_start", "on_job_end")
            job_configs = [self.job_config(r, o) for r, o in zip(runs, job_overrides)] if listeners else []
            for c in job_configs:
                self.hydra_context.callbacks.on_job_start(config=c, task_function=self.task_function)
            summaries = self.execute(list(runs), claims)
        except ConfigError as err:
            fail(str(err))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        objective = self.config.get("objective")
        returns, cwd, name = [], os.getcwd(), self.config.hydra.job.name
        for o, r, s in zip(job_overrides, runs, summaries):
            value = job_value({**s, "run_dir": str(r.dir)}, objective)
            ret = JobReturn(overrides=list(o), working_dir=cwd, task_name=name, status=JobStatus.COMPLETED,
                            _return_value=value)
            if listeners or objective is not None:  # what they read (a DictConfig per job: ~0.3 ms each)
                ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": os.path.abspath(r.dir)}}})
            returns.append(ret)
        for c, ret in zip(job_configs, returns):
            self.hydra_context.callbacks.on_job_end(config=c, job_return=ret)
        return returns

    def job_config(self, run: runner.Run, overrides: Sequence[str]) -> DictConfig:
        """A job's config as Hydra's own launcher hands it to callbacks: the run's config and its hydra node."""
        hydra = yaml.load(run.hydra_record["hydra.yaml"], Loader=YamlLoader)
        return OmegaConf.create({**run.config, **hydra})

    def execute(self, runs: list[runner.Run], claims: Sequence[str] | None = None) -> list[dict]:
        """The runs' summaries, in order: all of them in this process, batched."""
        from samrepro import runner

        return runner.run(runs, claims=claims)


def chunk(runs: Sequence[runner.Run], n: int) -> list[list[int]]:
    """The runs split into at most ``n`` chunks (job indices, each chunk in job order) that compute about as
    many configurations each: the runs of one GD computation (:func:`samrepro.runner.gd_key`) stay together;
    the batch groups (:func:`samrepro.runner.batch_key`), largest first, are laid end to end and cut into
    ``n`` equal parts, so that at most n − 1 of them are split."""
    from samrepro import runner

    units: dict[str | int, list[int]] = {}  # a computed configuration (a GD one, or one run) → its runs
    for i, r in enumerate(runs):
        units.setdefault(runner.gd_key(r.config) or i, []).append(i)
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units.values():
        groups[runner.batch_key(runs[unit[0]].config)].append(unit)
    laid = [unit for group in sorted(groups.values(), key=len, reverse=True) for unit in group]  # stable sort
    n = max(1, min(n, len(laid)))
    chunks: list[list[int]] = [[] for _ in range(n)]
    for j, unit in enumerate(laid):
        chunks[j * n // len(laid)].extend(unit)
    return [sorted(c) for c in chunks]


class RunChunk:
    """:func:`samrepro.runner.run` of one chunk in a worker or job, from the sweep's working folder (the run
    folders may be relative; a reused worker may have started elsewhere); a ConfigError comes back as its
    message. Checkpointable as submitit defines it: a preempted or timed-out job is requeued with the same
    chunk, whose finished runs are then skipped and the others resumed (from their checkpoints, if any); its
    signal handler's exit stays an exit when OmegaConf, interrupted by it, raises its own error instead."""

    def __call__(self, runs: list[runner.Run], threads: int | None, cwd: str) -> list[dict] | str:
        from samrepro import runner

        os.chdir(cwd)
        try:
            return runner.run(runs, threads=threads)
        except Exception as err:
            if (stop := interruption(err)) is not None:
                raise stop from None
            if isinstance(err, ConfigError):
                return str(err)
            raise

    def checkpoint(self, *args: object) -> object:
        """submitit's Checkpointable.checkpoint: the same call, to run again once the job is requeued."""
        return _library("submitit").helpers.DelayedSubmission(self, *args)


def _library(name: str) -> ModuleType:
    """An optional launcher library (pyproject's ``launchers`` extra), or a one-line error."""
    try:
        return importlib.import_module(name)
    except ImportError:
        fail(f"hydra/launcher: needs the {name} library: pip install -e '.[launchers]'")


def _check_setting(ok: bool, key: str, value: object, allowed: str) -> None:
    """A launcher setting, checked when Hydra builds the launcher (before the sweep makes any folder)."""
    if not ok:
        fail(f"hydra.launcher.{key}={value}: {allowed}")


class _ChunkedLauncher(BatchedLauncher):
    """Runs the sweep's runs in chunks (:func:`chunk`) elsewhere — worker processes, jobs — each batched."""

    def n_chunks(self, n_runs: int) -> int:
        raise NotImplementedError

    def map(self, chunks: list[list[runner.Run]], threads: int | None) -> list[list[dict] | str]:
        """Each chunk's :class:`RunChunk`, in order."""
        raise NotImplementedError

    def execute(self, runs: list[runner.Run], claims: Sequence[str] | None = None) -> list[dict]:
        from samrepro import runner

        if claims is None:  # a bad config or folder ends the sweep here, before any chunk has written a file
            runner.check(runs)
        chunks = chunk(runs, self.n_chunks(len(runs)))
        threads = runner.thread_share(self.config.threads, self.config.hydra.launcher)
        results = self.map([[runs[i] for i in c] for c in chunks], threads)
        log.info(f"{len(chunks)} chunks of {', '.join(str(len(c)) for c in chunks)} runs, "
                 f"{threads or 'default'} torch threads each")
        summaries: list[dict] = [{}] * len(runs)
        for members, result in zip(chunks, results, strict=True):
            if isinstance(result, str):  # a chunk's ConfigError
                raise ConfigError(result)
            for i, summary in zip(members, result, strict=True):
                summaries[i] = summary
        return summaries


class BatchedJoblibLauncher(_ChunkedLauncher):
    """The sweep in ``n_jobs`` worker processes (joblib; -1: one per core), one chunk of runs each
    (:func:`chunk`), batched. ``parallel``: joblib.Parallel's other arguments (backend, prefer, …)."""

    def __init__(self, n_jobs: int = -1, **parallel: object) -> None:
        super().__init__()
        _check_setting(is_int(n_jobs) and n_jobs != 0, "n_jobs", n_jobs, "must be a nonzero integer (-1: one per core)")
        self.joblib = _library("joblib")
        known = inspect.signature(self.joblib.Parallel).parameters
        for key, value in parallel.items():
            _check_setting(key in known, key, value, f"unknown; joblib.Parallel takes {', '.join(known)}")
        self.n_jobs, self.parallel = n_jobs, parallel

    def n_chunks(self, n_runs: int) -> int:
        return self.joblib.effective_n_jobs(self.n_jobs)

    def map(self, chunks: list[list[runner.Run]], threads: int | None) -> list[list[dict] | str]:
        try:
            pool = self.joblib.Parallel(n_jobs=self.n_jobs, **self.parallel)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"hydra.launcher: {err}") from err
        return pool(self.joblib.delayed(RunChunk())(runs, threads, os.getcwd()) for runs in chunks)


class BatchedSubmititLauncher(_ChunkedLauncher):
    """The sweep as submitit jobs (a Slurm job array, or local processes): one chunk of runs each
    (:func:`chunk`), batched. ``chunks``: at most this many jobs, more where ``max_runs_per_chunk`` asks;
    ``cluster``: slurm, local or debug (in this process); ``params``: submitit's (timeout_min, cpus_per_task,
    …), Slurm's without their ``slurm_`` prefix (partition, array_parallelism, …)."""

    GENERIC = ("name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node",
               "stderr_to_stdout")  # submitit's parameters for any cluster

    def __init__(self, cluster: str = "slurm", submitit_folder: str = ".submitit/%j", chunks: int = 64,
                 max_runs_per_chunk: int | None = None, **params: object) -> None:
        super().__init__()
        _check_setting(is_int(chunks) and chunks > 0, "chunks", chunks, "must be an integer > 0")
        _check_setting(max_runs_per_chunk is None or (is_int(max_runs_per_chunk) and max_runs_per_chunk > 0),
                       "max_runs_per_chunk", max_runs_per_chunk, "must be null or an integer > 0")
        _check_setting(cluster in ("slurm", "local", "debug"), "cluster", cluster,
                       "unknown; allowed: slurm, local, debug")
        self.chunks, self.max_runs_per_chunk = chunks, max_runs_per_chunk
        params = {k if k in self.GENERIC else f"slurm_{k}": OmegaConf.to_container(v, resolve=True)
                  if OmegaConf.is_config(v) else v for k, v in params.items()}
        try:
            self.executor = _library("submitit").AutoExecutor(folder=submitit_folder, cluster=cluster)  # Slurm: srun
            self.executor.update_parameters(**params)
        except (RuntimeError, NameError, AssertionError) as err:  # submitit's checks of the cluster and parameters
            fail(f"hydra.launcher: {str(err).splitlines()[0]}")

    def n_chunks(self, n_runs: int) -> int:
        return max(self.chunks, -(-n_runs // self.max_runs_per_chunk)) if self.max_runs_per_chunk else self.chunks

    def map(self, chunks: list[list[runner.Run]], threads: int | None) -> list[list[dict] | str]:
        jobs = self.executor.map_array(RunChunk(), chunks, [threads] * len(chunks), [os.getcwd()] * len(chunks))
        log.info(f"{len(jobs)} submitit jobs ({self.executor.cluster}): {self.executor.folder}")
        failed = [job for job in jobs if job.exception() is not None]  # waits for every job
        if failed:
            fail(f"{len(failed)} of {len(jobs)} submitit jobs failed (first: {failed[0].job_id}, log "
                 f"{failed[0].paths.stderr}); the same command again runs what is not finished")
        return [job.result() for job in jobs]
