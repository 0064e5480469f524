"""CIFAR-10 task, trainer checkpoints/resume/until, stages and the GPU figures, on a generated copy of
CIFAR-10 in its on-disk format (conftest.py) with narrow models, on CPU."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from samrepro import cli, runner, tasks
from samrepro.cli import multirun
from samrepro.collect import collect
from samrepro.config import ConfigError
from samrepro.figures import make, registry
from samrepro.optim import SAM
from samrepro.records import read_summary
from samrepro.runner import Run
from samrepro.tasks.cifar10 import CIFAR10Task, ResNet18, augment, group_norm, load_cifar10, make_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not slow down when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def task_cfg(root: Path, **overrides):
    cfg = OmegaConf.load(Path(cli.__file__).parent.parent / "conf" / "task" / "cifar10.yaml")
    cfg.data_root = str(root)
    cfg.update(overrides)
    return cfg


def run_cfg(root: Path, *overrides: str):
    with initialize_config_module(version_base="1.3", config_module=cli.CONF_MODULE):
        return compose(
            "config",
            overrides=["task=cifar10", f"task.data_root={root}", "device=cpu", "progress=false", *overrides],
        )


def in_float64(task):
    """``task`` with its model made in float64 (its images are cast by the caller)."""
    make = task.make_model
    task.make_model = lambda: make().double()
    return task


def sam_step(task, rule: str = "sam", rho: float = 0.05, float64: bool = False):
    """One SAM step of ``task`` from its seed-0 initialization on its first batch; returns the parameters
    (``float64``: the model and the images in float64, where two implementations of the same arithmetic
    agree to ~1e-12, so that a tight tolerance checks what they compute rather than how they round)."""
    params = (in_float64(task) if float64 else task).init_params([0])
    x, y = next(task.batches([0]))
    batch = (x.double() if float64 else x, y)
    SAM(params, rule, 0.1, rho).step(
        lambda p, pert: task.loss(p, batch, pert), lambda p, pert: task.loss_and_grad(p, batch, pert)
    )
    return [p.detach().cpu() for p in params]


# ------------------------------------------------------------------------------------------ data
def test_loader_reads_the_standard_layout(cifar_root):
    train_x, train_y, test_x, test_y = load_cifar10(cifar_root)
    assert train_x.shape == (300, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (100, 3, 32, 32) and len(test_y) == 100
    first = pickle.loads((cifar_root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert train_y[:60].tolist() == first["labels"]
    # the pickle's row is 1024 red, 1024 green, 1024 blue values of a row-major 32×32 image
    assert torch.equal(train_x[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))


def test_missing_data_is_one_clear_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        tasks.build(task_cfg(tmp_path), 1, CPU)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "task.download=true" in message and "SAMREPRO_DATA" in message


def test_bad_task_keys_are_rejected(cifar_root):
    for key, value in [
        ("model", "vgg"),
        ("norm", "layernorm"),
        ("loss", "hinge"),
        ("batch_size", 0),
        ("init", "no/such/file.pt"),
    ]:
        with pytest.raises(ConfigError, match=f"task.{key}="):
            tasks.build(task_cfg(cifar_root, **{key: value}), 1, CPU)


def test_standardization_and_confusion_set(cifar_root):
    task = tasks.build(task_cfg(cifar_root, standardize="pixel"), 1, CPU)
    assert task.train_x.mean(0).abs().max() < 1e-4  # all 300 images: per-pixel mean 0, std 1
    assert torch.allclose(task.train_x.std(0), torch.ones(3, 32, 32), atol=1e-4)
    clean = tasks.build(task_cfg(cifar_root, subset=100), 1, CPU)
    conf = tasks.build(task_cfg(cifar_root, subset=100, confusion_copies=2), 1, CPU)
    assert conf.train_x.shape == (200, 3, 32, 32) and len(conf.train_y) == 200
    full = load_cifar10(cifar_root)[0].float()  # per-channel statistics of the whole training set
    zero = (0 - full.mean((0, 2, 3), keepdim=True)) / full.std((0, 2, 3), keepdim=True)
    zeroed = torch.isclose(conf.train_x, zero).all(1)  # [200, 32, 32]: pixel positions set to 0
    black = torch.isclose(clean.train_x, zero).all(1).repeat(2, 1, 1)  # pixels already 0 in the image
    assert (zeroed.sum((1, 2)) >= 102).all() and ((zeroed & ~black).sum((1, 2)) <= 102).all()  # 0.1 · 1024
    kept = ~zeroed[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(conf.train_x[kept], clean.train_x.repeat(2, 1, 1, 1)[kept])
    assert (conf.train_y[:100] == clean.train_y).float().mean() < 0.3  # uniformly random labels


def test_augment_is_a_flip_and_a_padded_crop():
    x = torch.randn(6, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0))
    padded = [torch.nn.functional.pad(v, (4,) * 4) for v in (x, x.flip(3))]
    for i in range(6):
        windows = [p[i, :, dy : dy + 32, dx : dx + 32] for p in padded for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) for w in windows)


# ---------------------------------------------------------------------------------------- models
def test_resnet18_is_torchvisions_with_a_cifar_stem():
    ours = ResNet18()
    reference = torchvision.models.resnet18(num_classes=10, norm_layer=group_norm)
    reference.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    reference.maxpool = torch.nn.Identity()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ours(x), reference(x), atol=1e-5)
    groups = {m.num_channels: m.num_groups for m in ours.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {64: 2, 128: 4, 256: 8, 512: 16}  # 32 channels per group


def test_cohen_networks_have_the_reference_shapes():
    cnn = [tuple(p.shape) for p in make_model("cnn_tanh", 32, "groupnorm").parameters()]
    assert cnn == [(32, 3, 3, 3), (32,), (32, 32, 3, 3), (32,), (10, 2048), (10,)]
    fcn = [tuple(p.shape) for p in make_model("fcn_relu", 200, "groupnorm").parameters()]
    assert fcn == [(200, 3072), (200,), (200, 200), (200,), (10, 200), (10,)]


# ------------------------------------------------------------------------------------------ loss
def test_mse_loss_is_half_squared_error_to_one_hot(cifar_root):
    task = tasks.build(task_cfg(cifar_root, loss="mse", subset=10, model="fcn_relu", width=8), 1, CPU)
    out = torch.tensor([[1.0] + [0.0] * 9, [0.5] * 10])
    y = torch.tensor([0, 3])
    assert task.criterion(out, y).item() == pytest.approx((0.0 + 0.5 * (9 * 0.25 + 0.25)) / 2)


def test_loss_at_foreign_tensors_equals_loss_at_own_params(cifar_root):
    task = tasks.build(task_cfg(cifar_root, model="cnn_tanh", width=4, subset=32), 1, CPU)
    params = task.init_params([0])
    batch = next(task.batches([0]))
    own = task.loss_and_grad(params, batch)
    clones = [p.detach().clone().requires_grad_() for p in params]
    foreign = task.loss_and_grad(clones, batch)
    assert own[0].shape == (1,) and torch.equal(own[0], foreign[0])
    assert all(torch.allclose(a, b) for a, b in zip(own[1], foreign[1], strict=True))


def test_full_batch_gradient_accumulated_in_chunks_is_the_full_gradient(cifar_root):
    chunked = tasks.build(
        task_cfg(cifar_root, model="fcn_relu", width=16, batch_size=None, chunk_size=70), 1, CPU
    )
    whole = tasks.build(
        task_cfg(cifar_root, model="fcn_relu", width=16, batch_size=None, chunk_size=1000), 1, CPU
    )
    params = chunked.init_params([0])
    whole.init_params([0])
    batch = next(chunked.batches([0]))
    assert len(batch[1]) == 300
    loss_c, grad_c = chunked.loss_and_grad(params, batch)
    loss_w, grad_w = whole.loss_and_grad(params, batch)
    assert torch.allclose(loss_c, loss_w, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grad_c, grad_w, strict=True))


def test_batchnorm_statistics_come_from_the_unperturbed_pass_only(cifar_root):
    task = tasks.build(task_cfg(cifar_root, norm="batchnorm", width=4, subset=16, batch_size=8), 1, CPU)
    batch = next(task.batches([0]))
    task.init_params([0])
    task.loss(task.params, batch)  # one forward from the initial model
    after_forward = {k: v.clone() for k, v in task.model.named_buffers()}
    params = task.init_params([0])
    SAM(params, "sam", 0.1, 0.5).step(
        lambda p, pert: task.loss(p, batch, pert), lambda p, pert: task.loss_and_grad(p, batch, pert)
    )
    after_sam = dict(task.model.named_buffers())
    assert after_forward.keys() == after_sam.keys() and len(after_sam) == 3 * 20  # 20 BatchNorm layers
    assert all(torch.equal(after_forward[k], after_sam[k]) for k in after_sam)
    assert not torch.equal(after_sam["bn1.running_mean"], torch.zeros(4))


@pytest.mark.slow
def test_compiled_sam_step_with_batchnorm_matches_the_eager_one(cifar_root):
    """task.compile=true: one torch.compile'd function for SAM's two passes, the perturbed one with scratch
    BatchNorm statistics: the parameters and running statistics after a step are the eager model's. In
    float64, where the two agree to ~1e-13 (measured): in float32 the compiled BatchNorm's gradients were
    ~1e-2 from float64 here, the eager ones ~3e-6."""
    cfg = task_cfg(cifar_root, norm="batchnorm", width=4, subset=16, batch_size=16)
    eager_task = tasks.build(cfg, 1, CPU)
    eager = sam_step(eager_task, float64=True)
    cfg.compile = True
    compiled_task = tasks.build(cfg, 1, CPU)
    compiled = sam_step(compiled_task, float64=True)
    buffers = [dict(task.model.named_buffers()) for task in (eager_task, compiled_task)]
    for a, b in [*zip(eager, compiled, strict=True), *((buffers[0][k], buffers[1][k]) for k in buffers[0])]:
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_a_float64_model_keeps_its_loss_in_float64(cifar_root):
    """The float64 steps of the CUDA-vs-CPU and compiled-vs-eager checks are float64 throughout: the logits are
    cast up to float32 (bf16 autocast's), never down. Rounded to float32, they made an H200's step and the
    CPU's differ by up to 1.4e-10 (two devices' float32 cross-entropies), 100× those checks' tolerance."""
    task = in_float64(tasks.build(task_cfg(cifar_root, model="fcn_relu", width=8, subset=32, batch_size=32,
                                           bf16=False), 1, CPU))
    params = task.init_params([0])
    x, y = next(task.batches([0]))
    loss, grads = task.loss_and_grad(params, (x.double(), y))
    assert loss.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)
    torch.testing.assert_close(loss, F.cross_entropy(task.model(x.double()), y).reshape(1), rtol=1e-15, atol=0)


@pytest.mark.slow
def test_lambda_max_is_the_top_hessian_eigenvalue(cifar_root):
    task = tasks.build(
        task_cfg(cifar_root, model="cnn_tanh", width=1, subset=20, lambda_max_batch=20), 1, CPU
    )
    params = task.init_params([0])
    batch = (task.train_x, task.train_y)
    sizes = [p.numel() for p in params]

    def flat_loss(flat):
        parts = [t.view_as(p) for t, p in zip(flat.split(sizes), params, strict=True)]
        return task.loss(parts, batch, perturbed=True).sum()

    hessian = torch.autograd.functional.hessian(flat_loss, torch.cat([p.detach().flatten() for p in params]))
    eigenvalues = torch.linalg.eigvalsh(hessian.double())
    expected = eigenvalues[eigenvalues.abs().argmax()].item()  # power iteration: largest magnitude
    assert task.lambda_max(params, iters=200).item() == pytest.approx(expected, rel=1e-3)
    assert set(task.metrics(params)) == {"train_loss", "train_acc", "test_loss", "test_acc", "lambda_max"}


# ---------------------------------------------------------------------------- trainer extensions
def test_interrupted_run_resumes_to_the_rows_of_an_uninterrupted_one(cifar_root, tmp_path, monkeypatch):
    args = [
        "task.model=fcn_relu",
        "task.width=16",
        "task.batch_size=64",
        "task.augment=true",
        "opt=sam",
        "opt.momentum=0.9",
        "lr=0.05",
        "rho=0.1",
        "steps=8",
        "log_every=2",
        "checkpoint_every=3",
    ]
    cfg = run_cfg(cifar_root, *args)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    runner.run([Run.of(cfg, whole)])
    metrics, calls = CIFAR10Task.metrics, []

    def interrupt_at_step_4(self, params, step=0):
        calls.append(1)
        if len(calls) == 3:  # rows of steps 0 and 2 are written, the checkpoint of step 3 too
            raise KeyboardInterrupt
        return metrics(self, params, step)

    monkeypatch.setattr(CIFAR10Task, "metrics", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        runner.run([Run.of(cfg, parts)])
    assert read_summary(parts)["status"] == "interrupted"
    monkeypatch.setattr(CIFAR10Task, "metrics", metrics)
    summary = runner.run([Run.of(cfg, parts)])[0]
    assert summary["status"] == "completed" and summary["steps_done"] == 8
    assert (parts / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()
    assert [int(r.split(",")[0]) for r in (whole / "metrics.csv").read_text().split()[1:]] == [0, 2, 4, 6, 8]


def test_until_stops_a_run_and_epoch_units_count_epochs(cifar_root, tmp_path):
    cfg = run_cfg(
        cifar_root,
        "task.model=fcn_relu",
        "task.width=64",
        "task.batch_size=100",
        "opt=gd",
        "lr=0.05",
        "steps=200",
        "epoch_units=true",
        "+until.train_acc=1.0",
    )
    summary = runner.run([Run.of(cfg, tmp_path)])[0]
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert (
        summary["until_reached"] and rows.train_acc.iloc[-1] == 1.0 and (rows.train_acc.iloc[:-1] < 1).all()
    )
    assert summary["steps_done"] < 600 and (rows.step % 3 == 0).all()  # 300 images / 100 = 3 steps an epoch
    with open_dict(cfg):
        cfg.until = {"accuracy": 1.0}
    with pytest.raises(ConfigError, match="until="):
        runner.run([Run.of(cfg, tmp_path / "bad")])


# ---------------------------------------------------------------------------------------- stages
def run_cli(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["samrepro", *args])
    cli.main()


TINY = ["task.width=4", "task.subset=64", "task.test_subset=20", "device=cpu", "progress=false"]


def test_a_capped_phase_keeps_its_checkpoint_and_continues_in_the_same_folder(cifar_root, tmp_path, monkeypatch,
                                                                                capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    args = ["task=cifar10", "stage=fullbatch_init", f"task.data_root={cifar_root}", *TINY, "stage.save_to=fb.pt",
            "stage.phases.fullbatch.log_every=2", "stage.phases.fullbatch.checkpoint_every=2",
            "stage.phases.fullbatch.lr_schedule.name=constant"]
    with pytest.raises(SystemExit) as exit_:
        run_cli(monkeypatch, *args, "stage.phases.fullbatch.steps=4")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "stopped at its cap of steps=4" in err
    assert "continue it there by running the same command with stage.phases.fullbatch.steps=8" in err
    (phase,) = tmp_path.glob("runs/adhoc/*/fullbatch")
    capped = pd.read_csv(phase / "metrics.csv")
    assert list(capped.step) == [0, 2, 4] and (phase / "checkpoint.pt").exists()
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit):  # raised again, in the same folder: steps 4 → 8, from the checkpoint
        run_cli(monkeypatch, *args, "stage.phases.fullbatch.steps=8")
    (again,) = tmp_path.glob("runs/adhoc/*/fullbatch")
    rows = pd.read_csv(again / "metrics.csv")
    assert again == phase and list(rows.step) == [0, 2, 4, 6, 8] and rows.iloc[:3].equals(capped)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_continued_phase_keeps_its_lr_schedule_and_equals_an_uninterrupted_one(cifar_root, tmp_path, monkeypatch):
    """The multistep decays (×0.1 at 1/2 and 5/6 of lr_schedule.horizon = 8) do not move when the cap is raised
    from 4 to 8: the continued phase's rows are those of a phase run to 8 steps at once, to the last bit."""
    monkeypatch.chdir(tmp_path)
    args = ["task=cifar10", "stage=fullbatch_init", f"task.data_root={cifar_root}", *TINY, "stage.save_to=fb.pt",
            "stage.phases.fullbatch.log_every=1", "stage.phases.fullbatch.checkpoint_every=2",
            "stage.phases.fullbatch.lr_schedule.horizon=8"]
    for name, caps in (("continued", (4, 8)), ("fresh", (8,))):
        for cap in caps:
            GlobalHydra.instance().clear()
            with pytest.raises(SystemExit):  # stopped at its cap before 100% train accuracy
                run_cli(monkeypatch, *args, f"name={name}", f"stage.phases.fullbatch.steps={cap}")
    continued, fresh = (pd.read_csv(next(tmp_path.glob(f"runs/{n}/*/fullbatch/metrics.csv"))) for n in
                        ("continued", "fresh"))
    assert list(fresh.step) == list(range(9)) and continued.equals(fresh)


def test_a_bad_key_of_a_later_phase_is_refused_before_the_first_phase_runs(cifar_root, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_cli(monkeypatch, "task=cifar10", "stage=adversarial_init", f"task.data_root={cifar_root}", *TINY,
                "stage.phases.confusion.until.train_acc=0.0", "+stage.phases.clean.until.nope=1")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "until=['nope']: unknown metric; allowed: " in err
    assert list(tmp_path.iterdir()) == []


def test_a_finished_stage_rewrites_a_missing_or_moved_save_to_without_training_again(cifar_root, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["task=cifar10", "stage=fullbatch_init", f"task.data_root={cifar_root}", *TINY,
            "stage.phases.fullbatch.until.train_acc=0.0", "stage.phases.fullbatch.steps=2"]  # reached at step 0
    run_cli(monkeypatch, *args, "stage.save_to=fb.pt")
    (phase,) = tmp_path.glob("runs/adhoc/*/fullbatch")
    saved, trained = torch.load("fb.pt", weights_only=True), (phase / "metrics.csv").stat().st_mtime_ns
    Path("fb.pt").unlink()
    for save_to in ("fb.pt", "moved.pt"):
        GlobalHydra.instance().clear()
        run_cli(monkeypatch, *args, f"stage.save_to={save_to}")
        again = torch.load(save_to, weights_only=True)
        assert all(torch.equal(again["model"][k], v) for k, v in saved["model"].items())
        assert read_summary(phase.parent)["checkpoint"] == save_to
    assert list(tmp_path.glob("runs/adhoc/*/fullbatch")) == [phase]  # save_to is not part of the folder name
    assert (phase / "metrics.csv").stat().st_mtime_ns == trained


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, phases",
    [
        (
            "adversarial_init",
            [
                "stage.phases.confusion.task.confusion_copies=1",
                "stage.phases.confusion.task.batch_size=64",
                "stage.phases.clean.task.batch_size=64",
            ],
        ),
        (
            "fullbatch_init",
            ["stage.phases.fullbatch.log_every=5", "stage.phases.fullbatch.checkpoint_every=5"],
        ),
    ],
)
def test_stage_writes_a_checkpoint_at_full_train_accuracy(cifar_root, tmp_path, monkeypatch, stage, phases):
    monkeypatch.chdir(tmp_path)
    args = [
        "task=cifar10",
        f"stage={stage}",
        f"task.data_root={cifar_root}",
        *TINY,
        f"stage.save_to={stage}.pt",
        *phases,
    ]
    run_cli(monkeypatch, *args)
    saved = torch.load(tmp_path / f"{stage}.pt", weights_only=True)
    assert saved["metrics"]["train_acc"] == 1.0 and saved["recipe"]["stage"]["name"] == stage
    (run_dir,) = [p.parent for p in tmp_path.glob("runs/adhoc/*/summary.json")]
    phase_rows = {name: pd.read_csv(run_dir / name / "metrics.csv") for name in saved["phases"]}
    assert list(phase_rows) == list(
        OmegaConf.load(Path(cli.__file__).parent.parent / "conf" / "stage" / f"{stage}.yaml").phases
    )
    for name, rows in phase_rows.items():  # each phase stops at the first row reaching its threshold
        threshold = 0.9999 if name == "confusion" else 1.0
        assert rows.train_acc.iloc[-1] >= threshold and (rows.train_acc.iloc[:-1] < threshold).all()
    task = tasks.build(task_cfg(cifar_root, width=4, subset=64, test_subset=20, init=f"{stage}.pt"), 1, CPU)
    metrics = task.metrics(task.init_params([1]))
    assert metrics["train_acc"].item() == 1.0
    assert metrics["test_acc"].item() == pytest.approx(saved["metrics"]["test_acc"])
    before = (run_dir / "summary.json").read_text()
    run_cli(monkeypatch, *args)  # a finished stage is skipped
    assert (run_dir / "summary.json").read_text() == before and read_summary(run_dir)[
        "checkpoint"
    ] == f"{stage}.pt"


# --------------------------------------------------------------------------------------- figures
def test_gpu_figures_report_not_run_without_results():
    for fig_id in ("dai_fig3", "dai_fig5", "dai_fig8"):
        fig = registry()[fig_id]
        assert fig.gpu and all(c.passed is None for c in fig.claims(pd.DataFrame()))


def test_gpu_sweeps_without_data_end_with_one_clear_error_and_claims_are_still_written(tmp_path, monkeypatch,
                                                                                        capfd):
    """The two figures are made at once, in two worker processes: their lines come in either order."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAMREPRO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_info:
        make.main(["--gpu", "--claims", "dai_fig3", "dai_fig5", "--results", str(tmp_path / "results")])
    err = capfd.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(err) == 3  # each figure's one line, then the summary
    assert sorted(line.split("=")[0] for line in err[:2]) == ["samrepro: error: task.data_root",
                                                              "samrepro: error: task.init"]
    assert any(line.startswith(f"samrepro: error: task.data_root={tmp_path / 'nowhere'}: no CIFAR-10") for line in err)
    assert err[2] == "samrepro-figs: error: 2 figure(s) failed: dai_fig3, dai_fig5"
    claims = (tmp_path / "results" / "CLAIMS.md").read_text()  # the figure stage goes on and writes it
    assert "| dai_fig3 |" in claims and "its sweep failed" in claims


def grid_size(experiment: str) -> int:
    """The number of jobs of ``samrepro -m experiment=<experiment>`` (its sweeper's grid)."""
    with initialize_config_module(version_base="1.3", config_module=cli.CONF_MODULE):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    return math.prod(len(str(v).split(",")) for v in params.values())


@pytest.mark.slow
def test_gpu_figure_sweeps_run_and_draw_on_the_generated_data(cifar_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [f"task.data_root={cifar_root}", "device=cpu", "task.subset=60", "task.test_subset=30"]
    assert grid_size("dai_fig3") == 32 and grid_size("dai_fig5") == 12
    rhos = "rho=0.0,0.5,5.0"  # the experiments' grids, thinned to keep the test short
    dirs = multirun(["experiment=dai_fig3", *common, "steps=2", "log_every=1", "task.width=4", "task.chunk_size=1000",
                     rhos])
    assert len(dirs) == 12
    df = collect(dirs)
    done = df[df.status == "completed"]
    assert set(df["task.model"]) == {"cnn_tanh", "fcn_relu"} and (done.groupby("run").step.max() == 2).all()
    for _, gd in df[df.rho == 0].groupby("task.model"):  # SAM and USAM with ρ = 0 are both exactly GD
        sam, usam = (gd[gd["opt"] == opt].train_loss.tolist() for opt in ("sam", "usam"))
        assert sam == usam and len(sam) == 3
    start = df[df.step == 0].groupby("task.model").lambda_max
    assert (start.nunique() == 1).all() and df[df.step > 0].lambda_max.isna().all()  # measured at the init only
    fig3 = registry()["dai_fig3"]
    fig3.draw(df, tmp_path / "fig3")
    assert (tmp_path / "fig3.png").exists() and all(c.passed is not None for c in fig3.claims(df))

    torch.save(ResNet18(4).state_dict(), tmp_path / "init.pt")
    df = collect(multirun(["experiment=dai_fig5", *common, "task.width=4", "task.batch_size=30", "task.init=init.pt",
                           "steps=1", "rho=0.0,5.0", "task.lambda_max_batch=16"]))
    assert len(df) == 8 and set(df.step) == {0, 2}  # 1 epoch = 60 / 30 = 2 steps
    fig5 = registry()["dai_fig5"]
    fig5.draw(df, tmp_path / "fig5")
    assert all(c.passed is not None for c in fig5.claims(df) + registry()["dai_fig8"].claims(df))
    lam = df.lambda_max.dropna().iloc[0]
    (grid,) = [c for c in fig5.claims(df) if "straddles" in c.claim]
    assert f"ρ* = {(2 / 0.001 - lam) / lam**2:.3g}" in grid.measured
    assert np.isfinite(df.test_acc).all()


# ------------------------------------------------------------------------- malformed copies and checkpoints
def copy_of(cifar_root: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    return tmp_path / "cifar-10-batches-py"


def test_a_copy_repickled_with_bytes_keys_loads(cifar_root, tmp_path):
    folder = copy_of(cifar_root, tmp_path)
    path = folder / "data_batch_2"
    entry = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in entry.items()}))
    assert all(torch.equal(a, b) for a, b in zip(load_cifar10(tmp_path), load_cifar10(cifar_root), strict=True))


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "is not a readable pickle"),
    ("shape", "expected uint8 [N, 3072]"),
    ("keys", "has no 'data' and 'labels'"),
    ("delete", "missing data_batch_3"),
])
def test_a_malformed_copy_is_one_line_naming_the_file(cifar_root, tmp_path, damage, expected):
    path = copy_of(cifar_root, tmp_path) / "data_batch_3"
    entry = pickle.loads(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "shape":
        path.write_bytes(pickle.dumps({**entry, "data": entry["data"][:, :1024]}))
    elif damage == "keys":
        path.write_bytes(pickle.dumps({"images": entry["data"]}))
    else:
        path.unlink()
    with pytest.raises(ConfigError) as err:
        tasks.build(task_cfg(tmp_path), 1, CPU)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"task.data_root={tmp_path}: ") and expected in message
    assert damage == "delete" or str(path) in message


def test_checkpoints_load_in_lightning_format_and_mismatches_are_one_line(cifar_root, tmp_path):
    source = tasks.build(task_cfg(cifar_root, width=4, subset=20), 1, CPU)
    source.init_params([3])
    state = source.model.state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 7}, tmp_path / "lightning.ckpt")
    loaded = tasks.build(task_cfg(cifar_root, width=4, subset=20, init=str(tmp_path / "lightning.ckpt")), 1, CPU)
    loaded.init_params([0])
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())

    torch.save({"model": state, "recipe": {"task": {"model": "resnet18", "width": 4, "norm": "groupnorm"}}},
               tmp_path / "stage.pt")
    other = tasks.build(task_cfg(cifar_root, width=8, subset=20, init=str(tmp_path / "stage.pt")), 1, CPU)
    with pytest.raises(ConfigError) as err:
        other.init_params([0])
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"task.init={tmp_path / 'stage.pt'}: does not fit")
    assert "conv1.weight is [4, 3, 3, 3], this model's [8, 3, 3, 3]" in message and "set task.model=resnet18, " \
        "task.width=4, task.norm=groupnorm" in message
    cnn = tasks.build(task_cfg(cifar_root, model="cnn_tanh", subset=20, init=str(tmp_path / "lightning.ckpt")), 1, CPU)
    with pytest.raises(ConfigError, match="keys differ.*set task.model, task.width and task.norm"):
        cnn.init_params([0])
    (tmp_path / "broken.pt").write_bytes((tmp_path / "stage.pt").read_bytes()[:500])
    broken = tasks.build(task_cfg(cifar_root, width=4, subset=20, init=str(tmp_path / "broken.pt")), 1, CPU)
    with pytest.raises(ConfigError, match="broken.pt: not a readable checkpoint"):
        broken.init_params([0])


# ------------------------------------------------------------------------------ evaluation and schedule
def test_intermediate_training_metrics_use_a_fixed_subset_until_near_full_accuracy(cifar_root):
    task = tasks.build(task_cfg(cifar_root, model="fcn_relu", width=8, eval_subset=50), 1, CPU)
    params = task.init_params([0])
    subset = task.evaluate(params, task.train_x[:50], task.train_y[:50])
    full = task.evaluate(params, task.train_x, task.train_y)
    assert subset[1].item() < 0.99 and subset[1].item() != full[1].item()
    assert task.metrics(params)["train_acc"].item() == subset[1].item()
    task.eval_full_above = 0.0  # the subset is "near full accuracy": the whole training set is evaluated
    assert task.metrics(params)["train_loss"].item() == pytest.approx(full[0].item())


def test_multistep_schedule_is_liu_et_als_step_decay():
    from samrepro.train import lr_schedule

    factor = lr_schedule("multistep", 0.01, 300)
    assert [factor(t) for t in (0, 149, 150, 249, 250, 299)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_each_profile_reads_the_checkpoint_its_make_target_builds():
    """The Makefile builds checkpoints/<stage>.pt with stage=<stage>; each experiment's task.init is one."""
    stages = {}
    for name in ("adversarial_init", "adversarial_init_quick", "fullbatch_init", "fullbatch_init_quick"):
        stage = run_cfg("data", f"stage={name}").stage
        assert stage.save_to == f"checkpoints/{name}.pt" and stage.name == name
        stages[name] = stage
    for phase in [*stages["adversarial_init"].phases.values(), stages["fullbatch_init"].phases.fullbatch]:
        assert phase.lr_schedule.name == "multistep" and phase.until.train_acc >= 0.9999
    assert stages["adversarial_init_quick"].phases.confusion.task.confusion_copies == 1
    assert stages["adversarial_init_quick"].phases.confusion.lr == 0.1  # the rest inherited from the full stage
    for experiment, stage in [("dai_fig5", "adversarial_init"), ("dai_fig8", "fullbatch_init"),
                              ("dai_fig5_quick", "adversarial_init_quick"), ("dai_fig8_quick", "fullbatch_init_quick")]:
        cfg = run_cfg("data", f"experiment={experiment}")
        assert cfg.task.init == stages[stage].save_to and cfg.name == experiment and cfg.task.lambda_max_batch > 0
    quick_subset = stages["fullbatch_init_quick"].phases.fullbatch.task.subset
    assert run_cfg("data", "experiment=dai_fig8_quick").task.subset == quick_subset == 10000
