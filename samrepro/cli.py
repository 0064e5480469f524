"""``samrepro task=<name> opt=<gd|sam|usam|gd_ascent> lr=η rho=ρ steps=N seed=s`` (DESIGN §2).

The thin entry point: check the command line, hand it to Hydra, and run the composed config through
:mod:`samrepro.runner`. ``samrepro -m …`` runs a sweep through Hydra's sweeper and a launcher (by default
samrepro's batched one, :mod:`samrepro.launcher`); finished runs are skipped. Bad input ends with exit
code 2 and one line naming the key and what is allowed, and leaves every folder as it was.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra_plugins.samrepro_launcher import (
    BatchedJoblibLauncher,
    BatchedLauncher,
    BatchedSubmititLauncher,
    BatchedSweeper,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from samrepro import runner
from samrepro.config import ConfigError, fail, require, validate

log = logging.getLogger("samrepro")
CONF_MODULE = "samrepro.conf"
for plugin in (BatchedSweeper, BatchedLauncher, BatchedJoblibLauncher, BatchedSubmititLauncher):
    Plugins.instance().register(plugin)  # Hydra's own scan misses editable installs


def hydra_record(cfg: DictConfig) -> dict:
    """The ``.hydra/`` record Hydra's own ``run_job`` writes (it is off in conf/config.yaml, so that
    samrepro writes it only into a folder it has checked)."""
    hydra_cfg = HydraConfig.instance().cfg
    return {"config.yaml": OmegaConf.to_container(cfg, resolve=False),
            "hydra.yaml": OmegaConf.to_container(hydra_cfg, resolve=False, enum_to_str=True),
            "overrides.yaml": OmegaConf.to_container(hydra_cfg.hydra.overrides.task)}


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="config")
def run(cfg: DictConfig) -> dict:
    """One job (``samrepro …``, or a job of a sweep under Hydra's basic, joblib or submitit launcher);
    returns its summary and ``run_dir``, as the batched launcher does for each of its jobs."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        validate(cfg)
        if "stage" in cfg:
            summary = runner.run_stage(cfg, run_dir, hydra_record(cfg))
        else:
            job = runner.Run(OmegaConf.to_container(cfg, resolve=True), run_dir, hydra_record(cfg))
            summary = runner.run([job], threads=runner.thread_share(cfg.threads, hydra_cfg.launcher))[0]
    except ConfigError as err:
        fail(str(err))
    final = ", ".join(f"{k}={v:.6g}" for k, v in summary["final"].items())
    log.info("%s after %d steps: %s -> %s", summary["status"], summary["steps_done"], final, run_dir)
    return {**summary, "run_dir": str(run_dir)}


def multirun(overrides: Sequence[str]) -> list[Path]:
    """``samrepro -m <overrides>`` in this process (Hydra's sweeper and the configured launcher, by default
    the batched one); returns the jobs' run folders in job order. Bad input raises SystemExit(2) after
    its one line, as on the command line."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    check_overrides(overrides, multirun=True)
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE, job_name="cli"):
        returns = GlobalHydra.instance().hydra.multirun(config_name="config", task_function=run.__wrapped__,
                                                        overrides=[*overrides, "hydra.mode=MULTIRUN"],
                                                        with_log_configuration=False)
    return [Path(r.return_value["run_dir"]) for batch in returns for r in batch]


def config_groups() -> dict[str, list[str]]:
    """The config groups (task, opt, experiment, …) and the names each allows."""
    root = resources.files(CONF_MODULE)
    return {d.name: sorted(f.name.removesuffix(".yaml") for f in d.iterdir() if f.name.endswith(".yaml"))
            for d in root.iterdir() if d.is_dir() and not d.name.startswith("__")}


def check_overrides(args: Sequence[str], multirun: bool = False) -> Path:
    """Catches bad command-line input before Hydra creates any folder (one line per error); returns the
    run (or sweep) folder of the first combination. Each swept value is checked once, with the other keys
    at their first value: composed for a config group's choice, set into the first config otherwise (the
    launcher checks every job's own combination again, cheaply, before anything runs)."""
    from hydra import initialize_config_module

    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(list(args))
    except HydraException as err:
        raise ConfigError(f"malformed override: {str(err).splitlines()[0]}") from err
    groups = config_groups()
    alternatives = []  # (the override of the first combination, the others of a swept key)
    for o in overrides:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        if o.key_or_group in groups:
            for v in values:
                require(v in groups[o.key_or_group], o.key_or_group, v,
                        f"unknown; allowed: {', '.join(groups[o.key_or_group])}")
        prefix = o.input_line[: len(o.input_line) - len(o.input_line.lstrip("+~"))]
        lines = [f"{prefix}{o.key_or_group}={v}" for v in values] if o.is_sweep_override() else [o.input_line]
        alternatives.append((lines[0], lines[1:], o.key_or_group in groups))
    firsts = [first for first, _, _ in alternatives]
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        base = _compose(firsts)
        folder = check_output_folder(base, multirun)
        for i, (_, others, is_group) in enumerate(alternatives):
            for line in others:  # a group's other choice is composed; a value is set into the first config
                if is_group:
                    _compose([*firsts[:i], line, *firsts[i + 1:]])
                else:
                    cfg = copy.deepcopy(base)
                    o = parser.parse_override(line)
                    with open_dict(cfg):
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
                    validate(cfg)
    return folder


def _compose(overrides: Sequence[str]) -> DictConfig:
    """Hydra's compose of ``overrides`` (with its hydra node), validated."""
    from hydra import compose

    try:
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    except HydraException as err:
        raise ConfigError(str(err).splitlines()[0]) from err
    validate(cfg)
    return cfg


def check_output_folder(cfg: DictConfig, multirun: bool) -> Path:
    """The run (or sweep) folder, which must be creatable: its first existing ancestor a writable folder."""
    saved = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        folder = Path(str(OmegaConf.select(cfg, key)))
    finally:
        HydraConfig.instance().cfg = saved
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    require(existing.is_dir(), key, folder, f"{existing} is a file, not a folder; choose another folder")
    require(os.access(existing, os.W_OK | os.X_OK), key, folder, f"{existing} is not writable; choose another folder")
    return folder


def main() -> None:
    """Console entry point: validate the command line, then hand over to Hydra."""
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        folder = check_overrides(overrides, multirun=bool({"-m", "--multirun"} & set(sys.argv[1:])))
    except ConfigError as err:
        fail(str(err))
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        run()
    except SystemExit:  # a one-line error: remove the empty folders this command made, nothing else
        for p in created:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    except KeyboardInterrupt:
        print("samrepro: interrupted; finished rows and summary.json (status interrupted) are kept",
              file=sys.stderr)
        sys.exit(130)

