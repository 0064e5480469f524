"""Matrix sensing (Dai et al. App. A): closed-form gradient, batching, λ_max, the CLI and the sweep runner."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from samrepro import runner
from samrepro.cli import CONF_MODULE, multirun
from samrepro.config import ConfigError
from samrepro.records import read_summary
from samrepro.sharpness import dense_hessian
from samrepro.tasks import Task, build

TINY = {"d": 6, "r": 2, "m": 24, "data_seed": 3}


def tiny_task(n_configs: int = 3, **keys) -> Task:
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        cfg = compose("config", overrides=["task=matrix_sensing"]).task
    cfg = OmegaConf.merge(cfg, {**TINY, **keys})
    return build(cfg, n_configs, torch.device("cpu"))


def base_config(*overrides: str):
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        tiny = [f"task.{k}={v}" for k, v in TINY.items()]
        return compose("config", overrides=["task=matrix_sensing", *tiny, "progress=false", *overrides])


def test_data_follow_appendix_a():
    task = tiny_task()
    x_star, sensing, d = task.x_star, task.sensing, TINY["d"]
    eigenvalues = torch.linalg.eigvalsh(x_star)
    assert (eigenvalues[: d - TINY["r"]].abs() < 1e-12).all() and (eigenvalues[-TINY["r"]:] > 0).all()
    assert torch.allclose(torch.diagonal(x_star).sum(), torch.tensor(float(TINY["r"]), dtype=torch.float64))
    b = torch.stack([(sensing[i].reshape(d, d) * x_star).sum() for i in range(TINY["m"])])
    assert torch.allclose(task.targets, b)


@pytest.mark.parametrize("loss, coefficient", [("half_mean", 1 / 48), ("mean", 1 / 24), ("half_sum", 0.5)])
def test_loss_is_the_sum_of_squared_residuals(loss, coefficient):
    task = tiny_task(loss=loss)
    (u,) = task.init_params([0, 1, 2])
    d = TINY["d"]
    for c in range(3):
        x = u[c] @ u[c].T
        residuals = [(task.sensing[i].reshape(d, d) * x).sum() - task.targets[i] for i in range(TINY["m"])]
        expected = coefficient * sum(r**2 for r in residuals)
        assert math.isclose(task.loss([u])[c].item(), expected.item(), rel_tol=1e-12)


@pytest.mark.parametrize("loss", ["half_mean", "mean", "half_sum"])
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_closed_form_gradient_matches_autograd(loss, init):
    task = tiny_task(loss=loss, init=init, init_scale=1.3)
    params = task.init_params([0, 1, 2])
    loss_cf, grads_cf = task.loss_and_grad(params)
    loss_ad, grads_ad = Task.loss_and_grad(task, params, None)
    assert torch.allclose(loss_cf, loss_ad, rtol=1e-12)
    assert torch.allclose(grads_cf[0], grads_ad[0], rtol=1e-10, atol=1e-12)


def test_gradient_matches_finite_differences():
    task = tiny_task(n_configs=1)
    (u,) = task.init_params([5])
    direction = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=u.dtype)
    h = 1e-6
    with torch.no_grad():
        numeric = (task.loss([u + h * direction]) - task.loss([u - h * direction])) / (2 * h)
    analytic = (task.loss_and_grad([u])[1][0] * direction).sum()
    assert math.isclose(numeric.item(), analytic.item(), rel_tol=1e-7)


def test_orthogonal_init_gives_alpha_squared_identity():
    task = tiny_task(init="orthogonal", init_scale=0.7)
    (u,) = task.init_params([0, 1, 2])
    assert torch.allclose(u @ u.mT, 0.49 * torch.eye(TINY["d"], dtype=u.dtype).expand(3, -1, -1), atol=1e-12)
    assert not torch.allclose(u[0], u[1])  # each run's seed draws its own Q


def test_lambda_max_is_the_top_hessian_eigenvalue():
    task = tiny_task(sharpness_every=1, sharpness_iters=150, init_scale=1.2)
    params = task.init_params([0, 1, 2])
    exact = torch.linalg.eigvalsh(dense_hessian(task.loss, params)).amax(-1)
    measured = task.metrics(params)["lambda_max"]
    assert torch.allclose(measured, exact, rtol=1e-5)


def test_test_loss_definitions():
    frobenius, relative = tiny_task(), tiny_task(test_loss="relative")
    params = frobenius.init_params([0, 1, 2])
    (u,) = params
    expected = (u @ u.mT - frobenius.x_star).square().sum((1, 2))
    assert torch.allclose(frobenius.metrics(params)["test_loss"], expected)
    assert torch.allclose(relative.metrics(params)["test_loss"], expected / frobenius.x_star.square().sum())


@pytest.mark.parametrize("key, value", [("d", 0), ("r", 7), ("loss", "l1"), ("init", "zeros"),
                                        ("init_scale", -1.0), ("test_loss", "mse"), ("sharpness_every", -1)])
def test_bad_task_keys_are_rejected(key, value):
    with pytest.raises(ConfigError, match=f"task.{key}="):
        tiny_task(**{key: value})


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_batched_sweep_equals_runs_one_by_one(tmp_path):
    """GD, SAM and USAM (one of them diverging) in one batch give the rows they give alone."""
    base = base_config("steps=60", "log_every=10", "task.init_scale=1.5", "task.sharpness_every=20")
    runs = [{"opt": opt, "lr": 0.05, "rho": rho, "seed": seed}
            for opt, rho, seed in (("gd", 0.0, 0), ("sam", 0.1, 1), ("usam", 0.01, 2), ("usam", 20.0, 0))]
    batched = [tmp_path / f"batched{i}" for i in range(len(runs))]
    summaries = runner.run([runner.Run.of(base, d, **run) for run, d in zip(runs, batched)])
    assert [s["status"] for s in summaries] == ["completed"] * 3 + ["diverged"]
    for i, run in enumerate(runs):
        alone = tmp_path / f"alone{i}"
        assert runner.run([runner.Run.of(base, alone, **run)])[0]["status"] == summaries[i]["status"]
        rows_batched, rows_alone = read_rows(batched[i]), read_rows(alone)
        assert [r["step"] for r in rows_batched] == [r["step"] for r in rows_alone]
        for rb, ra in zip(rows_batched, rows_alone, strict=True):
            for key in ("train_loss", "test_loss", "lambda_max"):
                b, a = float(rb[key]), float(ra[key])
                assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9), (i, key, rb, ra)


def test_end_to_end_through_the_sweep_runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shared = ["task=matrix_sensing", *(f"task.{k}={v}" for k, v in TINY.items()), "task.sharpness_every=10",
              "steps=25", "log_every=5", "lr=0.05", "name=ms_tiny"]
    run_dirs = multirun([*shared, "opt=gd,sam,usam", "rho=0.05"])
    for run_dir in run_dirs:
        rows = read_rows(run_dir)
        assert list(rows[0]) == ["step", "train_loss", "test_loss", "lambda_max"]
        assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20, 25]
        measured = [not math.isnan(float(r["lambda_max"])) for r in rows]
        assert measured == [True, False, True, False, True, False]
        assert read_summary(run_dir)["status"] == "completed"
        assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


@pytest.mark.slow
def test_cli_runs_one_configuration(tmp_path):
    cli = [str(Path(sys.executable).with_name("samrepro")), "task=matrix_sensing", "progress=false"]
    tiny = [f"task.{k}={v}" for k, v in TINY.items()]
    result = subprocess.run([*cli, *tiny, "opt=usam", "rho=0.01", "lr=0.05", "steps=10", "log_every=5"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "adhoc").iterdir()
    rows = read_rows(run_dir)
    assert list(rows[0]) == ["step", "train_loss", "test_loss"] and len(rows) == 3
    assert [int(r["step"]) for r in rows] == [0, 5, 10]
