"""Tasks, all behind the interface of :class:`Task`; samrepro's own are one module each here.

A task config (``conf/task/<name>.yaml``, or one in a user's own ``--config-dir``) names the function that
builds its task by ``_target_`` (Hydra's convention): any importable ``build(cfg, n_configs, device) -> Task``,
samrepro's own (``samrepro.tasks.<name>.build``) or from a user's package. Nothing else needs to change to
add one.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from hydra.utils import get_object
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import ConfigError, is_int, require
from samrepro.optim import autograd_loss_and_grad


class Task:
    """Owns its parameters, its data and its metrics; the trainer owns the loop. The contract, checked
    when a task is built (:func:`check_contract`), is what the runner and the trainer use of a task:

    - ``metric_names``: the metrics.csv columns after ``step``, in order (a non-empty list of distinct
      names); ``until`` may name any of them.
    - ``init_params(seeds)``: the parameters of one configuration per seed, a list of leaf tensors with
      ``requires_grad``; the optimizer updates them in place.
    - ``loss(params, batch, perturbed)``: the training loss of each configuration, shape [C]
      (``perturbed``: SAM's ascent pass).
    - ``metrics(params, step)``: metric name → shape [C] for every name of ``metric_names``.
    - ``config_dim`` (bool): true when every parameter has a leading configuration dimension of size C
      (C independent copies of the problem, one per configuration of a batched sweep); false (a torch.nn
      model) runs one configuration at a time (C = 1).
    - ``dtype`` (torch.dtype of its parameters) and ``steps_per_epoch`` (int > 0, for ``epoch_units``).
    - Defaults here that a task may override: ``loss_and_grad``, ``batches``, ``flags``, ``state_dict``,
      ``load_state_dict``, ``narrowable``.
    """

    config_dim = True
    dtype = torch.float64
    steps_per_epoch = 1  # steps of one pass over the training data (full-batch tasks: 1)
    narrowable = False
    """True when a configuration's results do not depend on the batch it runs in and the task holds nothing
    per configuration but the parameters it is passed (its batches the same for any C): the trainer then
    drops the configurations that ended from the batch instead of computing them frozen
    (tests/test_batch_invariance.py checks samrepro's own tasks)."""

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


def resolve_target(key: str, path: object, call: str, *args: object, **kwargs: object) -> Callable:
    """The callable that the dotted path ``path`` names (``_target_`` style), checked to accept ``args`` and
    ``kwargs``; a ConfigError naming ``key`` when it does not import, is not callable or cannot be called
    as ``call`` says."""
    require(isinstance(path, str) and path != "", key, path, f"must be the dotted path of {call}")
    hydra_log = logging.getLogger("hydra.utils")  # get_object logs a failed import in 3 lines; we say it in one
    muted, hydra_log.disabled = hydra_log.disabled, True
    try:
        target = get_object(path)
    except Exception as err:  # hydra wraps the import's error; its cause says what went wrong
        cause = err.__cause__ or err
        raise ConfigError(f"{key}={path}: does not import ({type(cause).__name__}: "
                          f"{str(cause).splitlines()[0] if str(cause) else ''})") from err
    finally:
        hydra_log.disabled = muted
    require(callable(target), key, path, f"is a {type(target).__name__}, not {call}")
    try:
        inspect.signature(target).bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{key}={path}: cannot be called as {call} ({err})") from err
    except ValueError:  # no signature to check (some builtins)
        pass
    return target


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> Task:
    """Builds the task whose build function ``cfg._target_`` names, ``(cfg, n_configs, device) -> Task``,
    and checks it against the contract of :class:`Task`."""
    target = cfg.get("_target_")
    if target is None:
        raise ConfigError("task._target_: missing; a task config names its build function "
                          "(cfg, n_configs, device) -> Task, e.g. _target_: samrepro.tasks.quadratic.build")
    build_task = resolve_target("task._target_", target, "a function build(cfg, n_configs, device) -> Task",
                                cfg, n_configs, device)
    task = build_task(cfg, n_configs, device)
    check_contract(task, f"task._target_={target}")
    return task


CONTRACT = {  # attribute: (its test, what it must be)
    "metric_names": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and len(set(v)) == len(v)
                     and all(isinstance(n, str) and n not in ("", "step") for n in v),
                     "a non-empty list of distinct metric names, none of them 'step'"),
    "init_params": (callable, "a method init_params(seeds) -> list of parameter tensors"),
    "loss": (callable, "a method loss(params, batch, perturbed) -> losses of shape [C]"),
    "metrics": (callable, "a method metrics(params, step) -> {metric name: values of shape [C]}"),
    "config_dim": (lambda v: isinstance(v, bool), "true or false: whether parameters have a configuration dim"),
    "dtype": (lambda v: isinstance(v, torch.dtype), "the torch.dtype of its parameters"),
    "steps_per_epoch": (lambda v: is_int(v) and v > 0, "an integer > 0: the steps of one pass over its data"),
    **{name: (callable, f"a method, as samrepro.tasks.Task.{name}")
       for name in ("loss_and_grad", "batches", "flags", "state_dict", "load_state_dict")},
}
ABSTRACT = ("init_params", "loss", "metrics")  # a subclass of Task must define these


def check_contract(task: object, origin: str) -> None:
    """ConfigError (one line, starting with ``origin``) when ``task`` lacks a part of the contract of
    :class:`Task` (a subclass of Task that does not define one of ``ABSTRACT`` lacks it) or has it malformed."""
    for name, (test, what) in CONTRACT.items():
        value = getattr(task, name, None)
        if value is None or (name in ABSTRACT and getattr(type(task), name, None) is getattr(Task, name)):
            problem = f"has no {name} ({what}"
        elif not test(value):
            problem = f"has {name}={value!r} (must be {what}"
        else:
            continue
        raise ConfigError(f"{origin}: the task it built {problem}; see the Task contract in the README)")


def data_folder(data_root: str | None) -> Path:
    """A task's data folder: its ``data_root`` key, else the environment variable SAMREPRO_DATA, else ./data.
    Its files' names, sizes and times are part of each run's inputs (:func:`samrepro.runner.run_inputs`)."""
    return Path(data_root or os.environ.get("SAMREPRO_DATA") or "data")


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


# Elementwise functions with the same bits at every position of a tensor. torch's own softplus and sigmoid
# compute the entries after a tensor's last full SIMD vector by another formula, so with a configuration
# dimension a configuration's bits would depend on how many configurations share its batch and on its place
# in it; these are built from exp and log1p (the same at every position) and exactly rounded operations
# (tests/test_batch_invariance.py checks it).

def softplus(z: Tensor) -> Tensor:
    """log(1 + e^z): z + log1p(e^{−z}) for z > 0, log1p(e^z) below, each branch fed only its own side of 0
    (finite in both, so that autograd gets σ(z), ½ at 0, and never 0·∞)."""
    positive = z > 0
    return torch.where(positive, z + torch.log1p(torch.exp(-torch.where(positive, z, 0.0))),
                       torch.log1p(torch.exp(torch.where(positive, 0.0, z))))


def logistic(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log(1 + e^z), σ(z), σ(−z)), outside autograd, with ``softplus``'s bits, from one e = e^{−|z|}: σ is
    1/(1 + e) on its side of 0 (z ≥ 0 for σ(z)) and e/(1 + e) on the other (never overflows)."""
    e = torch.exp(-z.abs())  # e^{−z} for z > 0, e^{z} below: each side's own exponential in softplus
    log_term, one_plus = torch.log1p(e), 1 + e
    high, low = 1 / one_plus, e / one_plus
    above = z > 0
    return torch.where(above, z + log_term, log_term), torch.where(z >= 0, high, low), torch.where(above, low, high)
