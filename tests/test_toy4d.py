"""The 4D toy of Wen et al. Fig. 1: closed forms against autograd, per-example losses, short runs."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from samrepro import sharpness, tasks, theory
from samrepro.config import ConfigError
from samrepro.optim import SAM
from samrepro.tasks.toy4d import closed_form_hessian
from samrepro.train import lr_schedule

TOY4D = {"_target_": "samrepro.tasks.toy4d.build", "name": "toy4d"}


def build(batch_size=2, n=5, x=(0.5, 0.5), y=(0.1, 0.1)):
    cfg = OmegaConf.create({**TOY4D, "x_init": list(x), "y_init": list(y), "batch_size": batch_size})
    return tasks.build(cfg, n, torch.device("cpu"))


def random_points(n=5, seed=0):
    return [torch.randn((n, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)]


def test_gradient_and_hessian_match_autograd():
    task = build()
    params = random_points()
    for batch in (None, torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0]],
                                     dtype=torch.float64)):
        loss, (grad,) = task.loss_and_grad(params, batch)
        p = params[0].clone().requires_grad_()
        ref_loss = task.loss([p], batch)
        (ref_grad,) = torch.autograd.grad(ref_loss.sum(), [p])
        torch.testing.assert_close(loss, ref_loss.detach())
        torch.testing.assert_close(grad, ref_grad)
        dense = sharpness.dense_hessian(lambda q, b=batch: task.loss(q, b), params)
        torch.testing.assert_close(closed_form_hessian(params[0], batch), dense)


def test_hand_computed_values_and_manifold_metrics():
    task = build(n=1)
    w = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)  # F0 = 8, F1 = 4 + 1 + 1 = 6
    assert task.loss([w]).item() == 14.0
    m = task.metrics([w])
    assert (m["lambda_max"].item(), m["lambda_min"].item(), m["trace"].item()) == (16.0, 12.0, 28.0)
    # on Γ the Hessian is diag(0, 0, 2F0, 2F1)
    h = closed_form_hessian(torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(h[0], torch.diag(torch.tensor([0.0, 0.0, 16.0, 12.0], dtype=torch.float64)))


def test_the_one_f0_f1_is_wen_fig1s_and_the_tasks():
    """theory.toy4d_factors is Wen et al.'s F0 = x0² + 6x1² + 8, F1 = 4(1 − x0)² + (1 − x1)² + 1 (by hand at
    two points), the task's loss, and the non-zero eigenvalues 2F0, 2F1 of its closed-form Hessian on Γ."""
    assert theory.toy4d_factors(np.array([0.0, 0.0])) == (8.0, 4.0 + 1.0 + 1.0)
    assert theory.toy4d_factors(np.array([1.0, 0.5])) == (1.0 + 1.5 + 8.0, 0.0 + 0.25 + 1.0)
    task = build()
    (w,) = random_points()
    torch.testing.assert_close(theory.toy4d_loss(w), task.loss([w]))
    on_gamma = torch.cat([w[:, :2], torch.zeros_like(w[:, :2])], dim=1)
    f0, f1 = theory.toy4d_factors(w[:, :2])
    torch.testing.assert_close(closed_form_hessian(on_gamma),
                               torch.diag_embed(torch.stack([0 * f0, 0 * f0, 2 * f0, 2 * f1], dim=1)))


def test_loss_and_gradient_bits_of_a_configuration_do_not_depend_on_its_batch():
    """The loss is the theory's formula to the last bit, and a row's loss and gradient are those it has alone in a
    batch of 1,000. F summed by a matrix product (a BLAS picks its kernel by the number of rows, and kernels
    round differently) was off the formula in 343 of 2,000 values here, and batch-dependent on another CPU."""
    (w,) = random_points(n=1000)
    task, alone = build(n=1000), build(n=1)
    loss, (grad,) = task.loss_and_grad([w])
    assert torch.equal(task.loss([w]), theory.toy4d_loss(w))
    for i in range(0, 1000, 37):
        one_loss, (one_grad,) = alone.loss_and_grad([w[i : i + 1]])
        assert torch.equal(one_loss, loss[i : i + 1]) and torch.equal(one_grad, grad[i : i + 1])


def test_predicted_limits_minimize_f0_f1_and_their_sum():
    x = torch.tensor([theory.TOY4D_LIMITS[k] for k in ("sam", "gd_ascent", "sam_bs1")], dtype=torch.float64,
                     requires_grad=True)
    f0, f1 = theory.toy4d_factors(x)
    objective = f0[0] + f1[1] + (f0[2] + f1[2])  # F0 at the first, F1 at the second, F0 + F1 at the third
    (grad,) = torch.autograd.grad(objective, x)
    torch.testing.assert_close(grad, torch.zeros_like(grad))
    assert theory.TOY4D_LIMITS["sam_bs1"] == (0.8, 1 / 7)


def test_finite_lr_limit_of_batch_size_one_sam_solves_its_fixed_point():
    lr = 0.005
    x = theory.toy4d_sam_bs1_cycle_limit(lr)
    weights = [(2 / (2 - 4 * lr * f)) ** 2 for f in theory.toy4d_factors(x)]
    np.testing.assert_allclose(theory.toy4d_weighted_argmin(*weights), x, rtol=1e-12)
    assert x[0] < 0.8 and x[1] < 1 / 7  # biased toward argmin F0 = (0, 0)
    np.testing.assert_allclose(theory.toy4d_sam_bs1_cycle_limit(1e-9), (0.8, 1 / 7), rtol=1e-7)
    assert theory.toy4d_sam_bs1_cycle_limit(0.002) == pytest.approx((0.7909, 0.1362), abs=1e-4)


def test_per_example_losses_average_to_the_loss():
    task = build()
    params = random_points()
    n = params[0].shape[0]
    examples = [torch.tensor([[2.0, 0.0]] * n, dtype=torch.float64), torch.tensor([[0.0, 2.0]] * n,
                                                                                   dtype=torch.float64)]
    mean = sum(task.loss(params, b) for b in examples) / 2
    torch.testing.assert_close(mean, task.loss(params))


def test_batch_size_one_samples_each_example_from_its_own_seed():
    task = build(batch_size=1, n=3)
    stream = task.batches([0, 1, 0])
    batches = torch.stack([next(stream) for _ in range(2000)])  # [T, C, 2]
    assert set(batches.sum(-1).unique().tolist()) == {2.0} and set(batches.unique().tolist()) == {0.0, 2.0}
    torch.testing.assert_close(batches[:, 0], batches[:, 2])  # same seed, same examples
    assert 0.45 < (batches[:, 1, 0] == 2).double().mean().item() < 0.55
    assert next(build().batches([0])) is None


def run(opt, steps, lr, rho, batch_size=2, schedule=None):
    task = build(batch_size=batch_size, n=1)
    params = task.init_params([0])
    optimizer = SAM(params, opt, lr, rho, config_dim=True)
    batches = task.batches([0])
    for t in range(steps):
        if schedule is not None:
            torch.mul(optimizer.base_lr, schedule(t), out=optimizer.lr)
        batch = next(batches)
        optimizer.step(lambda p, pert, b=batch: task.loss(p, b, pert),
                       lambda p, pert, b=batch: task.loss_and_grad(p, b, pert))
    return params[0][0, :2].detach()


def test_short_runs_move_x_toward_the_predicted_minimizers():
    start = torch.tensor([0.5, 0.5], dtype=torch.float64)
    sam = run("sam", 600, 0.01, 0.5)  # toward argmin F0 = (0, 0)
    assert (sam < start - 0.05).all()
    asc = run("gd_ascent", 300, 0.003, 2.0, schedule=lr_schedule("geometric", 0.1, 300))  # toward (1, 1)
    assert asc[0] > 0.6
    sgd = run("sam", 1000, 0.002, 2.0, batch_size=1)  # toward (0.8, 1/7)
    assert sgd[0] > 0.55 and sgd[1] < 0.4
    gd = run("gd", 300, 0.01, 0.0)  # gradient flow onto Γ: x barely moves
    assert (gd - start).abs().max() < 0.01


def test_bad_config_is_rejected():
    for cfg in ({"batch_size": 3}, {"x_init": [0.5]}):
        base = {**TOY4D, "x_init": [0.5, 0.5], "y_init": [0.1, 0.1], "batch_size": 2, **cfg}
        try:
            tasks.build(OmegaConf.create(base), 1, torch.device("cpu"))
        except ConfigError:
            continue
        raise AssertionError(f"{cfg} accepted")


def test_geometric_lr_schedule():
    f = lr_schedule("geometric", 1e-4, 100)
    assert f(0) == 1.0 and abs(f(100) - 1e-4) < 1e-15 and abs(f(50) - 1e-2) < 1e-15
    assert lr_schedule("constant", 1.0, 100) is None


def test_batched_run_writes_the_run_folder_schema(tmp_path):
    """A batched run (full-batch SAM and GD, annealed η) through the runner: CSV columns and rows."""
    import csv
    import json

    from hydra import compose, initialize_config_module

    from samrepro import runner
    from samrepro.cli import CONF_MODULE
    from samrepro.config import validate

    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        cfg = compose("config", overrides=["task=toy4d", "steps=50", "log_every=25", "progress=false",
                                           "lr_schedule.name=geometric", "lr_schedule.final_ratio=0.01"])
    validate(cfg)
    runs = [{"opt": "sam", "lr": 0.01, "rho": 0.5, "seed": 0},
            {"opt": "gd", "lr": 0.01, "rho": 0.0, "seed": 0}]
    runner.run([runner.Run.of(cfg, tmp_path / r["opt"], **r) for r in runs])
    with open(tmp_path / "sam" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "x0", "x1", "y0", "y1", "loss", "lambda_max", "lambda_min", "trace",
                             "grad_v1_cos"]
    assert [int(r["step"]) for r in rows] == [0, 25, 50]
    assert json.loads((tmp_path / "gd" / "summary.json").read_text())["status"] == "completed"


def test_bad_lr_schedule_is_rejected():
    from hydra import compose, initialize_config_module

    from samrepro.cli import CONF_MODULE
    from samrepro.config import validate

    for bad in ("lr_schedule.name=cosine", "lr_schedule.final_ratio=0"):
        with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
            cfg = compose("config", overrides=["task=toy4d", bad])
        try:
            validate(cfg)
        except ConfigError as err:
            assert bad.split("=")[0] in str(err)
            continue
        raise AssertionError(f"{bad} accepted")
