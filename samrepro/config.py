"""Validation of a composed run config: one clear line per mistake, before anything is written; and the
run folder's name (``run_dirname``, a resolver of conf/config.yaml)."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

import torch
from omegaconf import DictConfig, OmegaConf

from samrepro.optim import RULES

LR_SCHEDULES = ("constant", "geometric", "multistep")  # implemented by samrepro.train.lr_schedule


class ConfigError(ValueError):
    """Bad user input. The message names the key and what is allowed; the CLI prints it as one line."""


def fail(message: str) -> NoReturn:
    """Ends the process as the CLI contract says: one line on stderr, exit code 2."""
    print(f"samrepro: error: {message}", file=sys.stderr)
    raise SystemExit(2)


_STEP_CAP = re.compile(r"stage\.phases\.[^.=,]+\.steps=\d+")


def run_dirname(override_dirname: str) -> str:
    """A run folder's name: Hydra's ``job.override_dirname`` without the stage phases' step caps (raising
    one continues that phase in the same folder), ``defaults`` when nothing is left."""
    kept = [item for item in override_dirname.split(",") if not _STEP_CAP.fullmatch(item)]
    return ",".join(kept) or "defaults"


OmegaConf.register_new_resolver("run_dirname", run_dirname, replace=True)


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {allowed}")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_run(opt: str, lr: float, rho: float, seed: int) -> None:
    """The keys in which the runs of one batch may differ."""
    require(opt in RULES, "opt", opt, f"unknown optimizer; allowed: {', '.join(RULES)}")
    require(is_number(lr) and lr > 0, "lr", lr, "must be a number > 0")
    require(is_number(rho) and rho >= 0, "rho", rho, "must be a number >= 0")
    require(is_int(seed), "seed", seed, "must be an integer")


CHECKS = (  # key, test, what is allowed: the keys every run has (conf/config.yaml, conf/opt/)
    ("steps", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
    ("log_every", lambda v: is_int(v) and v > 0, "must be an integer > 0"),
    ("loss_ceiling", lambda v: is_number(v) and v > 0, "must be a number > 0"),
    ("threads", lambda v: v is None or (is_int(v) and v > 0), "must be null (torch's default) or an integer > 0"),
    ("lr_schedule.name", lambda v: v in LR_SCHEDULES, f"allowed: {', '.join(LR_SCHEDULES)}"),
    ("lr_schedule.final_ratio", lambda v: is_number(v) and v > 0, "must be a number > 0"),
    ("checkpoint_every", lambda v: is_int(v) and v >= 0, "must be an integer >= 0"),
    ("epoch_units", lambda v: isinstance(v, bool), "must be true or false"),
    ("progress", lambda v: isinstance(v, bool), "must be true or false"),
    ("name", lambda v: isinstance(v, str) and v.strip("./") != "", "must be a folder name under runs/"),
    ("opt.momentum", lambda v: is_number(v) and 0 <= v < 1, "must be a number in [0, 1)"),
    ("opt.weight_decay", lambda v: is_number(v) and v >= 0, "must be a number >= 0"),
    ("opt.eps", lambda v: is_number(v) and v > 0, "must be a number > 0"),
    ("until", lambda v: isinstance(v, DictConfig) and all(is_number(x) for x in v.values()),
     "must map metric names to numbers, e.g. +until.train_acc=1.0"),
)


def validate(cfg: DictConfig) -> None:
    """Checks the keys every run has (DESIGN §2); tasks check their own keys when built."""
    validate_run(cfg.opt.name, cfg.lr, cfg.rho, cfg.seed)
    for key, ok, allowed in CHECKS:
        value = OmegaConf.select(cfg, key)
        require(ok(value), key, value, allowed)
    resolve_device(cfg.device)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu`` / ``cuda`` force it."""
    require(name in ("auto", "cpu", "cuda"), "device", name, "allowed: auto, cpu, cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    require(name != "cuda" or torch.cuda.is_available(), "device", name,
            "no CUDA GPU is available here; use device=cpu or auto")
    return torch.device(name)
