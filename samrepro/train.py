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
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
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


class MetricLog:
    """The rows a batch logged that its runs have not written yet: per logged step, its step, the metrics of
    each configuration the batch had when the log began (one float64 array [logged steps, configurations,
    metrics], grown by doubling) and which of them it is a row of. Each run reads its rows from it
    (:meth:`samrepro.records.RunRecord.follow`); ``full``: time to write them (memory)."""

    ROWS = 10_000  # full at this many logged steps …
    VALUES = 32_000_000  # … or at this many floats (8 bytes each: 256 MB)

    def __init__(self, configurations: int, width: int, steps: int = 16):
        """``steps``: the logged steps to make room for (it grows by doubling past them, up to ``full``)."""
        steps = max(1, min(steps, self.ROWS, self.VALUES // max(1, configurations * width)))
        self.size = 0
        self.steps = np.empty(steps, dtype=np.int64)
        self.values = np.empty((steps, configurations, width))
        self.due = np.empty((steps, configurations), dtype=bool)

    def append(self, step: int, block: np.ndarray, due: np.ndarray, columns: np.ndarray) -> None:
        """Logs ``step``: ``block`` [C, metrics] holds the metrics of the log's configurations ``columns`` [C], a
        row of those where ``due`` [C] is true (a narrowed batch has fewer than its log)."""
        if self.size == len(self.steps):
            self.steps, self.values, self.due = (np.concatenate([a, np.empty_like(a)])
                                                 for a in (self.steps, self.values, self.due))
        self.steps[self.size], self.values[self.size, columns], self.due[self.size] = step, block, False
        self.due[self.size, columns] = due
        self.size += 1

    def rows(self, column: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """The steps and metrics [rows, metrics] of configuration ``column``'s rows from logged step ``start`` on."""
        due = self.due[start:self.size, column]
        return self.steps[start:self.size][due], self.values[start:self.size, column][due]

    def last_row(self, column: int, start: int) -> tuple[int, np.ndarray] | None:
        """The step and metrics of the last of those rows (None without one), without gathering the others."""
        due = np.flatnonzero(self.due[start:self.size, column])
        return (int(self.steps[start + due[-1]]), self.values[start + due[-1], column]) if len(due) else None

    @property
    def full(self) -> bool:
        return self.size >= self.ROWS or self.size * self.values[0].size >= self.VALUES


MULTISTEP = (0.5, 5 / 6)  # Liu et al. (2020)'s decays at epochs 150 and 250 of 300, as fractions of the horizon


@cache  # one function per schedule: configurations of a batch that share it share one factor a step
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
    steps: Sequence[int],
    log_every: int,
    loss_ceiling: float,
    seeds: Sequence[int],
    progress: bool = True,
    lr_factors: Sequence[Callable[[int], float] | None] | None = None,
    until: Mapping[str, float] | None = None,
    checkpoint_every: int = 0,
    start_step: int = 0,
) -> list[dict]:
    """Runs configuration c for ``steps[c]`` updates; logs its rows at step 0, every ``log_every`` steps and
    at its last step.

    A configuration diverges at step t when its loss at w_t is non-finite or above ``loss_ceiling``,
    or its parameters are non-finite at a logged step; it then stops logging (rows so far are kept)
    and its summary says ``diverged`` with ``diverged_at``. The check runs on the device every step
    and is read back only at logged steps, so a step has no host sync. Ctrl-C marks the running
    configurations ``interrupted`` and re-raises. With ``lr_factors`` (per configuration, see ``lr_schedule``;
    None: constant η), configuration c's step t uses η_t = lr_factors[c](t)·η: ``optimizer.lr`` is rewritten
    in place from ``optimizer.base_lr`` (one device op with a Python float, or with one factor per
    configuration where their schedules differ; no host sync).

    ``until`` (metric → threshold): a configuration also ends, ``completed`` with ``until_reached``,
    at the first logged row in which every named metric is ≥ its threshold.
    ``checkpoint_every`` > 0 (one configuration): the state (step, optimizer, task) is saved to
    ``<run dir>/checkpoint.pt`` every that many steps and when the run completes. ``start_step`` > 0
    continues a run from such a checkpoint (restored by :func:`load_checkpoint`): the batches of the
    steps done are drawn and skipped, so a deterministic batch stream continues where it stopped.

    A configuration that ended (diverged, finished its steps or reached ``until``) leaves the batch at the
    logged step that reads it: a ``narrowable`` task's batch goes on without it (the optimizer and the
    trainer's per-configuration tensors keep the other slices; a configuration's bits do not depend on its
    batch), any other task's keeps it frozen.
    """
    if checkpoint_every and len(records) != 1:
        raise ValueError("checkpoints need a run with one configuration")
    n = len(records)
    device = optimizer.params[0].device
    narrowable = task.config_dim and getattr(task, "narrowable", False)
    members = list(range(n))  # the configurations in the batch: position i computes configuration members[i]
    position = {c: c for c in members}
    running = dict.fromkeys(members)  # the configurations not ended, in order
    live = np.ones(n, dtype=bool)  # by position: its configuration is running
    ends, last = list(steps), max(steps)
    ends_at = np.array(ends)  # by position: the configuration's last step
    schedules = list(lr_factors or [None] * n)
    end_steps = set(ends)
    # Batched: a configuration that diverged or finished is frozen (the optimizer leaves its slice as it
    # is) and the metrics see its initial parameters instead, so nothing non-finite reaches them.
    frozen = torch.zeros(n, dtype=torch.bool, device=device) if task.config_dim else None
    optimizer.frozen = frozen
    # Per position, the steps since its loss was first bad (0: never): a step ORs its bad losses into
    # ``stopped`` and adds ``stopped`` to ``bad_steps`` (two ops, no host sync), so a configuration whose
    # loss was first bad at step t has bad_steps = s − t at logged step s (its ``diverged_at``). Batched,
    # ``stopped`` is ``frozen``: a configuration frozen at a logged step for another reason (non-finite
    # parameters, ``until``, its last step) stops running there, before any of its counted steps is read.
    stopped = frozen if frozen is not None else torch.zeros(n, dtype=torch.bool, device=device)
    bad_steps = torch.zeros(n, dtype=torch.long, device=device)
    bad_loss = loss_check(loss_ceiling)
    stand_ins = [p.detach().clone() for p in optimizer.params] if task.config_dim else []
    summaries: list[dict | None] = [None] * n
    width = len(task.metric_names)
    until_at = [task.metric_names.index(k) for k in until or {}]
    until_values = np.array(list((until or {}).values()), dtype=np.float64)
    start = time.perf_counter()

    def batch_schedule() -> Callable[[int], float | Tensor] | None:
        """The factor η_t/η of the batch's step t: None (every η constant), a float (one schedule shared by
        every configuration of the batch), else a tensor of each configuration's factor."""
        factors = [schedules[c] for c in members]
        if all(f is factors[0] for f in factors):
            return factors[0]
        return lambda t: torch.tensor([f(t) if f else 1.0 for f in factors], dtype=optimizer.base_lr.dtype,
                                      device=device)

    lr_factor = batch_schedule()

    def new_log(step: int) -> tuple[MetricLog, np.ndarray]:
        """A log of the batch as it is at ``step``, which every running configuration's record follows, and the
        column of each position in it."""
        rows = MetricLog(len(members), width, (last - step) // log_every + 2 + len(end_steps))  # the steps left
        for i, c in enumerate(members):
            if c in running:
                records[c].follow(rows, i)
        return rows, np.arange(len(members))

    metric_log, log_columns = new_log(start_step)

    def finish(c: int, status: str, steps_done: int, **extra: object) -> None:
        del running[c]
        live[position[c]] = False
        if frozen is not None:
            frozen[position[c]] = True
        summaries[c] = records[c].finish(status, steps_done, time.perf_counter() - start, **extra,
                                         **task.flags(records[c].last))

    def checkpoint(c: int, step: int) -> None:
        records[c].flush()
        save_checkpoint(records[c].dir, step, task, optimizer)

    def log(step: int) -> None:
        nonlocal metric_log, log_columns
        params = optimizer.params
        finite = _finite_per_config(params, task.config_dim)
        if frozen is not None:
            frozen.logical_or_(~finite)
        counted, bad_params = bad_steps.cpu().numpy(), (~finite).cpu().numpy()
        for i in np.flatnonzero(live & ((counted > 0) | bad_params)):
            at = step - int(counted[i])  # the step of the bad loss, else this step (bad parameters)
            finish(members[i], "diverged", at, diverged_at=at)
        due = live & ((step % log_every == 0) | (ends_at == step))
        if not due.any():
            return
        safe = params if frozen is None else [
            torch.where(m, s, p) for m, s, p in zip(optimizer.per_config_views(frozen), stand_ins, params)]
        metrics = task.metrics(safe, step)
        block = torch.stack([metrics[k].to(device, torch.float64) for k in task.metric_names], 1)  # [C, M]
        block = block.detach().cpu().numpy()  # one read-back
        metric_log.append(step, block, due, log_columns)
        reached = due & (block[:, until_at] >= until_values).all(1) if until_at else np.zeros_like(due)
        for i in np.flatnonzero(reached | (due & (ends_at == step))):
            if checkpoint_every:
                checkpoint(members[i], step)
            finish(members[i], "completed", step, **({"until_reached": bool(reached[i])} if until else {}))
        if running and metric_log.full:
            for c in running:
                records[c].flush()
            metric_log, log_columns = new_log(step)

    def narrow() -> None:
        """Drops the ended configurations from the batch (a narrowable task's)."""
        nonlocal members, frozen, stopped, bad_steps, stand_ins, lr_factor, live, ends_at, log_columns
        positions = [i for i, c in enumerate(members) if c in running]
        keep = torch.tensor(positions, device=device)
        optimizer.narrow(keep)
        members = [members[i] for i in positions]
        position.clear()
        position.update((c, i) for i, c in enumerate(members))
        live, ends_at, log_columns = live[positions], ends_at[positions], log_columns[positions]
        frozen = stopped = optimizer.frozen = frozen.index_select(0, keep)
        bad_steps = bad_steps.index_select(0, keep)
        stand_ins = [s.index_select(0, keep) for s in stand_ins]
        lr_factor = batch_schedule()

    batches = itertools.islice(task.batches(seeds), start_step, None)
    step = start_step
    with logging_redirect_tqdm(), tqdm(total=last, initial=start_step, disable=not progress, mininterval=0.5,
                                       dynamic_ncols=True, leave=False) as bar:
        try:
            if step == 0:
                log(0)
            for c in [c for c in running if ends[c] <= step]:  # resumed at its last step: nothing left to run
                finish(c, "completed", step, **({"until_reached": False} if until else {}))
            while running:
                batch = next(batches)
                if lr_factor is not None:
                    torch.mul(optimizer.base_lr, lr_factor(step), out=optimizer.lr)
                loss = optimizer.step(lambda p, perturbed: task.loss(p, batch, perturbed),
                                      lambda p, perturbed: task.loss_and_grad(p, batch, perturbed))
                stopped.logical_or_(bad_loss(loss))
                bad_steps.add_(stopped)
                step += 1
                bar.update()
                if step % log_every == 0 or step in end_steps:
                    log(step)
                    if narrowable and running and len(running) < len(members):
                        narrow()
                if checkpoint_every and running and step % checkpoint_every == 0:
                    checkpoint(0, step)
        except KeyboardInterrupt:
            for c in list(running):
                finish(c, "interrupted", records[c].steps_logged)
            raise
    return summaries
