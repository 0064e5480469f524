"""Extending samrepro without forking it: a task from the user's own package named by ``_target_`` in the
user's own config folder (tests/example_project), the Task contract checked when a task is built, and a
user's own torch.nn.Module as ``task.model`` of CIFAR-10."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from samrepro import tasks
from samrepro.cli import multirun
from samrepro.config import ConfigError
from samrepro.records import read_summary

EXAMPLE = Path(__file__).resolve().parent / "example_project"
BIN = Path(sys.executable).parent  # the console scripts of this environment
RING = OmegaConf.load(EXAMPLE / "conf" / "task" / "ring.yaml")
CPU = torch.device("cpu")
COLUMNS = ["step", "loss", "radius", "angle", "lambda_max"]
SHORT = ["steps=200", "log_every=50", "device=cpu", "progress=false"]


def samrepro(cwd: Path, *args: str, path: tuple[Path, ...] = (EXAMPLE,)) -> subprocess.CompletedProcess:
    """The CLI with the user's package importable and the user's config folder added."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run([sys.executable, "-m", "samrepro", "--config-dir", str(EXAMPLE / "conf"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS
    return [dict(zip(rows[0], map(float, r))) for r in rows[1:]]


# ------------------------------------------------------------------------------------ the user's task
def test_the_ring_task_meets_the_contract_and_its_gradient_is_radial(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    task = tasks.build(RING, 3, CPU)
    (w,) = task.init_params([0, 1, 2])
    assert w.shape == (3, 2) and torch.linalg.vector_norm(w, dim=1).tolist() == pytest.approx([0.5] * 3)
    losses, (grad,) = task.loss_and_grad([w], None)
    r2 = w.detach().square().sum(1, keepdim=True)
    assert torch.allclose(grad, (r2 - 1) * w.detach()) and torch.allclose(losses, (r2[:, 0] - 1) ** 2 / 4)
    assert task.metrics([w])["lambda_max"].tolist() == pytest.approx([3 * 0.25 - 1] * 3)
    with pytest.raises(ConfigError, match=r"^task.init_radius=0: must be a number > 0$"):
        tasks.build(OmegaConf.merge(RING, {"init_radius": 0}), 1, CPU)


def test_one_run_of_the_users_task_from_the_users_config_folder(tmp_path):
    result = samrepro(tmp_path, "task=ring", "opt=sam", *SHORT)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "adhoc").iterdir()
    assert run_dir.name == "log_every=50,opt=sam,steps=200,task=ring"
    rows = read_rows(run_dir)
    assert [r["step"] for r in rows] == [0, 50, 100, 150, 200]
    assert [r["angle"] for r in rows] == pytest.approx([rows[0]["angle"]] * 5, abs=1e-12)  # every step is radial
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["task"] == "ring" and summary["opt"] == "sam"
    assert OmegaConf.load(run_dir / "config.yaml").task._target_ == "ringtask.task.build"
    # SAM bounces across the circle: near it, but never on it (η = 0.1, ρ = 0.05: conf/config.yaml)
    assert 0 < summary["final"]["loss"] and abs(summary["final"]["radius"] - 1) < 3 * 0.1 * 0.05


def test_a_batched_sweep_of_the_users_task(tmp_path):
    result = samrepro(tmp_path, "-m", "task=ring", "opt=gd,sam", "lr=0.1,0.2", "seed=0,1", *SHORT)
    assert result.returncode == 0, result.stderr
    runs = {p.name: p for p in (tmp_path / "runs" / "adhoc").iterdir() if p.is_dir()}
    grid = list(itertools.product(["gd", "sam"], [0.1, 0.2], [0, 1]))
    assert set(runs) == {f"log_every=50,lr={lr},opt={opt},seed={seed},steps=200,task=ring" for opt, lr, seed in grid}
    angles = {}
    for opt, lr, seed in grid:
        run_dir = runs[f"log_every=50,lr={lr},opt={opt},seed={seed},steps=200,task=ring"]
        rows, summary = read_rows(run_dir), json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 200
        assert (summary["opt"], summary["lr"], summary["seed"]) == (opt, lr, seed)
        angles.setdefault(seed, []).extend(r["angle"] for r in rows)
        if opt == "gd":  # |1 − 2η| ≤ 0.8 per step on the circle: converged
            assert summary["final"]["loss"] < 1e-20 and summary["final"]["lambda_max"] == pytest.approx(2)
        else:
            assert 0 < summary["final"]["loss"] and abs(summary["final"]["radius"] - 1) < 3 * lr * 0.05
    for seed, values in angles.items():  # every step is radial: each seed's runs keep the angle it drew
        assert max(values) - min(values) < 1e-12 and abs(values[0] - angles[1 - seed][0]) > 0.1

    # collected and plotted like any sweep
    collected = subprocess.run([BIN / "samrepro-collect", "runs/adhoc", "-o", "ring.csv"],
                               cwd=tmp_path, capture_output=True, text=True)
    assert collected.returncode == 0 and "8 runs (8 completed)" in collected.stderr, collected.stderr
    plotted = subprocess.run([BIN / "samrepro-plot", "ring.csv", "-y", "radius", "--hue", "opt",
                              "--style", "lr", "-o", "ring"], cwd=tmp_path, capture_output=True, text=True)
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "ring.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "ring.pdf").stat().st_size > 0


def test_the_readme_shows_this_example_as_it_is():
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    for path in ("ringtask/task.py", "conf/task/ring.yaml"):
        assert (EXAMPLE / path).read_text() in readme, f"README.md must show tests/example_project/{path} verbatim"


# ------------------------------------------------------------------------------------ the Task contract
BROKEN_TASK = '''
from samrepro.tasks import Task

class Forgetful(Task):  # defines the methods but not metric_names
    def init_params(self, seeds):
        return []
    def loss(self, params, batch=None, perturbed=False):
        return 0
    def metrics(self, params, step=0):
        return {}

def build(cfg, n_configs, device):
    return Forgetful()
'''


def test_contract_errors_on_the_command_line_are_one_line(tmp_path):
    (tmp_path / "brokentask.py").write_text(BROKEN_TASK)
    for target, message in [
        ("brokentask.build", "task._target_=brokentask.build: the task it built has no metric_names (a non-empty list "
                             "of distinct metric names, none of them 'step'; see the Task contract in the README)"),
        ("ringtask.nosuch.build", "task._target_=ringtask.nosuch.build: does not import (ModuleNotFoundError: "
                                  "No module named 'ringtask.nosuch')"),
    ]:
        result = samrepro(tmp_path, "task=ring", f"task._target_={target}", *SHORT, path=(EXAMPLE, tmp_path))
        assert result.returncode == 2 and result.stderr == f"samrepro: error: {message}\n"
        assert not [p for p in tmp_path.glob("runs/**/*") if p.is_file()]  # nothing written


class Minimal(tasks.Task):
    metric_names = ("loss",)

    def init_params(self, seeds):
        return [torch.zeros(len(seeds), 1, requires_grad=True)]

    def loss(self, params, batch=None, perturbed=False):
        return params[0].square().sum(1)

    def metrics(self, params, step=0):
        return {"loss": self.loss(params)}


class NoLoss(tasks.Task):
    metric_names = ("loss",)
    init_params, metrics = Minimal.init_params, Minimal.metrics


def built(task_or_class, *attributes):
    """A build function returning ``task_or_class()`` with ``attributes`` (name, value) set on it."""
    def build(cfg, n_configs, device):
        task = task_or_class()
        for name, value in attributes:
            setattr(task, name, value)
        return task
    return build


@pytest.mark.parametrize("target, message", [
    (None, "task._target_: missing; a task config names its build function (cfg, n_configs, device) -> Task"),
    ("torch.pi", "task._target_=torch.pi: is a float, not a function build(cfg, n_configs, device) -> Task"),
    ("samrepro.tasks.Task", "task._target_=samrepro.tasks.Task: cannot be called as a function build(cfg, "
                            "n_configs, device) -> Task (too many positional arguments)"),
    ("test_extending.MINIMAL", None),
    ("test_extending.NO_LOSS", "the task it built has no loss (a method loss(params, batch, perturbed)"),
    ("test_extending.BAD_NAMES", "the task it built has metric_names=('step', 'loss') (must be a non-empty list"),
    ("test_extending.BAD_CONFIG_DIM", "the task it built has config_dim=1 (must be true or false"),
    ("test_extending.BAD_EPOCH", "the task it built has steps_per_epoch=0 (must be an integer > 0"),
])
def test_the_task_contract_is_checked_when_a_task_is_built(monkeypatch, target, message):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = OmegaConf.create({"name": "t"} if target is None else {"_target_": target, "name": "t"})
    if message is None:
        assert isinstance(tasks.build(cfg, 1, CPU), Minimal)
        return
    with pytest.raises(ConfigError) as err:
        tasks.build(cfg, 1, CPU)
    assert message in str(err.value) and "\n" not in str(err.value)
    if "the task it built" in message:
        assert str(err.value).startswith(f"task._target_={target}: ")


MINIMAL = built(Minimal)
NO_LOSS = built(NoLoss)
BAD_NAMES = built(Minimal, ("metric_names", ("step", "loss")))
BAD_CONFIG_DIM = built(Minimal, ("config_dim", 1))
BAD_EPOCH = built(Minimal, ("steps_per_epoch", 0))


# ------------------------------------------------------------------------------------ a user's CIFAR model
def cifar_cfg(root: Path, **overrides):
    cfg = OmegaConf.load(Path(tasks.__file__).parents[2] / "conf" / "task" / "cifar10.yaml")
    cfg.update({"data_root": str(root), "subset": 64, "test_subset": 20, **overrides})
    return cfg


def test_a_users_torch_module_as_the_cifar_model(cifar_root, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from smallnets import SmallNet

    for spec, channels in [("smallnets.SmallNet", 4), ({"_target_": "smallnets.SmallNet", "channels": 6}, 6)]:
        task = tasks.build(cifar_cfg(cifar_root, model=spec), 1, CPU)
        params = task.init_params([0])
        assert isinstance(task.model, SmallNet) and task.model.conv.out_channels == channels
        torch.manual_seed(0)
        assert all(torch.equal(p, q) for p, q in zip(params, SmallNet(channels).parameters()))  # seeded as built-ins
    for spec, message in [
        ("vgg", "task.model=vgg: allowed: resnet18, cnn_tanh, fcn_relu, or the dotted path of your torch.nn.Module"),
        ("smallnets.Nope", "task.model=smallnets.Nope: does not import (ModuleNotFoundError: No module named "
                           "'smallnets.Nope'; 'smallnets' is not a package)"),
        ({"_target_": "smallnets.SmallNet", "depth": 3}, "task.model._target_=smallnets.SmallNet: cannot be called "
                                                         "as a torch.nn.Module taking depth (got an unexpected"),
    ]:
        with pytest.raises(ConfigError) as err:
            tasks.build(cifar_cfg(cifar_root, model=spec), 1, CPU)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^task.width=8: applies to the built-in models only"):
        tasks.build(cifar_cfg(cifar_root, model="smallnets.SmallNet", width=8), 1, CPU)
    with pytest.raises(ConfigError, match=r"^task.model=builtins.dict: made a dict, not a torch.nn.Module$"):
        tasks.build(cifar_cfg(cifar_root, model="builtins.dict"), 1, CPU).init_params([0])

    monkeypatch.chdir(tmp_path)  # a run of it: samrepro's run folder, the model trained by SAM
    (run_dir,) = multirun(["task=cifar10", f"task.data_root={cifar_root}", "task.model=smallnets.SmallNet",
                           "task.subset=64", "task.test_subset=20", "task.batch_size=32", "steps=4", "log_every=2",
                           "lr=0.05", "device=cpu", "progress=false"])
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 4
    assert set(summary["final"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
