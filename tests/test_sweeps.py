"""Sweeps: resumable after SIGKILL, through Hydra's launchers, collected into one table."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from samrepro import runner, tasks
from samrepro.collect import collect_main, run_folders
from samrepro.records import read_summary
from samrepro.runner import Run, thread_share

SWEEP = ["-m", "hydra/launcher=basic", "task=single_neuron", "opt=gd,sam,usam", "lr=0.1,0.2", "steps=3000",
         "log_every=100", "progress=false", "name=kill"]  # one job at a time, so that a kill falls between jobs


def steps_logged(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_lost_or_duplicated_rows(tmp_path):
    sweep = tmp_path / "runs" / "kill"
    cmd = [sys.executable, "-m", "samrepro", *SWEEP]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while len(run_folders(sweep)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {d: (d / "summary.json").stat().st_mtime_ns for d in run_folders(sweep)}
    assert 2 <= len(finished) < 6, "the sweep was to be killed halfway"

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    runs = run_folders(sweep)
    assert len(runs) == 6
    for run_dir in runs:
        assert read_summary(run_dir)["status"] == "completed"
        assert steps_logged(run_dir) == list(range(0, 3001, 100))
    for run_dir, mtime in finished.items():  # finished runs were skipped, not redone
        assert (run_dir / "summary.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    cmd = [sys.executable, "-m", "samrepro", "-m", "hydra/launcher=submitit_local", "task=quadratic",
           "opt=gd,usam", "steps=5", "progress=false", "name=sub", "hydra.launcher.timeout_min=5",
           "hydra.launcher.cpus_per_task=1"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = run_folders(tmp_path / "runs" / "sub")
    assert [d.name for d in runs] == ["opt=gd,steps=5,task=quadratic", "opt=usam,steps=5,task=quadratic"]
    assert all(read_summary(d)["status"] == "completed" for d in runs)


def test_thread_share_splits_the_cores_between_parallel_jobs():
    cores = os.cpu_count()
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                               "n_jobs": 2})
    assert thread_share(None, joblib) == max(1, cores // 2)
    slurm = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
                                           "SlurmLauncher", "cpus_per_task": 8})
    assert thread_share(None, slurm) == 8
    assert thread_share(3, slurm) == 3


@pytest.mark.parametrize("task, threads, during", [("quadratic", None, 1), ("quadratic", 2, 2),
                                                   ("cifar10", None, None)])
def test_a_batch_on_the_cpu_runs_on_one_thread_unless_told(tmp_path, monkeypatch, task, threads, during):
    """threads unset: one torch thread while a batch of configurations runs on the CPU (tiny tensors); a task
    that cannot batch keeps torch's default; torch's own setting is given back afterwards."""
    seen = []
    if task == "cifar10":  # not built (no data here): its contract, as the runner sees it
        monkeypatch.setattr(tasks, "build", lambda cfg, n, device: type("T", (), {"config_dim": False})())
        monkeypatch.setattr(runner, "_run_group", lambda *a: [seen.append(torch.get_num_threads())])
    else:
        monkeypatch.setattr(runner, "train", lambda *a, **k: seen.append(torch.get_num_threads()) or [{}])
    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        cfg = compose("config", overrides=[f"task={task}", "steps=2", *([f"threads={threads}"] if threads else [])])
    before = torch.get_num_threads()
    runner.execute(cfg, [Run.of(cfg, tmp_path)], ["new"])
    assert seen == [during or before] and torch.get_num_threads() == before


def test_collect_turns_a_sweep_into_one_csv(tmp_path, monkeypatch):
    from samrepro.cli import multirun

    monkeypatch.chdir(tmp_path)
    multirun(["experiment=dai_thm2", "steps=10", "log_every=5"])
    collect_main([str(tmp_path / "runs" / "dai_thm2"), "--final", "-o", str(tmp_path / "t.csv")])
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 22 and {"opt", "rho", "status", "x", "y", "task.loss"} <= set(rows[0])
    assert {r["status"] for r in rows} == {"completed", "diverged"}
