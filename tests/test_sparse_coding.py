"""Sparse-coding task (Ahn et al. 2023a): closed forms against autograd, the data, a tiny run."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
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
    """a± of both signs and exactly 0, b of both signs and exactly 0, and b exactly at a kink of an
    a₊ unit (x_i + b = 0) and of an a₋ unit (−x_i + b = 0) of the training data."""
    a, b = task.init_params(range(n_configs))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        a.copy_(torch.randn(a.shape, generator=gen, dtype=a.dtype) * 0.5)
        b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype) * 0.5)
        a[0, 0] = 0.0
        a[1, 1] = 0.0
        b[2] = 0.0
        b[3] = -task.x[4, 2].abs()  # a unit of sample 4 exactly at its kink
        b[4] = task.x[7, 1].abs()
        b[5] = -20.0  # every unit off on every sample
    return [a, b]


@pytest.mark.parametrize("loss_mult", [1.0, 0.0125])
def test_closed_form_loss_and_gradient_match_autograd_of_the_dense_network(loss_mult):
    """The sorted form against autograd of the dense definition, ReLU′(0) = 0 at the kinks included."""
    task = build(small_cfg(loss_mult=loss_mult), 8, torch.device("cpu"))
    params = params_with_every_case(task, 8)
    loss, grads = task.loss_and_grad(params)
    dense = task.loss(params)
    dense_grads = torch.autograd.grad(dense.sum(), params)
    torch.testing.assert_close(loss, dense.detach(), rtol=1e-12, atol=1e-14)
    for g, h in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-14)
    assert (grads[1][5] == 0).all() and (grads[0][5] == 0).all()  # dead: no gradient at all


def test_loss_mult_scales_the_loss():
    params = params_with_every_case(build(small_cfg(), 8, torch.device("cpu")), 8)
    one = build(small_cfg(), 8, torch.device("cpu")).loss(params)
    scaled = build(small_cfg(loss_mult=0.25), 8, torch.device("cpu")).loss(params)
    torch.testing.assert_close(scaled, 0.25 * one)


def test_network_and_loss_by_hand():
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    # a₊ = 1, a₋ = 2, b = −0.5: Σ ReLU(x − 0.5) = 0.5 + 0 + 0; Σ ReLU(−x − 0.5) = 0 + 1.5 + 0
    assert network(one, 2 * one, -0.5 * one, x).item() == pytest.approx(0.5 + 2 * 1.5)
    task = build(small_cfg(d=3, n_train=2, loss_mult=3.0), 1, torch.device("cpu"))
    task.x, task.y = torch.cat([x, -x]), torch.tensor([1.0, 1.0], dtype=torch.float64)
    # f = 3.5 on x and, on −x: Σ ReLU(−x − 0.5) = 1.5, Σ ReLU(x − 0.5) = 0.5 → 1.5 + 2·0.5 = 2.5
    expected = 3.0 * (math.log1p(math.exp(-3.5)) + math.log1p(math.exp(-2.5))) / 2
    params = [torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[-0.5]], dtype=torch.float64)]
    assert task.loss(params).item() == pytest.approx(expected)


def test_lambda_max_metric_is_the_top_hessian_eigenvalue():
    """The closed-form 3×3 Hessian (Gauss–Newton part plus the a±–b cross terms ℓ'·y·N±) against
    torch.func's Hessian of the dense definition, off the kinks."""
    task = build(small_cfg(loss_mult=0.3), 6, torch.device("cpu"))
    params = params_with_every_case(task, 6)
    with torch.no_grad():
        params[1][3:5] = torch.tensor([[0.11], [-0.23]], dtype=torch.float64)  # not at a kink
    hessian = dense_hessian(task.loss, params)
    torch.testing.assert_close(
        task.metrics(params)["lambda_max"], torch.linalg.eigvalsh(hessian)[:, -1], rtol=1e-9, atol=1e-12
    )


def test_sharpness_at_the_symmetric_point_is_ahn_threshold():
    """At a₊ = a₋ small (f ≈ a·Σ|x_i| ≈ 0, no offset) and b = 0, λ_max ≈ c·d²/(4π), i.e. 2/λ_max ≈
    8π/(c·d²) (Ahn et al.; c = ``loss_mult``), at the paper's d and n."""
    for loss_mult in (1.0, theory.dai_loss_mult(200, 0.05)):
        task = build(task_cfg(n_test=10, loss_mult=float(loss_mult)), 3, torch.device("cpu"))
        a, b = task.init_params([0, 1, 2])
        with torch.no_grad():
            a.copy_(torch.tensor([[1e-4], [3e-4], [1e-3]]).expand(3, 2))
        ratio = 2 / task.metrics([a, b])["lambda_max"] / theory.ahn_gd_threshold(200, loss_mult)
        assert ((ratio > 0.9) & (ratio < 1.1)).all(), ratio
    assert theory.ahn_gd_threshold(200, theory.dai_loss_mult(200, 0.05)) == pytest.approx(0.05)


def test_dead_points_and_the_dead_flag():
    """A test point is dead when every unit is off: |x_i| ≤ −b for all i (f = 0, an error)."""
    task = build(small_cfg(n_test=400, dead_fraction=0.5), 3, torch.device("cpu"))
    a, b = task.init_params([0, 1, 2])
    x_test, _ = sample(400, 12, 3.0, 1000)
    largest = x_test.abs().amax(1)
    median = largest.median()
    with torch.no_grad():
        b.copy_(torch.tensor([[0.0], [-median], [-20.0]]))
    metrics = task.metrics([a, b])
    expected = [0.0, (largest <= median).double().mean().item(), 1.0]
    torch.testing.assert_close(metrics["dead_frac"], torch.tensor(expected, dtype=torch.float64))
    assert metrics["test_acc"][2] == 0  # f = 0 everywhere counts as an error
    flags = [task.flags({k: v[c].item() for k, v in metrics.items()}) for c in range(3)]
    assert flags == [{"dead": False}, {"dead": expected[1] > 0.5}, {"dead": True}]


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


def test_init_is_per_seed_with_signs_and_data_are_shared():
    """a± ~ N(0, 1/(2d)) with their signs (Ahn et al.), b = 0."""
    task = build(small_cfg(d=50), 2000, torch.device("cpu"))
    a, b = task.init_params([7, 8, 7, *range(1997)])
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert (b == 0).all()
    assert 0.45 < (a > 0).double().mean().item() < 0.55
    assert a.var().item() == pytest.approx(1 / 100, rel=0.1)  # 4000 draws: relative s.e. ≈ 2%
    other = build(small_cfg(d=50), 2, torch.device("cpu"))
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


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    result = run_cli(tmp_path, "opt=sam", "lr=0.01", "rho=0.05", "steps=6", "log_every=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p.parent for p in tmp_path.rglob("summary.json")]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "train_loss", "test_acc", "bias", "a_plus", "a_minus", "lambda_max",
                             "dead_frac"]
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert float(rows[0]["bias"]) == 0.0 and float(rows[-1]["bias"]) != 0.0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 6
    assert summary["dead"] is False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "allowed"),
    [("task.loss_mult=0", "must be a number > 0"), ("task.dead_fraction=1.5", "in [0, 1)"),
     ("task.dead_fraction=true", "in [0, 1)")],
)
def test_bad_task_key_is_one_clear_line(tmp_path, override, allowed):
    result = run_cli(tmp_path, override, "steps=2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and override in lines[0].lower() and allowed in lines[0], result.stderr


def test_threads_key_applies_to_the_run_only(tmp_path, monkeypatch):
    from samrepro.cli import multirun

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
    (run_dir,) = multirun(job)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert "threads" not in run_dir.name  # does not change results, so not part of the folder name
    assert torch.get_num_threads() == before
    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        cfg = compose("config", overrides=["threads=0"])
    with pytest.raises(ConfigError, match="threads=0"):
        validate(cfg)


def test_ahn_departure_is_the_first_eta_off_the_plateau():
    from samrepro.figures.ahn_fig1 import PLATEAU_TOL, departure

    bias = pd.Series([-0.300, -0.301, -0.302, -0.300 - PLATEAU_TOL, -0.5], index=[1e-4, 3e-4, 5e-4, 6e-4, 7e-4])
    assert departure(bias.sample(frac=1, random_state=0)) == 7e-4  # exactly PLATEAU_TOL below is on it
    assert departure(bias.iloc[:3]) is None


def test_sam_beats_gd_except_at_the_ceiling_where_it_must_stay_there():
    from samrepro.figures.sparse_coding import sam_beats_gd

    def table(sam_acc):
        rows = [("gd", 1, -0.1, 0.60), ("gd", 2, -2.0, 0.75), ("sam", 1, -1.0, 0.65), ("sam", 2, -2.2, sam_acc)]
        frame = pd.DataFrame(rows, columns=["opt", "lr", "bias", "test_acc"]).assign(diverged=0, dead=0, runs=3)
        return frame.set_index(["opt", "lr"])

    for sam_acc, passed in ((0.74, True), (0.72, False)):  # GD at η = 2 is at the ceiling (75%)
        t = table(sam_acc)
        assert sam_beats_gd(t, "lr", {lr: row for lr, row in t.loc["gd"].iterrows()}).passed is passed
