"""Tasks: one module per task, all behind the interface of :class:`Task` (DESIGN §5).

A task module ``samrepro/tasks/<name>.py`` defines ``build(cfg, n_configs, device) -> Task`` and has a
config ``conf/task/<name>.yaml``; nothing else needs to change to add one.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import ConfigError, require
from samrepro.optim import autograd_loss_and_grad


class Task:
    """Owns its parameters, its data and its metrics; the trainer owns the loop.

    Parameters carry a leading configuration dimension of size C (``config_dim = True``): C
    independent copies of the problem, one per configuration of a batched sweep. ``loss`` then
    returns C losses. A task that cannot batch (a torch.nn model) sets ``config_dim = False`` and
    runs one configuration at a time.
    """

    config_dim = True
    dtype = torch.float64
    steps_per_epoch = 1  # steps of one pass over the training data (full-batch tasks: 1)

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        """Initial parameters for one configuration per seed (leaf tensors, requires_grad)."""
        raise NotImplementedError

    def loss(self, params: Sequence[Tensor], batch: object, perturbed: bool = False) -> Tensor:
        """The training loss on ``batch`` (shape [C]); ``perturbed`` marks SAM's ascent pass."""
        raise NotImplementedError

    def loss_and_grad(self, params: Sequence[Tensor], batch: object, perturbed: bool = False):
        """(detached losses, gradients). Autograd here; tasks override it with a closed form where
        that is much cheaper, and the tests check it against this autograd version."""
        return autograd_loss_and_grad(lambda p, pert: self.loss(p, batch, pert), params, perturbed)

    def batches(self, seeds: Sequence[int]) -> Iterator[object]:
        """The batch of each step; full-batch tasks yield None forever."""
        return itertools.repeat(None)

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        """Cheap per-configuration metrics (name → shape [C]) on a fixed evaluation set, after
        ``step`` updates (for measurements taken only every k steps)."""
        raise NotImplementedError

    def flags(self, final: dict[str, float]) -> dict[str, object]:
        """Facts about a finished configuration, from its last logged metrics, that ``summary.json``
        records beside its status (e.g. sparse coding's ``dead``); none by default."""
        return {}

    def state_dict(self) -> dict:
        """State outside the optimized parameters that a checkpoint must keep (e.g. BatchNorm
        running statistics); none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`."""


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> Task:
    """Builds the task named by ``cfg.name`` from ``samrepro/tasks/<name>.py``."""
    try:
        module = importlib.import_module(f"samrepro.tasks.{cfg.name}")
    except ModuleNotFoundError as err:
        raise ConfigError(f"task={cfg.name}: no module samrepro.tasks.{cfg.name}") from err
    return module.build(cfg, n_configs, device)


def float_list(cfg: DictConfig, key: str, length: int | None = None) -> list[float]:
    """A list-valued task key as floats, checking its length (``task.<key>``)."""
    value = cfg.get(key)
    ok = value is not None and not isinstance(value, (str, int, float)) and all(
        isinstance(v, (int, float)) for v in value)
    require(ok, f"task.{key}", value, "must be a list of numbers")
    if length is not None:
        require(len(value) == length, f"task.{key}", list(value), f"must have {length} entries")
    return [float(v) for v in value]


def repeat_param(values: Sequence[float], n_configs: int, device: torch.device,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """The same initial vector for every configuration: a [C, len(values)] leaf tensor."""
    t = torch.tensor(values, dtype=dtype, device=device)
    return t.expand(n_configs, len(values)).clone().requires_grad_()
