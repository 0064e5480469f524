"""Batched execution of a Hydra sweep: the jobs of ``samrepro -m experiment=<id>`` in one process.

``expand`` lists the jobs exactly as Hydra's basic sweeper would (``hydra.sweeper.params`` of the
experiment config × command-line sweeps). ``run_jobs`` writes each job into the run folder that
``samrepro -m`` would use (named by Hydra's own rule), skips finished ones, and runs the rest
batched: jobs that differ only in ``opt`` (gd/sam/usam), ``lr``, ``rho`` and ``seed`` share one task
with a configuration dimension, so a 30×30 grid costs one run's Python overhead, not 900.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from samrepro.cli import CONF_MODULE, execute
from samrepro.config import run_values, validate, validate_run
from samrepro.records import dump_yaml, is_finished

BATCH_KEYS = ("opt", "lr", "rho", "seed")  # `opt` batches too, except gd_ascent
MAX_BATCH = 4096


def expand(experiment: str, extra: Sequence[str] = ()) -> list[list[str]]:
    """The override list of every job of ``samrepro -m experiment=<experiment> <extra…>``."""
    args = [f"experiment={experiment}", *extra]
    fixed = [o.input_line for o in _parser().parse_overrides(args) if not o.is_sweep_override()]
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        hydra_cfg = compose("config", overrides=fixed, return_hydra_config=True).hydra
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.params or {}).items()]
    return BasicSweeper.split_arguments(_parser().parse_overrides(params + args), None)[0]


@cache
def _parse(item: str) -> Override:
    return _parser().parse_override(item)


@cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _is_batched(o: Override) -> bool:
    return o.key_or_group in BATCH_KEYS and not (o.key_or_group == "opt" and o.value() == "gd_ascent")


def run_jobs(jobs: Sequence[Sequence[str]], progress: bool = False) -> list[Path]:
    """Runs the unfinished jobs batched; returns every job's run folder (in job order)."""
    groups: dict[tuple[str, ...], list[tuple[dict, Path]]] = defaultdict(list)
    bases: dict[tuple[str, ...], tuple[DictConfig, dict]] = {}  # shared → (config, run-folder rule)
    run_dirs = []
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        for job in jobs:
            parsed = [_parse(item) for item in job]
            shared = tuple(o.input_line for o in parsed if not _is_batched(o))
            if shared not in bases:
                hydra_cfg = compose("config", overrides=list(shared), return_hydra_config=True).hydra
                bases[shared] = (compose("config", overrides=list(shared)), _dirname_rule(hydra_cfg))
            base, rule = bases[shared]
            run_dir = _run_dir(parsed, rule)
            run_dirs.append(run_dir)
            if not is_finished(run_dir):
                values = run_values(base)
                values.update({o.key_or_group: o.value() for o in parsed if _is_batched(o)})
                groups[shared].append((values, run_dir))
    for shared, members in groups.items():
        base = bases[shared][0]
        validate(base)
        container = OmegaConf.to_container(base, resolve=True)
        for values, run_dir in members:
            validate_run(**values)
            _write_hydra_record(run_dir, container, values, shared)
        for start in range(0, len(members), MAX_BATCH):
            chunk = members[start:start + MAX_BATCH]
            execute(base, [v for v, _ in chunk], [d for _, d in chunk], progress=progress, threads=base.threads)
    return run_dirs


def _run_dir(job: Sequence[Override], rule: dict) -> Path:
    """``hydra.sweep.dir / hydra.sweep.subdir`` of a job, named by Hydra's own rule."""
    dirname = get_overrides_dirname(list(job), rule["exclude_keys"], rule["item_sep"], rule["kv_sep"])
    return Path(rule["sweep_dir"]) / (dirname or "defaults")


def _dirname_rule(hydra_cfg: DictConfig) -> dict:
    return {**OmegaConf.to_container(hydra_cfg.job.config.override_dirname), "sweep_dir": hydra_cfg.sweep.dir}


def _write_hydra_record(run_dir: Path, container: dict, values: dict, shared: Sequence[str]) -> None:
    """The ``.hydra/`` record a CLI run would have: its full config and its overrides."""
    cfg = {**container, **{k: v for k, v in values.items() if k != "opt"},
           "opt": {**container["opt"], "name": values["opt"]}}
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / ".hydra" / "config.yaml")
    dump_yaml([*shared, *(f"{k}={v}" for k, v in values.items())], run_dir / ".hydra" / "overrides.yaml")
