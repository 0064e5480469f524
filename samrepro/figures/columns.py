"""A figure's task settings, read back from the config columns of its DataFrame (``task.d``, ``lr``, …),
and the cheap measurements the figures make on the task those columns describe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from samrepro import tasks
from samrepro.sharpness import lanczos_top_eigenvalue


def _value(v: object) -> object:
    """A config value as collected (lists as their string form, null as NaN once read from a CSV)."""
    if isinstance(v, str) and v.startswith("["):
        return yaml.safe_load(v)
    if pd.isna(v):
        return None
    return v.item() if hasattr(v, "item") else v


def setting(df: pd.DataFrame, key: str) -> object:
    """The value of config column ``key``, which must be the same in every row of ``df``."""
    values = df[key].astype(str).unique()
    if len(values) != 1:
        raise ValueError(f"{key} differs between the runs of this DataFrame: {', '.join(values)}")
    return _value(df[key].iloc[0])


def task_config(df: pd.DataFrame) -> DictConfig:
    """The ``task`` group of the runs in ``df`` (its name ``task`` and every ``task.*`` column; the same in
    every row)."""
    keys = {k.removeprefix("task."): k for k in df if k.startswith("task.")}
    return OmegaConf.create({"name": setting(df, "task"), **{key: setting(df, col) for key, col in keys.items()}})


def sharpness_at_init(df: pd.DataFrame, iters: int = 100) -> float:
    """λ_max(∇²L(w0)) of the task of ``df`` at its initialization (seed of the runs), by Lanczos on
    Hessian-vector products (exact up to rounding when the parameter count is ≤ ``iters``)."""
    cfg = task_config(df)
    if "_target_" not in cfg:  # a CSV collected before tasks were named by _target_: the built-in task
        cfg._target_ = f"samrepro.tasks.{cfg.name}.build"
    task = tasks.build(cfg, 1, torch.device("cpu"))
    params = task.init_params([int(setting(df, "seed"))])
    return float(lanczos_top_eigenvalue(lambda p: task.loss(p), params, iters=iters,
                                        generator=torch.Generator().manual_seed(0))[0])


def quadratic_iterates(df: pd.DataFrame) -> np.ndarray:
    """The iterates w of quadratic-task rows (their logged coordinates ``w0``, ``w1``, …) as [rows, d]."""
    d = len(setting(df, "task.eigenvalues"))
    return df[[f"w{i}" for i in range(d)]].to_numpy(dtype=float)


def grid_values(values: pd.Series) -> str:
    """The distinct values of a sweep column as a set, '{0.6, 0.7}'."""
    return "{" + ", ".join(f"{v:g}" for v in sorted(values.unique())) + "}"
