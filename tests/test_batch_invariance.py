"""A configuration's bytes do not depend on its batch: each batchable task runs a small mixed sweep (GD, SAM,
USAM, for toy4d GD on L^asc too; several η, ρ and seeds; some configurations diverging early, so that they
leave the batch) once as one batch, once as a batch of a subset in another order, and each configuration
alone (C = 1): every run's metrics.csv must be byte-identical in all three, and its summary the same
(status, steps, final metrics). And each task's loss, gradient and metrics of a configuration in a batch of
37 are bit for bit those it has alone.

The batch holds configurations of different steps and LR schedules, and a narrowable task's batch shrinks as
they end (diverged or done); toy4d's at batch size 1 keeps them, frozen.

This is what makes a resumed sweep (its finished configurations skipped), one job of a sweep run alone, or a
sweep split into chunks give the bits of the whole sweep."""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch
from hydra import compose, initialize_config_module

from samrepro import runner
from samrepro.cli import CONF_MODULE
from samrepro.optim import SAM
from samrepro.runner import Run
from samrepro.tasks import build, matrix_sensing

OPTS = ("gd", "sam", "usam")
SEEDS = [0, 1]
# task: (overrides, grid of opt × lr × rho × seed). Each sweep is batched as ≥ 17 configurations (GD's ρ values
# are one computation), enough that elementwise kernels take their vectorized path for some of them and
# their scalar one alone; some configurations diverge within the first few logged rows and leave the batch.
CASES = {
    "quadratic": (["task=quadratic", "task.eigenvalues=[4.0,1.0,0.25]", "task.init=[1.0,-0.5,2.0]", "steps=60"],
                  {"lr": [0.3, 0.55], "rho": [0.1, 1.5]}),
    "single_neuron": (["task=single_neuron", "task.init=[1.5,3.0]", "steps=60", "loss_ceiling=6.0"],
                      {"lr": [0.1, 1.5], "rho": [0.2, 3.0]}),
    "toy4d": (["task=toy4d", "task.batch_size=1", "steps=60"],  # gd_ascent (Wen et al. Fig. 1): a batch of its own
              {"opt": (*OPTS, "gd_ascent"), "lr": [0.02, 0.1], "rho": [0.1, 1.0]}),
    "matrix_sensing": (  # odd d and m: neighbouring configurations' slices would be aligned differently
        ["task=matrix_sensing", "task.d=7", "task.r=2", "task.m=45", "task.sharpness_every=10",
         "task.sharpness_iters=4", "steps=40"], {"lr": [0.05, 0.1], "rho": [0.1, 1.0]}),
    "sparse_coding": (["task=sparse_coding", "task.d=15", "task.n_train=45", "task.n_test=301", "steps=40",
                       "loss_ceiling=2.0"], {"lr": [0.2, 2.0], "rho": [0.5, 3.0]}),
}
def grid(task: str) -> list[tuple]:
    values = CASES[task][1]
    return [(opt, lr, rho, seed) for opt in values.get("opt", OPTS) for lr in values["lr"] for rho in values["rho"]
            for seed in SEEDS]


@cache
def config(task: str):
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        return compose("config", overrides=[*CASES[task][0], "log_every=2", "device=cpu", "progress=false"])


def runs(task: str, root, indices) -> list[Run]:
    """The runs of ``grid(task)[i]``, each with its own number of steps (some end off the log_every grid) and
    every third with a geometric LR schedule: one batch holds them all, each configuration leaving it after its
    own last step."""
    geometric = {"name": "geometric", "final_ratio": 0.1, "horizon": None}  # decays over the run's own steps
    return [Run.of(config(task), root / str(i), **dict(zip(("opt", "lr", "rho", "seed"), grid(task)[i])),
                   steps=config(task).steps - 3 * (i % 4), **({"lr_schedule": geometric} if i % 3 == 0 else {}))
            for i in indices]


def result(run_dir) -> tuple:
    summary = json.loads((run_dir / "summary.json").read_text())
    return ((run_dir / "metrics.csv").read_bytes(),
            {k: summary.get(k) for k in ("status", "steps_done", "diverged_at", "final")})


@pytest.mark.parametrize("task", list(CASES))
def test_a_configuration_gets_the_same_bytes_in_any_batch(task, tmp_path, monkeypatch):
    n = len(grid(task))
    everything = runs(task, tmp_path / "batch", range(n))
    sizes = []  # the batch sizes a narrowable task's batch is cut to
    narrow = SAM.narrow
    monkeypatch.setattr(SAM, "narrow", lambda self, keep: sizes.append(len(keep)) or narrow(self, keep))
    summaries = runner.run(everything)
    statuses = [s["status"] for s in summaries]
    assert "diverged" in statuses and "completed" in statuses, statuses  # some leave the batch early
    assert len({s["steps_done"] for s in summaries if s["status"] == "completed"}) > 1  # at their own last steps
    assert (len(sizes) >= 2 and sizes == sorted(sizes, reverse=True)) == (task != "toy4d"), sizes  # toy4d: frozen
    subset = [i for i in range(n - 1, -1, -1) if i % 4 != 1]  # another batch size, each at another position
    runner.run(runs(task, tmp_path / "subset", subset))
    for i in range(n):
        runner.run(runs(task, tmp_path / "alone", [i]))
    expected = {i: result(tmp_path / "batch" / str(i)) for i in range(n)}
    differ = [f"alone {i}" for i in range(n) if result(tmp_path / "alone" / str(i)) != expected[i]]
    differ += [f"subset {i}" for i in subset if result(tmp_path / "subset" / str(i)) != expected[i]]
    assert not differ, f"{task}: {differ} differ from the full batch (statuses {statuses})"


@pytest.mark.parametrize("task, blocks", [(task, False) for task in CASES] + [("matrix_sensing", True)])
def test_a_task_computes_each_configuration_of_a_large_batch_as_alone(task, blocks, monkeypatch):
    """Loss, gradient and metrics of 37 configurations at random points, against each configuration alone;
    ``blocks``: matrix sensing with its products cut into many blocks of rows (the same values as in one
    block, to rounding)."""
    cfg = config(task).task
    n = 37
    one_block = build(cfg, n, torch.device("cpu"))
    if blocks:
        monkeypatch.setattr(matrix_sensing, "BLOCK_BYTES", 1)  # blocks of ALIGN rows
    batch, alone = build(cfg, n, torch.device("cpu")), build(cfg, 1, torch.device("cpu"))
    assert not blocks or len(batch.blocks) > 3
    generator = torch.Generator().manual_seed(0)
    params = [(p.detach() * (1 + 0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
               - 0.1 * torch.rand(p.shape, generator=generator, dtype=p.dtype)).requires_grad_()
              for p in batch.init_params(range(n))]

    def values(t, ps) -> dict[str, torch.Tensor]:
        loss, grads = t.loss_and_grad(ps)
        return {"loss": t.loss(ps).detach(), "closed-form loss": loss,
                **{f"gradient {i}": g for i, g in enumerate(grads)}, **t.metrics(ps, 0)}

    everything = values(batch, params)
    if blocks:
        for name, value in values(one_block, params).items():
            assert torch.allclose(everything[name], value, rtol=1e-12, atol=1e-14, equal_nan=True), name
    for c in range(n):
        own = values(alone, [p[c:c + 1].detach().clone().requires_grad_() for p in params])
        assert own.keys() == everything.keys()
        for name, theirs in everything.items():  # bit for bit (NaN included)
            assert torch.equal(own[name][0].view(torch.int64), theirs[c].view(torch.int64)), (task, c, name)
