"""Sparse-coding task (Ahn et al. 2023a): closed forms against autograd, the data, a tiny run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from samrepro import theory
from samrepro.config import ConfigError, validate
from samrepro.sharpness import dense_hessian
from samrepro.tasks import build
from samrepro.tasks.sparse_coding import network, sample

CONF = Path(__file__).resolve().parents[1] / "conf"


def task_cfg(**overrides):
    cfg = OmegaConf.load(CONF / "task" / "sparse_coding.yaml")
    cfg.update(overrides)
    return cfg


def small_cfg(**overrides):
    return task_cfg(**{"d": 12, "n_train": 40, "n_test": 50, **overrides})


def params_with_every_case(task, n_configs):
    """a± of both signs and exactly 0, b of both signs and exactly 0."""
    a, b = task.init_params(range(n_configs))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        a.copy_(torch.randn(a.shape, generator=gen, dtype=a.dtype) * 0.5)
        b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype) * 0.5)
        a[0, 0] = 0.0
        a[1, 1] = 0.0
        b[2] = 0.0
        a[3, 0] = 0.0
        b[3] = 0.3  # w = 0 < b: every unit on
        a[4, 1] = 0.0
        b[4] = -0.3  # w = 0 > b: every unit off
    return [a, b]


@pytest.mark.parametrize("overrides", [{}, {"a_minus_sign": 1, "loss_reduction": "sum"}])
def test_closed_form_loss_and_gradient_match_autograd_of_the_dense_network(overrides):
    task = build(small_cfg(**overrides), 8, torch.device("cpu"))
    params = params_with_every_case(task, 8)
    loss, grads = task.loss_and_grad(params)
    dense = task.loss(params)
    dense_grads = torch.autograd.grad(dense.sum(), params)
    torch.testing.assert_close(loss, dense.detach(), rtol=1e-12, atol=1e-12)
    for g, h in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)


def test_network_by_hand():
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    # a+ = 1, a− = 2, b = −0.5, s = −1: Σ ReLU(x − 0.5) − ReLU(−2x − 0.5) = (0.5 + 0 + 0) − (0 + 3.5 + 0)
    assert network(one, 2 * one, -0.5 * one, x, -1.0).item() == pytest.approx(-3.0)


def test_lambda_max_metric_is_the_top_hessian_eigenvalue():
    task = build(small_cfg(), 5, torch.device("cpu"))
    params = params_with_every_case(task, 5)
    hessian = dense_hessian(task.loss, params)
    torch.testing.assert_close(
        task.metrics(params)["lambda_max"], torch.linalg.eigvalsh(hessian)[:, -1], rtol=1e-9, atol=1e-12
    )


def test_sharpness_at_the_symmetric_point_is_ahn_threshold():
    """At a+ = a−, b = 0 (f = a·Σ_i x_i, no offset) λ_max ≈ d²/(4π), i.e. 2/λ_max ≈ 8π/d² (Ahn et al.),
    at the paper's d, n, for small a."""
    task = build(task_cfg(n_test=10), 3, torch.device("cpu"))
    a, b = task.init_params([0, 1, 2])
    with torch.no_grad():
        a.copy_(torch.tensor([[0.01], [0.03], [0.05]]).expand(3, 2))
    ratio = 2 / task.metrics([a, b])["lambda_max"] / theory.ahn_gd_threshold(200)
    assert ((ratio > 0.9) & (ratio < 1.1)).all(), ratio


def test_data_statistics():
    d, n, signal = 20, 40000, 3.0
    x, y = sample(n, d, signal, seed=3)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    assert abs((y > 0).double().mean().item() - 0.5) < 0.01  # label balance (5σ ≈ 0.0125)
    assert (y[:, None] * x).sum(1).mean().item() == pytest.approx(signal, abs=0.15)  # E[y Σ x_i] = λ
    signal_coordinate = (y[:, None] * x).argmax(1)  # j, up to noise: the spike is uniform over [d]
    counts = torch.bincount(signal_coordinate, minlength=d).double() / n
    assert (counts - 1 / d).abs().max().item() < 0.01
    assert x.square().mean().item() == pytest.approx(1 + signal**2 / d, abs=0.02)  # E x_i² = 1 + λ²/d
    again, _ = sample(n, d, signal, seed=3)
    assert torch.equal(x, again)


def test_init_is_per_seed_and_data_are_shared():
    task = build(small_cfg(), 3, torch.device("cpu"))
    a, b = task.init_params([7, 8, 7])
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert (a > 0).all() and (b == 0).all()
    other = build(small_cfg(), 2, torch.device("cpu"))
    assert torch.equal(task.x, other.x)


def run_cli(tmp_path, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from samrepro.cli import main; main()",
            "task=sparse_coding",
            "task.d=10",
            "task.n_train=20",
            "task.n_test=30",
            "progress=false",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )


def test_tiny_end_to_end_run(tmp_path):
    result = run_cli(tmp_path, "opt=sam", "lr=0.01", "rho=0.05", "steps=6", "log_every=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in tmp_path.rglob("summary.json")]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "train_loss", "test_acc", "bias", "a_plus", "a_minus", "lambda_max"]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert float(rows[0]["bias"]) == 0.0 and float(rows[-1]["bias"]) != 0.0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 6


def test_bad_task_key_is_one_clear_line(tmp_path):
    result = run_cli(tmp_path, "task.loss_reduction=median", "steps=2")
    assert result.returncode == 2
    assert "task.loss_reduction=median" in result.stderr and "mean, sum" in result.stderr


def test_threads_key_applies_to_the_run_only(tmp_path, monkeypatch):
    from samrepro.sweep import run_jobs

    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    job = [
        "task=sparse_coding",
        "task.d=10",
        "task.n_train=20",
        "task.n_test=30",
        "opt=gd",
        "steps=2",
        "threads=1",
        "name=threads_check",
        "progress=false",
    ]
    (run_dir,) = run_jobs([job])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert "threads" not in run_dir.name  # does not change results, so not part of the folder name
    assert torch.get_num_threads() == before
    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        cfg = compose("config", overrides=["threads=0"])
    with pytest.raises(ConfigError, match="threads=0"):
        validate(cfg)
