"""The batched joblib and submitit launchers: the same run folders as the default launcher, chunked."""

import itertools
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra_plugins.samrepro_launcher import RunChunk, chunk
from omegaconf.errors import ConfigKeyError

from samrepro import runner
from samrepro.cli import multirun
from samrepro.config import ConfigError
from samrepro.records import LOCK, read_summary

SWEEP = ["task=quadratic", "opt=gd,sam,usam", "lr=0.1,0.3", "rho=0,0.1", "steps=20", "progress=false", "name=cmp",
         "device=cpu"]  # where a GPU is, its kernels' bits depend on the batch: the chunks would differ from the whole
LAUNCHER_RECORD = [("launcher",), ("runtime", "choices", "hydra/launcher"), ("overrides", "hydra")]


def hydra_yaml_without_launcher(path):
    """hydra.yaml but for the lines that name the launcher (its config, its choice, its override)."""
    record = yaml.safe_load(path.read_text())["hydra"]
    for *keys, last in LAUNCHER_RECORD:
        node = record
        for key in keys:
            node = node[key]
        del node[last]
    return record


def folder_contents(root):
    """Every run folder's files: metrics.csv and .hydra/*.yaml byte for byte, hydra.yaml without the
    launcher's record, summary.json without its wall time."""
    runs = {}
    for summary in sorted(root.glob("*/summary.json")):
        run_dir = summary.parent
        runs[run_dir.name] = {
            "metrics": (run_dir / "metrics.csv").read_bytes(),
            "config": (run_dir / ".hydra" / "config.yaml").read_bytes(),
            "overrides": (run_dir / ".hydra" / "overrides.yaml").read_bytes(),
            "hydra": hydra_yaml_without_launcher(run_dir / ".hydra" / "hydra.yaml"),
            "summary": {k: v for k, v in read_summary(run_dir).items() if k != "wall_seconds"},
        }
    return runs


@pytest.fixture
def reference(tmp_path, monkeypatch):
    """The sweep's folders under the default (in-process) batched launcher, moved to ref/."""
    monkeypatch.chdir(tmp_path)
    multirun(SWEEP)
    (tmp_path / "runs").rename(tmp_path / "ref")
    return folder_contents(tmp_path / "ref" / "cmp")


@pytest.mark.parametrize("launcher", [
    pytest.param(["hydra/launcher=local_parallel"], marks=pytest.mark.slow, id="joblib"),
    pytest.param(["hydra/launcher=batched_submitit_local"], marks=pytest.mark.slow, id="submitit-local"),
    pytest.param(["hydra/launcher=batched_submitit_local", "hydra.launcher.cluster=debug"], id="submitit-debug"),
])
def test_batched_launchers_write_the_default_launchers_run_folders(launcher, reference, tmp_path):
    dirs = multirun([*SWEEP, *launcher])
    assert [d.parent for d in dirs] == [Path("runs/cmp")] * 12  # in job order
    assert [d.name for d in dirs] == [f"lr={lr},opt={opt},rho={rho},steps=20,task=quadratic" for opt, lr, rho
                                      in itertools.product(["gd", "sam", "usam"], [0.1, 0.3], [0, 0.1])]
    contents = folder_contents(tmp_path / "runs" / "cmp")
    assert len(contents) == 12 and contents.keys() == reference.keys()
    for name, files in contents.items():
        assert files == reference[name], name
    assert {files["summary"]["status"] for files in contents.values()} == {"completed"}


@pytest.mark.slow
def test_a_diverging_run_in_a_chunk_is_recorded_and_the_sweep_completes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = multirun(["hydra/launcher=local_parallel", "task=quadratic", "opt=gd,usam", "lr=0.1,5", "rho=0.5",
                     "steps=50", "progress=false", "name=div"])
    summaries = [read_summary(d) for d in dirs]
    assert [(s["opt"], s["lr"], s["status"]) for s in summaries] == [
        ("gd", 0.1, "completed"), ("gd", 5, "diverged"), ("usam", 0.1, "completed"), ("usam", 5, "diverged")]
    assert [s["steps_done"] < 50 for s in summaries] == [False, True, False, True]


@pytest.mark.parametrize("launcher, override, message", [
    ("batched_submitit_local", "hydra.launcher.cluster=foo",
     "hydra.launcher.cluster=foo: unknown; allowed: slurm, local, debug"),
    ("batched_submitit_local", "hydra.launcher.timeout_min=soon", 'hydra.launcher: Parameter "timeout_min" expected'),
    ("batched_submitit_local", "hydra.launcher.chunks=zero", "hydra.launcher.chunks=zero: must be an integer > 0"),
    ("slurm", "hydra.launcher.max_runs_per_chunk=0", "hydra.launcher.max_runs_per_chunk=0: must be null or"),
    ("local_parallel", "hydra.launcher.n_jobs=abc", "hydra.launcher.n_jobs=abc: must be a nonzero integer"),
    ("local_parallel", "+hydra.launcher.bakcend=loky", "hydra.launcher.bakcend=loky: unknown; joblib.Parallel takes"),
])
def test_bad_launcher_settings_end_with_one_line_before_any_run(launcher, override, message, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        multirun([f"hydra/launcher={launcher}", override, "task=quadratic", "steps=5", "name=bad"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"samrepro: error: {message}") and err.count("\n") == 1
    assert not list((tmp_path / "runs" / "bad").glob("*/*"))


def test_a_bad_run_folder_in_any_chunk_stops_the_sweep_before_any_chunk_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "runs" / "clash" / "lr=0.3,opt=usam,steps=5,task=quadratic"  # the last job's folder
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("a user's own file")
    with pytest.raises(SystemExit) as exit_:
        multirun(["hydra/launcher=batched_submitit_local", "hydra.launcher.cluster=debug", "hydra.launcher.chunks=3",
                  "task=quadratic", "opt=gd,sam,usam", "lr=0.1,0.3", "steps=5", "progress=false", "name=clash"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "holds files samrepro did not write (notes.txt)" in err and err.count("\n") == 1
    assert not list((tmp_path / "runs" / "clash").glob("*/summary.json"))
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_timed_out_submitit_chunk_is_requeued_and_its_run_recomputed(tmp_path, monkeypatch):
    """submitit's Checkpointable protocol: a job signalled at its time limit (timeout_min=1: every signal is
    past submitit's guaranteed time) is requeued, not failed, and its run ends as an uninterrupted one."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        cfg = compose("config", overrides=["task=quadratic", "steps=20000", "log_every=100", "progress=false",
                                           "device=cpu"])
    reference = runner.run([runner.Run.of(cfg, tmp_path / "ref")])[0]
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(timeout_min=1)
    job = executor.submit(RunChunk(), [runner.Run.of(cfg, tmp_path / "run")], 1, str(tmp_path))
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / LOCK).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(int((tmp_path / "run" / LOCK).read_text().split()[1]), signal.SIGUSR2)  # Slurm's --signal, at the limit
    (summary,) = job.result()  # without RunChunk.checkpoint: submitit.core.utils.UncompletedJobError
    assert "Requeued job" in job.stdout()
    assert summary["status"] == "completed" and summary["final"] == reference["final"]
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == (tmp_path / "ref" / "metrics.csv").read_bytes()


def test_a_job_exit_that_omegaconf_turns_into_its_own_error_is_an_exit(tmp_path, monkeypatch):
    """submitit requeues a job at its time limit from a signal handler that ends with ``sys.exit``; OmegaConf,
    interrupted by that exit, raises its own error (seen on a GPU machine: a ConfigKeyError from the runner's
    ``OmegaConf.create``, and the job failed instead of being requeued). A chunk raises the exit itself; a
    ConfigError is still its message."""
    def exit_inside_omegaconf(runs, threads):
        try:
            raise SystemExit(-1)
        except SystemExit:
            raise ConfigKeyError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None

    monkeypatch.setattr(runner, "run", exit_inside_omegaconf)
    with pytest.raises(SystemExit) as exit_:
        RunChunk()([], 1, str(tmp_path))
    assert exit_.value.code == -1
    monkeypatch.setattr(runner, "run", lambda runs, threads: (_ for _ in ()).throw(ConfigError("lr: a number")))
    assert RunChunk()([], 1, str(tmp_path)) == "lr: a number"


def grid(steps=((10, ("gd", "sam", "usam")), (20, ("sam",))), rhos=(0.0, 0.1, 0.2)):
    """Runs of one batch group per log_every value (its opts × 2 lr × rhos, in job order with log_every
    innermost) and one gd_ascent run (a batch of its own)."""
    base = {"task": {"name": "quadratic"}, "seed": 0}
    configs = [{**base, "opt": {"name": opt, "momentum": 0.0}, "log_every": n, "lr": lr, "rho": rho}
               for lr, rho in itertools.product([0.1, 0.2], rhos) for n, opts in steps for opt in opts]
    configs.append({**base, "opt": {"name": "gd_ascent", "momentum": 0.0}, "log_every": 10, "lr": 0.1, "rho": 0.1})
    return [runner.Run(c, f"runs/{i}") for i, c in enumerate(configs)]


def computed(runs, members):
    """The configurations a chunk computes (the runs of one GD computation count once)."""
    return len({runner.gd_key(runs[i].config) or i for i in members})


def groups_by(key, runs, where):
    """key → the chunks that hold its runs."""
    found = {}
    for i, r in enumerate(runs):
        if key(r.config) is not None:
            found.setdefault(key(r.config), set()).add(where[i])
    return found


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 100])
def test_chunks_cover_every_run_once_keep_gd_and_batch_groups_together_and_balance(n):
    runs = grid()  # 10 computed configurations with log_every=10, 6 with log_every=20, 1 gd_ascent
    chunks = chunk(runs, n)
    assert chunks == chunk(runs, n)  # deterministic
    assert len(chunks) == min(n, 17)
    assert sorted(i for c in chunks for i in c) == list(range(len(runs)))
    assert all(c == sorted(c) for c in chunks)
    where = {i: k for k, c in enumerate(chunks) for i in c}
    assert all(len(ks) == 1 for ks in groups_by(runner.gd_key, runs, where).values())  # never split
    batches = groups_by(runner.batch_key, runs, where)
    assert len(batches) == 3 and sum(len(ks) - 1 for ks in batches.values()) <= len(chunks) - 1
    sizes = [computed(runs, c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_chunks_follow_batch_groups_where_the_sizes_allow():
    runs = grid(steps=((10, ("sam",)), (20, ("sam",)), (30, ("usam",))), rhos=(0.1, 0.2))[:-1]  # 3 × 4 runs
    chunks = chunk(runs, 3)
    assert [sorted({runs[i].config["log_every"] for i in c}) for c in chunks] == [[10], [20], [30]]
    assert chunks[0] == [0, 3, 6, 9]
