"""Validation of a composed run config: one clear line per mistake, before anything is written; and the
run folder's name (``run_dirname``, a resolver of conf/config.yaml). Imports no torch, so that
``--help``, ``--cfg`` and every config error answer at once."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, NoReturn

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

OPT_RULES = ("gd", "sam", "usam", "gd_ascent")  # the update rules of samrepro.optim
LR_SCHEDULES = ("constant", "geometric", "multistep")  # implemented by samrepro.train.lr_schedule


class ConfigError(ValueError):
    """Bad user input. The message names the key and what is allowed; the CLI prints it as one line."""


def interruption(err: BaseException | None) -> BaseException | None:
    """The Ctrl-C, SIGTERM or signal handler's exit (KeyboardInterrupt, SystemExit) among ``err`` and its
    causes and contexts: Hydra and OmegaConf turn one raised inside them into their own errors."""
    pending, seen = [err], set()
    while pending:
        err = pending.pop()
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            return err
        if err is not None and id(err) not in seen:
            seen.add(id(err))
            pending += [err.__cause__, err.__context__]
    return None


def fail(message: str) -> NoReturn:
    """Ends the process as the CLI contract says: one line on stderr, exit code 2 — unless the error being
    handled was raised while handling an :func:`interruption`: that is raised again."""
    if (stop := interruption(sys.exc_info()[1])) is not None:
        raise stop
    print(f"samrepro: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# Keys that cannot change a result: left out of the fingerprint and of folder names (conf/config.yaml: exclude_keys)
NON_RESULT_KEYS = frozenset({"progress", "threads", "name", "device", "objective", "rerun", "task.data_root",
                             "task.download", "stage.save_to"})
OmegaConf.register_new_resolver("non_result_keys", lambda *groups: [*sorted(NON_RESULT_KEYS), *groups], replace=True)
_STEP_CAP = re.compile(r"stage\.phases\.[^.=,]+\.steps=\d+")


def run_dirname(override_dirname: str) -> str:
    """A run folder's name: Hydra's ``job.override_dirname`` without the stage phases' step caps (raising
    one continues that phase in the same folder), ``defaults`` when nothing is left; one folder, never a
    path: a ``/`` of a value (``task.init=ckpt/a.pt``) is written ``%2F``."""
    kept = [item for item in override_dirname.split(",") if not _STEP_CAP.fullmatch(item)]
    return ",".join(kept).replace("/", "%2F") or "defaults"


OmegaConf.register_new_resolver("run_dirname", run_dirname, replace=True)


def steps_to_time(time: float, lr: float) -> int:
    """round(time/η): the steps after which a run of step size η reaches time ηt = ``time`` (``steps:
    ${steps_to_time:10,${lr}}`` runs each η of a sweep to its own T = 10/η, as Ahn et al. 2023a Fig. 1)."""
    for name, value in (("time", time), ("lr", lr)):
        if not (is_number(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"steps_to_time: {name}={value}: must be a finite number > 0")
    return round(time / lr)


OmegaConf.register_new_resolver("steps_to_time", steps_to_time, replace=True)


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {allowed}")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------------ schema
# The types and allowed names of the keys every run has (conf/config.yaml, conf/opt/): OmegaConf checks a
# config against them; the values and their comments live in the YAML files only.
OptName = Enum("OptName", {name: name for name in OPT_RULES})
LrScheduleName = Enum("LrScheduleName", {name: name for name in LR_SCHEDULES})
DeviceName = Enum("DeviceName", {name: name for name in ("auto", "cpu", "cuda")})


@dataclass
class OptSchema:
    name: OptName = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    eps: float = MISSING


@dataclass
class LrScheduleSchema:
    name: LrScheduleName = MISSING
    final_ratio: float = MISSING
    horizon: int | None = MISSING


@dataclass
class RunSchema:
    task: dict[str, Any] = MISSING  # each task checks its own keys when it is built
    opt: OptSchema = MISSING
    lr: float = MISSING
    rho: float = MISSING
    steps: int = MISSING
    lr_schedule: LrScheduleSchema = MISSING
    seed: int = MISSING
    device: DeviceName = MISSING
    log_every: int = MISSING
    loss_ceiling: float = MISSING
    progress: bool = MISSING
    objective: str | None = MISSING
    threads: int | None = MISSING
    name: str = MISSING
    until: dict[str, float] = MISSING
    checkpoint_every: int = MISSING
    epoch_units: bool = MISSING
    rerun: bool = MISSING
    stage: dict[str, Any] | None = None
    user: dict[str, Any] | None = None  # a user's own labels (+user.tag=…), recorded with the run


def _names(enum: type[Enum]) -> str:
    return f"allowed: {', '.join(m.name for m in enum)}"


RULES_OF_KEYS = {  # key: (test of its typed value, or None: its type says all; what is allowed)
    "opt.name": (None, _names(OptName)),
    "lr": (lambda v: 0 < v < math.inf, "must be a finite number > 0"),
    "rho": (lambda v: 0 <= v < math.inf, "must be a finite number >= 0"),
    "seed": (None, "must be an integer"),
    "steps": (lambda v: v > 0, "must be an integer > 0"),
    "log_every": (lambda v: v > 0, "must be an integer > 0"),
    "loss_ceiling": (lambda v: 0 < v < math.inf, "must be a finite number > 0"),
    "threads": (lambda v: v is None or 0 < v <= 1024, "must be null (torch's default) or an integer in 1..1024"),
    "lr_schedule.name": (None, _names(LrScheduleName)),
    "lr_schedule.final_ratio": (lambda v: v > 0, "must be a number > 0"),
    "lr_schedule.horizon": (lambda v: v is None or v > 0, "must be null (the run's steps) or an integer > 0"),
    "checkpoint_every": (lambda v: v >= 0, "must be an integer >= 0"),
    "epoch_units": (None, "must be true or false"),
    "progress": (None, "must be true or false"),
    "rerun": (None, "must be true or false"),
    "device": (None, _names(DeviceName)),
    "name": (lambda v: v.strip("./") != "" and ".." not in v.split("/") and not v.startswith("/"),
             "must be a folder name under runs/ (relative, without ..)"),
    "opt.momentum": (lambda v: 0 <= v < 1, "must be a number in [0, 1)"),
    "opt.weight_decay": (lambda v: v >= 0, "must be a number >= 0"),
    "opt.eps": (lambda v: v > 0, "must be a number > 0"),
    "objective": (lambda v: v is None or v.startswith("final."), "must be null or final.<metric>, e.g. final.loss"),
    "until": (None, "must map metric names to numbers, e.g. +until.train_acc=1.0"),
}


def _schema_error(err: OmegaConfBaseException) -> ConfigError:
    """OmegaConf's complaint about a key, as one line naming the key and what is allowed."""
    key = str(err.full_key)
    if isinstance(err, ConfigKeyError):
        parent, _, _ = key.rpartition(".")
        return ConfigError(f"{key}: unknown key{f' in {parent}' if parent else ''}")
    allowed = RULES_OF_KEYS.get(key) or RULES_OF_KEYS.get(key.partition(".")[0])
    return ConfigError(f"{key}={err.value}: {allowed[1] if allowed else err.msg.splitlines()[0]}")


def validate_run(opt: str, lr: float, rho: float, seed: int) -> None:
    """The keys in which the runs of one batch may differ (checked for each run: plain values, no schema)."""
    require(opt in OPT_RULES, "opt", opt, f"unknown optimizer; allowed: {', '.join(OPT_RULES)}")
    for key, value, is_type in (("lr", lr, is_number), ("rho", rho, is_number), ("seed", seed, is_int)):
        test, allowed = RULES_OF_KEYS[key]
        require(is_type(value) and (test is None or test(value)), key, value, allowed)


def validate(cfg: DictConfig, composed: bool = True) -> None:
    """Checks the keys every run has: their types and names against :class:`RunSchema`, then
    their ranges; tasks check their own keys when built. In a ``composed`` (unresolved) config, a top-level
    key of a user's own must feed an interpolation (``+base_lr=0.2 'lr=${base_lr}'``); labels go under
    ``user`` (``+user.tag=…``)."""
    known = [k for k in cfg if k in RunSchema.__dataclass_fields__]
    if composed:
        text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, known))  # unresolved: the interpolations as written
        unread = [k for k in cfg if k not in known and k != "hydra" and not re.search(rf"\${{{re.escape(k)}\b", text)]
    if composed and unread:
        raise ConfigError(f"{unread[0]}: unknown top-level key, read by no interpolation; allowed: "
                          f"{', '.join(RunSchema.__dataclass_fields__)} (a label of your own: +user.{unread[0]}=…)")
    try:
        values = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                  for k in known}  # interpolations resolve against the whole config (a user's own keys too)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{err.full_key}: {str(err).splitlines()[0]}") from err
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RunSchema), values)
    except OmegaConfBaseException as err:
        raise _schema_error(err) from err
    missing = OmegaConf.missing_keys(typed)
    if missing:
        raise ConfigError(f"{', '.join(sorted(missing))}: missing; every run sets it (conf/config.yaml)")
    for key, (test, allowed) in RULES_OF_KEYS.items():
        if test is not None and not test(OmegaConf.select(typed, key)):
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)}: {allowed}")
