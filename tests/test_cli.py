"""The CLI and run-folder contracts (DESIGN §2, §3): schema, determinism, divergence, interruption, errors."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf

from samrepro.cli import check_overrides, execute
from samrepro.config import ConfigError, run_values
from samrepro.records import collect, run_folders
from samrepro.sweep import expand, run_jobs

TINY = ["task=single_neuron", "opt=sam", "lr=0.4", "rho=0.1", "steps=20", "log_every=5", "progress=false"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_one_run_writes_the_run_folder_contract(samrepro_cli, tmp_path):
    result = samrepro_cli(*TINY, "hydra.run.dir=a")
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "a" / "metrics.csv")
    assert rows[0] == ["step", "loss", "x", "y"]
    assert [int(r[0]) for r in rows[1:]] == [0, 5, 10, 15, 20]
    assert [float(v) for v in rows[1][1:]] == pytest.approx([12.6491106406735, 2.0, 40**0.5])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 20
    assert (summary["task"], summary["opt"], summary["lr"], summary["rho"], summary["seed"]) == (
        "single_neuron", "sam", 0.4, 0.1, 0)
    assert set(summary["final"]) == {"loss", "x", "y"} and summary["final"]["y"] == float(rows[-1][3])
    assert OmegaConf.load(tmp_path / "a" / ".hydra" / "config.yaml").task.name == "single_neuron"

    # same config and seed => byte-identical metrics.csv; a finished run folder is skipped on re-run
    assert samrepro_cli(*TINY, "hydra.run.dir=b").returncode == 0
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    again = samrepro_cli(*TINY, "hydra.run.dir=a")
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr


@pytest.mark.parametrize("args, message", [
    (["task=nope"], "task=nope: unknown; allowed: "),
    (["opt=adam"], "opt=adam: unknown; allowed: gd, gd_ascent, sam, usam"),
    (["rho=-1"], "rho=-1: must be a number >= 0"),
    (["lr=0"], "lr=0: must be a number > 0"),
    (["steps=0"], "steps=0: must be an integer > 0"),
    (["steps=ten"], "steps=ten: must be an integer > 0"),
    (["device=tpu"], "device=tpu: allowed: auto, cpu, cuda"),
    (["lr=0.1,-0.2"], "lr=-0.2: must be a number > 0"),
    (["lr=(0.1"], "malformed override"),
    (["nonsense=3"], "Could not override 'nonsense'"),
])
def test_bad_input_is_one_clear_line(args, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_overrides(args)


def test_task_keys_are_checked_when_the_task_is_built(samrepro_cli, tmp_path):
    result = samrepro_cli("task=single_neuron", "task.init=[1.0]", "hydra.run.dir=bad")
    assert result.returncode == 2
    assert result.stderr.strip() == "samrepro: error: task.init=[1.0]: must have 2 entries"
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(samrepro_cli, tmp_path):
    result = samrepro_cli("device=cuda", "steps=2", "hydra.run.dir=gpu")
    assert result.returncode == 2
    assert result.stderr.strip() == ("samrepro: error: device=cuda: no CUDA GPU is available here; "
                                     "use device=cpu or auto")
    assert not (tmp_path / "gpu").exists()


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        return hydra_compose("config", overrides=list(overrides))


def test_divergence_is_a_result_and_other_configurations_go_on(tmp_path):
    cfg = compose("task=quadratic", "task.eigenvalues=[2.0,0.5]", "steps=200", "log_every=10", "progress=false")
    runs = [{"opt": "usam", "lr": 0.9, "rho": 0.5, "seed": 0}, {"opt": "sam", "lr": 0.9, "rho": 0.5, "seed": 0}]
    dirs = [tmp_path / "usam", tmp_path / "sam"]
    usam, sam = execute(cfg, runs, dirs, progress=False)
    assert usam["status"] == "diverged" and 0 < usam["diverged_at"] < 200
    assert sam["status"] == "completed" and sam["steps_done"] == 200
    rows = read_rows(dirs[0] / "metrics.csv")[1:]
    assert rows and int(rows[-1][0]) <= usam["diverged_at"]
    assert all(abs(float(v)) < 1e12 for r in rows for v in r[1:])
    assert len(read_rows(dirs[1] / "metrics.csv")) == 1 + 21


def test_ctrl_c_writes_interrupted_and_keeps_rows(tmp_path, monkeypatch):
    from samrepro.tasks.quadratic import Quadratic

    calls = {"n": 0}
    original = Quadratic.loss_and_grad

    def interrupt_at_step_25(self, *args):
        calls["n"] += 1
        if calls["n"] > 2 * 25:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Quadratic, "loss_and_grad", interrupt_at_step_25)
    cfg = compose("task=quadratic", "steps=100", "log_every=10", "progress=false")
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, [run_values(cfg)], [tmp_path], progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_done"] == 20
    assert [r[0] for r in read_rows(tmp_path / "metrics.csv")[1:]] == ["0", "10", "20"]


def test_batched_sweep_writes_the_same_run_folders_as_the_cli(samrepro_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jobs = expand("dai_fig4", ["steps=30", "log_every=10"])
    assert [j[0] for j in jobs] == ["opt=gd", "opt=sam", "opt=usam"]
    dirs = run_jobs(jobs)
    assert [d.as_posix() for d in dirs] == [f"runs/dai_fig4/log_every=10,opt={o},steps=30"
                                            for o in ("gd", "sam", "usam")]
    cli = samrepro_cli("-m", "experiment=dai_fig4", "steps=30", "log_every=10", "hydra.sweep.dir=cli")
    assert cli.returncode == 0, cli.stderr
    for d in dirs:
        assert (d / "metrics.csv").read_bytes() == (tmp_path / "cli" / d.name / "metrics.csv").read_bytes()
    df = collect(run_folders(tmp_path / "runs"))
    assert len(df) == 3 * 4 and set(df["opt.name"]) == {"gd", "sam", "usam"}
    assert (df.status == "completed").all() and df["task.loss"].eq("logistic").all()
