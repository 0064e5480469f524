"""Validation of a composed run config: one clear line per mistake, before anything is written."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from samrepro.optim import RULES

LR_SCHEDULES = ("constant", "geometric", "multistep")  # implemented by samrepro.train.lr_schedule


class ConfigError(ValueError):
    """Bad user input. The message names the key and what is allowed; the CLI prints it as one line."""


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value}: {allowed}")


def run_values(cfg: DictConfig) -> dict:
    """The keys in which the configurations of one batch may differ (see ``samrepro.sweep``)."""
    return {"opt": cfg.opt.name, "lr": cfg.lr, "rho": cfg.rho, "seed": cfg.seed}


def validate_run(opt: str, lr: float, rho: float, seed: int) -> None:
    require(opt in RULES, "opt", opt, f"unknown optimizer; allowed: {', '.join(RULES)}")
    number = (int, float)
    require(isinstance(lr, number) and not isinstance(lr, bool) and lr > 0, "lr", lr, "must be a number > 0")
    require(isinstance(rho, number) and not isinstance(rho, bool) and rho >= 0, "rho", rho,
            "must be a number >= 0")
    require(isinstance(seed, int) and not isinstance(seed, bool), "seed", seed, "must be an integer")


def validate(cfg: DictConfig) -> None:
    """Checks the keys every run has (DESIGN §2); tasks check their own keys when built."""
    validate_run(**run_values(cfg))
    require(isinstance(cfg.steps, int) and cfg.steps > 0, "steps", cfg.steps, "must be an integer > 0")
    require(isinstance(cfg.log_every, int) and cfg.log_every > 0, "log_every", cfg.log_every,
            "must be an integer > 0")
    require(isinstance(cfg.loss_ceiling, (int, float)) and cfg.loss_ceiling > 0, "loss_ceiling",
            cfg.loss_ceiling, "must be a number > 0")
    threads = cfg.get("threads")
    require(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads > 0),
            "threads", threads, "must be null (torch's default) or an integer > 0")
    schedule = cfg.lr_schedule
    require(schedule.name in LR_SCHEDULES, "lr_schedule.name", schedule.name,
            f"allowed: {', '.join(LR_SCHEDULES)}")
    ratio = schedule.final_ratio
    require(isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0,
            "lr_schedule.final_ratio", ratio, "must be a number > 0")
    every = cfg.get("checkpoint_every", 0)
    require(isinstance(every, int) and every >= 0, "checkpoint_every", every, "must be an integer >= 0")
    require(isinstance(cfg.get("epoch_units", False), bool), "epoch_units", cfg.get("epoch_units"),
            "must be true or false")
    until = cfg.get("until")
    require(until is None or (isinstance(until, DictConfig) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in until.values())), "until", until,
        "must map metric names to numbers, e.g. +until.train_acc=1.0")
    resolve_device(cfg.device)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu`` / ``cuda`` force it."""
    require(name in ("auto", "cpu", "cuda"), "device", name, "allowed: auto, cpu, cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    require(name != "cuda" or torch.cuda.is_available(), "device", name,
            "no CUDA GPU is available here; use device=cpu or auto")
    return torch.device(name)
