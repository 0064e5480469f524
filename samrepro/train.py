"""The one trainer loop: steps the optimizer, logs metrics, detects divergence.

It runs C configurations at once when the task batches them (one row stream and one run folder per
configuration); a configuration that diverges is recorded as such and the others go on. Optionally a
configuration stops once its metrics reach thresholds (``until``), and a one-configuration run saves
checkpoints it can resume from (``checkpoint_every``, ``start_step``).
"""

from __future__ import annotations

import itertools
import math
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from samrepro.config import LR_SCHEDULES
from samrepro.optim import SAM
from samrepro.records import CHECKPOINT, RunRecord, write_atomic
from samrepro.tasks import Task


def _finite_per_config(params: Sequence[torch.Tensor], config_dim: bool) -> torch.Tensor:
    if config_dim:
        return torch.stack([p.reshape(p.shape[0], -1).isfinite().all(1) for p in params]).all(0)
    return torch.stack([p.isfinite().all() for p in params]).all().reshape(1)


def loss_check(loss_ceiling: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """bad(losses) → shape [C]: True where a loss is non-finite or above ``loss_ceiling``, on the device.

    Computed as ``loss.clamp(lowest, ceiling) != loss`` (lowest: the dtype's lowest finite value): NaN
    and ±inf never equal their clamp, a finite loss does exactly when it is in [lowest, ceiling]; the
    bounds become the loss's dtype as ``loss > ceiling``'s scalar does. Two ops where
    ``~isfinite(loss) | (loss > ceiling)`` takes seven; that form where the ceiling is below ``lowest``
    (or NaN), or the loss is not a float."""
    bounds: dict[torch.dtype, tuple[float, float] | None] = {}

    def bad(loss: torch.Tensor) -> torch.Tensor:
        if loss.dtype not in bounds:
            info = torch.finfo(loss.dtype) if loss.is_floating_point() else None
            bounds[loss.dtype] = (info.min, min(loss_ceiling, info.max)) if info and loss_ceiling >= info.min else None
        b = bounds[loss.dtype]
        out = torch.ne(loss.clamp(*b), loss) if b else ~torch.isfinite(loss) | (loss > loss_ceiling)
        return out if out.dim() == 1 else out.reshape(-1)
    return bad


MULTISTEP = (0.5, 5 / 6)  # Liu et al. (2020)'s decays at epochs 150 and 250 of 300, as fractions of the horizon


def lr_schedule(name: str, final_ratio: float, horizon: int) -> Callable[[int], float] | None:
    """The factor η_t/η of step t, on a ``horizon`` of steps (the run's, or a fixed one that raising a capped
    run's steps does not move): ``constant`` → None (η is never touched); ``geometric`` →
    final_ratio^(t/horizon), i.e. η decays geometrically from η to final_ratio·η over the horizon;
    ``multistep`` → piecewise constant, multiplied by final_ratio^(1/2) at 1/2 and at 5/6 of the horizon
    (Liu et al. 2020: ×0.1 at epochs 150 and 250 of 300 is final_ratio = 0.01)."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule.name={name}: allowed: {', '.join(LR_SCHEDULES)}")
    if name == "constant":
        return None
    if name == "multistep":
        factor = final_ratio ** (1 / len(MULTISTEP))
        return lambda t: factor ** sum(t >= m * horizon for m in MULTISTEP)
    log_ratio = math.log(final_ratio) / horizon
    return lambda t: math.exp(log_ratio * t)


def save_checkpoint(run_dir: Path, step: int, task: Task, optimizer: SAM) -> None:
    """The trainer's state after ``step`` steps, written atomically to ``<run_dir>/checkpoint.pt`` (after the
    run's rows up to that step are on disk, so that a resumed run finds every row it keeps)."""
    state = {"step": step, "optimizer": optimizer.state_dict(), "task": task.state_dict()}
    write_atomic(Path(run_dir) / CHECKPOINT, lambda tmp: torch.save(state, tmp))


def load_checkpoint(run_dir: Path, task: Task, optimizer: SAM) -> int:
    """Restores the state saved by :func:`save_checkpoint`; returns its step."""
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location=optimizer.params[0].device, weights_only=True)
    task.load_state_dict(state["task"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"]


def train(
    task: Task,
    optimizer: SAM,
    records: Sequence[RunRecord],
    *,
    steps: int,
    log_every: int,
    loss_ceiling: float,
    seeds: Sequence[int],
    progress: bool = True,
    lr_factor: Callable[[int], float] | None = None,
    until: Mapping[str, float] | None = None,
    checkpoint_every: int = 0,
    start_step: int = 0,
) -> list[dict]:
    """Runs ``steps`` updates; logs rows at step 0, every ``log_every`` steps and at the end.

    A configuration diverges at step t when its loss at w_t is non-finite or above ``loss_ceiling``,
    or its parameters are non-finite at a logged step; it then stops logging (rows so far are kept)
    and its summary says ``diverged`` with ``diverged_at``. The check runs on the device every step
    and is read back only at logged steps, so a step has no host sync. Ctrl-C marks the running
    configurations ``interrupted`` and re-raises. With ``lr_factor`` (see ``lr_schedule``), step t uses
    η_t = lr_factor(t)·η: ``optimizer.lr`` is rewritten in place from ``optimizer.base_lr`` (one device
    op with a Python float, no host sync).

    ``until`` (metric → threshold): a configuration also ends, ``completed`` with ``until_reached``,
    at the first logged row in which every named metric is ≥ its threshold.
    ``checkpoint_every`` > 0 (one configuration): the state (step, optimizer, task) is saved to
    ``<run dir>/checkpoint.pt`` every that many steps and when the run completes. ``start_step`` > 0
    continues a run from such a checkpoint (restored by :func:`load_checkpoint`): the batches of the
    steps done are drawn and skipped, so a deterministic batch stream continues where it stopped.
    """
    if checkpoint_every and len(records) != 1:
        raise ValueError("checkpoints need a run with one configuration")
    params = optimizer.params
    n = len(records)
    device = params[0].device
    running = list(range(n))
    # Batched: a configuration that diverged or finished is frozen (the optimizer leaves its slice as it
    # is) and the metrics see its initial parameters instead, so nothing non-finite reaches them.
    frozen = torch.zeros(n, dtype=torch.bool, device=device) if task.config_dim else None
    optimizer.frozen = frozen
    # Per configuration, the steps since its loss was first bad (0: never): a step ORs its bad losses into
    # ``stopped`` and adds ``stopped`` to ``bad_steps`` (two ops, no host sync), so a configuration whose
    # loss was first bad at step t has bad_steps = s − t at logged step s (its ``diverged_at``). Batched,
    # ``stopped`` is ``frozen``: a configuration frozen at a logged step for another reason (non-finite
    # parameters, ``until``) stops running there, before any of its counted steps is read.
    stopped = frozen if frozen is not None else torch.zeros(n, dtype=torch.bool, device=device)
    bad_steps = torch.zeros(n, dtype=torch.long, device=device)
    bad_loss = loss_check(loss_ceiling)
    stand_ins = [p.detach().clone() for p in params] if task.config_dim else []
    summaries: list[dict | None] = [None] * n
    width = len(task.metric_names)
    until_columns = [(task.metric_names.index(k), v) for k, v in (until or {}).items()]
    start = time.perf_counter()

    def finish(c: int, status: str, steps_done: int, **extra: object) -> None:
        summaries[c] = records[c].finish(status, steps_done, time.perf_counter() - start, **extra,
                                         **task.flags(records[c].last))

    def checkpoint(c: int, step: int) -> None:
        records[c].flush()
        save_checkpoint(records[c].dir, step, task, optimizer)

    def log(step: int) -> None:
        finite = _finite_per_config(params, task.config_dim)
        if frozen is not None:
            frozen.logical_or_(~finite)
        counted, bad_params = bad_steps.tolist(), (~finite).tolist()
        for c in list(running):
            if counted[c] or bad_params[c]:
                running.remove(c)
                at = step - counted[c]  # the step of the bad loss, else this step (bad parameters)
                finish(c, "diverged", at, diverged_at=at)
        if not running:
            return
        safe = params if frozen is None else [
            torch.where(m, s, p) for m, s, p in zip(optimizer.per_config_views(frozen), stand_ins, params)]
        metrics = task.metrics(safe, step)
        block = torch.stack([metrics[k].to(device, torch.float64) for k in task.metric_names], 1)  # [C, M]
        values = array("d", block.detach().cpu().numpy().tobytes())  # one read-back; row c: values[c·M:(c+1)·M]
        for c in list(running):
            records[c].write_row(step, values, c * width)
            if until and all(values[c * width + j] >= v for j, v in until_columns):
                running.remove(c)
                if frozen is not None:
                    frozen[c] = True
                if checkpoint_every:
                    checkpoint(c, step)
                finish(c, "completed", step, until_reached=True)

    batches = itertools.islice(task.batches(seeds), start_step, None)
    step = start_step
    with logging_redirect_tqdm(), tqdm(total=steps, initial=start_step, disable=not progress, mininterval=0.5,
                                       dynamic_ncols=True, leave=False) as bar:
        try:
            if step == 0:
                log(0)
            while step < steps and running:
                batch = next(batches)
                if lr_factor is not None:
                    torch.mul(optimizer.base_lr, lr_factor(step), out=optimizer.lr)
                loss = optimizer.step(lambda p, perturbed: task.loss(p, batch, perturbed),
                                      lambda p, perturbed: task.loss_and_grad(p, batch, perturbed))
                stopped.logical_or_(bad_loss(loss))
                bad_steps.add_(stopped)
                step += 1
                bar.update()
                if step % log_every == 0 or step == steps:
                    log(step)
                if checkpoint_every and running and (step % checkpoint_every == 0 or step == steps):
                    checkpoint(0, step)
        except KeyboardInterrupt:
            for c in running:
                finish(c, "interrupted", records[c].steps_logged)
            raise
    for c in running:
        finish(c, "completed", step, **({"until_reached": False} if until else {}))
    return summaries
