"""Runs you can trust: a run folder knows its config, nothing else is deleted or mislabelled,
open files stay bounded, and a diverging configuration never disturbs the others of its batch."""

import csv
import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_module

from samrepro import records, runner, tasks, train
from samrepro.cli import multirun
from samrepro.collect import collect, run_folders
from samrepro.config import ConfigError
from samrepro.records import HOST, HYDRA_DIR, LOCK, RunRecord, claim, fingerprint, write_atomic
from samrepro.runner import Run


def compose(*overrides):
    with initialize_config_module(version_base="1.3", config_module="samrepro.conf"):
        return hydra_compose("config", overrides=["progress=false", *overrides])


def rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.reader(f))


def test_a_finished_folder_is_reused_only_for_its_own_config(tmp_path):
    cfg = compose("task=quadratic", "steps=20", "log_every=5")
    first = runner.run([Run.of(cfg, tmp_path)])[0]
    run = Run.of(cfg, tmp_path)
    assert first["fingerprint"] == fingerprint(run.config, run.inputs) and first["inputs"] == run.inputs
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    again = runner.run([Run.of(cfg, tmp_path, threads=1, progress=True)])[0]  # no result key changed
    assert again.pop("skipped") is True and again == first
    other = compose("task=quadratic", "task.eigenvalues=[3.0,1.0]", "steps=20", "log_every=5")
    with pytest.raises(ConfigError) as err:
        runner.run([Run.of(other, tmp_path)])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "task.eigenvalues: [4.0, 1.0] → [3.0, 1.0]" in message and "left as it was" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_folder_with_foreign_files_is_refused_and_untouched(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files samrepro did not write \(thesis.tex\)"):
        runner.run([Run.of(compose("task=quadratic", "steps=2"), tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("damage", ["truncated metrics.csv", "edited metrics.csv", "corrupt summary.json", "rerun"])
def test_a_damaged_record_is_recomputed_never_served_and_rerun_recomputes(tmp_path, damage, caplog):
    caplog.set_level("INFO", logger="samrepro")
    cfg = compose("task=quadratic", "steps=20", "log_every=5")
    (first,) = runner.run([Run.of(cfg, tmp_path)])
    metrics = (tmp_path / "metrics.csv").read_bytes()
    if damage == "truncated metrics.csv":
        (tmp_path / "metrics.csv").write_bytes(metrics[:-30])
    elif damage == "edited metrics.csv":
        (tmp_path / "metrics.csv").write_bytes(metrics.replace(b"0.", b"1.", 1))
    elif damage == "corrupt summary.json":
        (tmp_path / "summary.json").write_text('{"status": "compl')
    (again,) = runner.run([Run.of(cfg, tmp_path, rerun=damage == "rerun")])
    assert "skipped" not in again and (tmp_path / "metrics.csv").read_bytes() == metrics
    assert {**again, "wall_seconds": 0} == {**first, "wall_seconds": 0}
    if damage != "corrupt summary.json":  # without a summary it is an unfinished run: resumed, said as such
        assert "recomputed 1 finished run(s) (" + ("rerun=true" if damage == "rerun" else "a damaged metrics.csv")\
            in caplog.text
    assert runner.run([Run.of(cfg, tmp_path)])[0]["skipped"] is True


@pytest.mark.parametrize("names", [["config.yaml"], ["metrics.csv"], [".hydra"], ["summary.json"], ["checkpoint.pt"]])
def test_samrepro_knows_its_folders_by_their_marker(tmp_path, names):
    cfg = compose("task=quadratic", "steps=4")
    (first,) = runner.run([Run.of(cfg, tmp_path / "ours")])
    config = (tmp_path / "ours" / "config.yaml").read_text()
    assert config.startswith(f"{records.MARKER}, code {first['inputs']['code']}, fingerprint {first['fingerprint']}\n")
    mine = tmp_path / "mine"  # a user's own files with samrepro's names
    for name in names:
        (mine / name).parent.mkdir(exist_ok=True)
        source = tmp_path / "ours" / name
        (mine / name).mkdir() if name == ".hydra" else (mine / name).write_text(source.read_text().replace(
            config.split("\n", 1)[0] + "\n", "") if source.exists() else "mine")  # samrepro's without its marker
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=f"mine: holds {', '.join(sorted(names))} without samrepro's run record"):
        runner.run([Run.of(cfg, mine)])
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before and len(list(mine.iterdir())) == len(
        names)


def test_a_value_with_slashes_or_dots_stays_inside_its_sweep_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "keep").mkdir(parents=True)  # a user's empty folder, next to the sweep's
    dirs = multirun(["+user.note=../../x,../keep", "steps=2", "name=esc", "progress=false"])
    assert [d.parent for d in dirs] == [Path("runs/esc")] * 2 and all((d / "summary.json").exists() for d in dirs)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["esc", "keep"]


def test_claim_says_what_a_folder_may_be_used_for(tmp_path):
    cfg = Run.of(compose("task=quadratic", "steps=4"), tmp_path).config
    assert claim(tmp_path / "absent", cfg) == "new"
    assert claim(tmp_path, cfg) == "new"  # empty
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ConfigError, match="without samrepro.s run record"):
        claim(tmp_path, cfg)


@pytest.mark.parametrize("schedule, state", [("lr_schedule.name=constant", "resume"),
                                             ("lr_schedule.horizon=4", "resume"),
                                             ("lr_schedule.name=multistep", None)])  # decays at 1/2, 5/6 of steps
def test_a_capped_run_continues_with_raised_steps_only_when_its_schedule_does_not_move(tmp_path, schedule, state):
    capped = Run.of(compose("task=quadratic", "steps=4", "lr_schedule.name=multistep", schedule), tmp_path).config
    records.write_atomic(tmp_path / "config.yaml", records.yaml_text(capped))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    records.write_atomic(tmp_path / "summary.json", {"status": "completed", "until_reached": False,
                                                     "fingerprint": fingerprint(capped)})
    raised = {**capped, "steps": 8}
    if state:
        assert claim(tmp_path, raised) == state
    else:
        with pytest.raises(ConfigError, match="holds the completed run of another config \\(steps: 4 → 8\\)"):
            claim(tmp_path, raised)


def test_gd_runs_once_per_config_whatever_rho(tmp_path, monkeypatch):
    cfg = compose("task=quadratic", "steps=10", "log_every=5")
    runs = [Run.of(cfg, tmp_path / f"gd{rho}", opt="gd", rho=rho) for rho in (0.0, 0.1, 0.2)]
    first, *copies = runner.run(runs)
    assert "same_as" not in first
    rows = (runs[0].dir / "metrics.csv").read_bytes()
    for run, summary in zip(runs[1:], copies):
        assert summary["same_as"] == str(runs[0].dir) and summary["rho"] == run.config["rho"]
        assert os.path.samefile(run.dir / "metrics.csv", runs[0].dir / "metrics.csv")  # shared, not copied
        assert summary["fingerprint"] == fingerprint(run.config, run.inputs) != first["fingerprint"]
    assert runner.run(runs) == [{**s, "skipped": True} for s in (first, *copies)]  # all three finished now
    with open(runs[2].dir / "metrics.csv", "ab") as f:  # an edit in place shows in every run that shares the file
        f.write(b"99,0,0,0\n")
    assert [s.get("skipped") for s in runner.run(runs)] == [None, None, None]
    link = os.link  # metrics.csv on another device: a copy
    monkeypatch.setattr(os, "link", lambda src, dst: link(src, dst) if Path(src).name != "metrics.csv" else (
        _ for _ in ()).throw(OSError(18, "Invalid cross-device link")))
    runner.run([Run.of(cfg, tmp_path / "other" / f"{rho}", opt="gd", rho=rho) for rho in (0.0, 0.1)])
    assert (tmp_path / "other" / "0.1" / "metrics.csv").read_bytes() == rows
    assert not os.path.samefile(tmp_path / "other" / "0.1" / "metrics.csv", tmp_path / "other" / "0.0" / "metrics.csv")
    for run in runs:
        assert (run.dir / "metrics.csv").read_bytes() == rows


def test_a_gd_copy_killed_between_its_metrics_and_its_summary_leaves_no_temp_file(tmp_path):
    """Found by the fault drill (a kill in the summary writes): the copy's metrics.csv was already the computed
    run's file when the copy was finished again, and renaming a new link of that file onto it is a no-op
    (POSIX rename of two links of one file), so the link's temp file stayed in the finished folder."""
    cfg = compose("task=quadratic", "steps=10", "log_every=5")
    runs = [Run.of(cfg, tmp_path / f"gd{rho}", opt="gd", rho=rho) for rho in (0.0, 0.1)]
    runner.run(runs)
    (runs[1].dir / "summary.json").unlink()  # killed after the copy's metrics.csv, before its summary
    summaries = runner.run(runs)
    assert [s.get("skipped") for s in summaries] == [True, None] and summaries[1]["same_as"] == str(runs[0].dir)
    assert os.path.samefile(runs[1].dir / "metrics.csv", runs[0].dir / "metrics.csv")
    assert sorted(p.name for p in runs[1].dir.iterdir()) == ["config.yaml", "metrics.csv", "summary.json"]


@pytest.mark.slow
def test_open_files_stay_bounded_in_a_2000_configuration_batch(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cfg = compose("task=quadratic", "steps=20", "log_every=2")
    runs = [Run.of(cfg, tmp_path / str(i), lr=0.01 + 0.0001 * i) for i in range(2000)]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        summaries = runner.run(runs)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(summaries) == 2000 and all(s["status"] == "completed" for s in summaries)
    assert len(run_folders(tmp_path)) == 2000 and len(rows(tmp_path / "1999")) == 1 + 11


BATCHABLE = {
    "quadratic": [],
    "single_neuron": [],
    "toy4d": [],
    "matrix_sensing": ["task.d=6", "task.r=1", "task.sharpness_every=2"],
    "sparse_coding": ["task.d=20", "task.n_train=30", "task.n_test=200"],
}


@pytest.mark.parametrize("task", sorted(BATCHABLE))
def test_a_diverging_configuration_leaves_its_batch_as_each_run_alone(task, tmp_path):
    cfg = compose(f"task={task}", *BATCHABLE[task], "steps=6", "log_every=2")
    diverging = dict(opt="usam", lr=1e300, rho=1e308)  # overflows at once in every task
    configs = [dict(opt="sam", lr=0.01, rho=0.05), diverging, dict(opt="usam", lr=0.02, rho=0.1)]
    batched = runner.run([Run.of(cfg, tmp_path / f"batch{i}", **c) for i, c in enumerate(configs)])
    assert [s["status"] for s in batched] == ["completed", "diverged", "completed"]
    for i, c in enumerate(configs):
        alone = runner.run([Run.of(cfg, tmp_path / f"alone{i}", **c)])[0]
        assert (alone["status"], alone.get("diverged_at")) == (batched[i]["status"], batched[i].get("diverged_at"))
        got, want = rows(tmp_path / f"batch{i}"), rows(tmp_path / f"alone{i}")
        assert len(got) == len(want)
        for g, w in zip(got[1:], want[1:]):
            assert [float(x) for x in g] == pytest.approx([float(x) for x in w], rel=1e-9, abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_the_trainers_loss_check_is_non_finite_or_above_the_ceiling_exactly(dtype):
    """``loss_check`` (clamp, then !=) against its definition, ~isfinite(loss) | (loss > ceiling), at the
    bounds of each dtype, ceilings it cannot represent and ceilings below its lowest value (the fallback)."""
    info = torch.finfo(dtype)
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, info.max, info.min, info.tiny, -info.tiny, 1.0, -1.0]
    for ceiling in [1e12, 1.0000001e12, 3.3e38, 3.5e38, 1e300, 65504.0, 65520.0, 0.1, 5e-324, info.max, info.min,
                    -1.0, -1e39, -math.inf, math.inf, math.nan]:
        at = torch.tensor([ceiling], dtype=torch.float64).to(dtype)
        near = [torch.nextafter(at, torch.tensor([v], dtype=dtype)) for v in (math.inf, -math.inf)] \
            if dtype in (torch.float32, torch.float64) else []
        spread = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64).mul(1e12)
        loss = torch.cat([torch.tensor(specials, dtype=dtype), at, *near, spread.to(dtype)])
        for losses in (loss, loss[5]):  # batched [C], and a scalar loss
            want = (~torch.isfinite(losses) | (losses > ceiling)).reshape(-1)
            assert torch.equal(train.loss_check(ceiling)(losses), want), (dtype, ceiling)


def test_collect_reads_each_runs_own_config_and_skips_a_stage_folder(tmp_path):
    cfg = compose("task=single_neuron", "steps=4", "log_every=2")
    runner.run([Run.of(cfg, tmp_path / "stage" / "phase", opt="gd")])
    (tmp_path / "stage" / "summary.json").write_text(json.dumps({"status": "completed"}))  # a stage's own
    df = collect(run_folders(tmp_path))
    assert set(df.run) == {"phase"} and set(df["opt"]) == {"gd"} and len(df) == 3


def test_a_summary_that_is_not_its_configs_is_never_served(tmp_path):
    cfg = compose("task=quadratic", "steps=4")
    runner.run([Run.of(cfg, tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "fingerprint": "0" * 16}))
    with pytest.raises(ConfigError, match="summary.json does not belong to its config.yaml"):
        runner.run([Run.of(cfg, tmp_path)])


def test_an_older_samrepros_folder_without_a_key_added_since_is_recomputed_not_refused(tmp_path):
    """A folder written by an older samrepro (other code) whose config lacks only keys added since is
    samrepro's own run of this config: recomputed in place. With the same code, it is another config."""
    cfg = compose("task=quadratic", "steps=4")
    (first,) = runner.run([Run.of(cfg, tmp_path)])

    def as_if_written_without_horizon(code: str) -> None:
        old = records.load_yaml(tmp_path / "config.yaml")
        del old["lr_schedule"]["horizon"]
        records.write_atomic(tmp_path / "config.yaml", records.yaml_text(old))
        inputs = {**first["inputs"], "code": code}
        summary = json.loads((tmp_path / "summary.json").read_text())
        (tmp_path / "summary.json").write_text(json.dumps({**summary, "inputs": inputs,
                                                           "fingerprint": fingerprint(old, inputs)}))

    as_if_written_without_horizon("an older samrepro")
    (again,) = runner.run([Run.of(cfg, tmp_path)])
    assert "skipped" not in again and again["fingerprint"] == first["fingerprint"]
    assert "horizon" in records.load_yaml(tmp_path / "config.yaml")["lr_schedule"]
    as_if_written_without_horizon(first["inputs"]["code"])
    with pytest.raises(ConfigError, match=r"of another config \(lr_schedule.horizon: — → None\)"):
        runner.run([Run.of(cfg, tmp_path)])


@pytest.mark.slow
def test_a_finished_folder_is_recomputed_when_its_code_or_files_change(tmp_path):
    """The fingerprint covers a run's inputs, not only its config: the code of its task (here a user's
    module), the content of a file a task key names, and the files of a data_root folder."""
    project = tmp_path / "project"
    shutil.copytree(Path(__file__).parent / "example_project", project)
    (tmp_path / "table.txt").write_text("1 2 3")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "batch_1").write_text("pixels")
    args = ["--config-dir", str(project / "conf"), "task=ring", "steps=5", "progress=false",
            "+task.table=table.txt", "+task.data_root=data", "device=cpu", "hydra.run.dir=run"]

    def samrepro():
        done = subprocess.run([sys.executable, "-m", "samrepro", *args], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(project)}, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    samrepro()
    inputs = json.loads((tmp_path / "run" / "summary.json").read_text())["inputs"]
    assert inputs["device"] == "cpu" and set(inputs["files"]) == {"task.table", "task.data_root"}
    assert "skipped 1 finished run" in samrepro()
    changes = [(project / "ringtask" / "task.py", "\n# an edit\n", "code"),
               (tmp_path / "table.txt", " 4", "files"),
               (tmp_path / "data" / "batch_2", "more pixels", "files")]
    for path, text, what in changes:
        with open(path, "a") as f:
            f.write(text)
        assert f"recomputed 1 finished run(s) ({what}): {tmp_path / 'run'}" in samrepro()
        assert "skipped 1 finished run" in samrepro()


def test_atomic_writes_use_a_temp_file_of_their_own_and_clean_up_after_killed_writers(tmp_path):
    target = tmp_path / "metrics.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"metrics.csv.{HOST}.{dead.stdout.strip()}.tmp"  # what a killed writer leaves
    killed.write_text("half a fi")
    other_host = tmp_path / "metrics.csv.elsewhere.1.tmp"  # a writer on another machine: not ours to judge
    other_host.write_text("x")
    seen = []
    write_atomic(target, lambda tmp: (seen.append(tmp.name), tmp.write_text("step\n")))
    assert seen == [f"metrics.csv.{HOST}.{os.getpid()}.tmp"] and target.read_text() == "step\n"
    assert not killed.exists() and other_host.exists()
    with pytest.raises(RuntimeError):  # a failed write leaves the old file and no temp file
        write_atomic(target, lambda tmp: (tmp.write_text("new"), (_ for _ in ()).throw(RuntimeError())))
    assert target.read_text() == "step\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.csv", "metrics.csv.elsewhere.1.tmp"]


def test_a_locked_run_folder_loses_the_temp_files_of_killed_writers_once(tmp_path):
    """A run folder's writes do not look for leftover temp files each (a directory listing per file): locking the
    folder removes those of dead processes of this host, in it and in its .hydra/, once."""
    run_dir = tmp_path / "run"
    (run_dir / HYDRA_DIR).mkdir(parents=True)
    killed = [run_dir / f"metrics.csv.{HOST}.{dead_pid()}.tmp",
              run_dir / HYDRA_DIR / f"hydra.yaml.{HOST}.{dead_pid()}.tmp"]
    kept = [run_dir / "summary.json.elsewhere.1.tmp",  # another host's; a live process's (pytest's parent)
            run_dir / f"config.yaml.{HOST}.{os.getppid()}.tmp"]
    for path in killed + kept:
        path.write_text("half a fi")
    with records.locked([run_dir]):
        assert not any(p.exists() for p in killed) and all(p.exists() for p in kept)
        write_atomic(run_dir / "metrics.csv", "step\n", clean=False)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([HYDRA_DIR, "metrics.csv", *(p.name for p in kept)])


def dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()


def test_one_process_at_a_time_writes_a_folder(tmp_path):
    cfg = compose("task=quadratic", "steps=4")
    busy, stale = tmp_path / "busy", tmp_path / "stale"
    for folder, pid in ((busy, os.getppid()), (stale, dead_pid())):  # a live process (pytest's parent), a dead one
        folder.mkdir()
        (folder / LOCK).write_text(f"{HOST} {pid} 2026-01-01T00:00:00\n")
    with pytest.raises(ConfigError, match=rf"busy: in use by process {os.getppid()} on {HOST} since 2026-01-01"):
        runner.run([Run.of(cfg, stale), Run.of(cfg, busy, lr=0.2)])
    assert sorted(p.name for p in busy.iterdir()) == [LOCK] and (busy / LOCK).read_text().split()[1] == str(
        os.getppid())  # the live holder's lock is left as it was
    assert not (stale / LOCK).exists() and not (stale / "summary.json").exists()  # nothing ran
    (summary,) = runner.run([Run.of(cfg, stale)])  # a dead process's lock is taken over
    assert summary["status"] == "completed" and not (stale / LOCK).exists()  # and released at the end


def test_a_finished_folder_left_locked_by_a_killed_process_is_skipped_and_unlocked(tmp_path):
    """Found by killing a sweep with kill -9 once some of its runs had finished: their folders kept the dead
    process's lock (and a writer's temp file) after the sweep was resumed, as it skips finished runs. A skipped
    folder's dead lock is now taken over and released, its result left as it was."""
    cfg = compose("task=quadratic", "steps=4")
    runner.run([Run.of(cfg, tmp_path / "run")])
    finished = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    (tmp_path / "run" / LOCK).write_text(f"{HOST} {dead_pid()} 2026-01-01T00:00:00\n")
    (tmp_path / "run" / f"summary.json.{HOST}.{dead_pid()}.tmp").write_text("half")
    (summary,) = runner.run([Run.of(cfg, tmp_path / "run")])
    left = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert summary["skipped"] and left == finished


def test_a_lock_released_while_it_is_read_is_taken_not_reported_missing(tmp_path, monkeypatch):
    """Found while writing the race drill (scripts/drills.py; its lock churn meets it dozens of times in 3 s): a
    lock whose holder releases it between this process's failed link and its read of the holder ended the run
    with "…/.samrepro.lock: No such file or directory" (exit code 2), though the folder was free. The lock is
    now tried again."""
    cfg = compose("task=quadratic", "steps=4")
    link, calls = os.link, []

    def released_meanwhile(src, dst):  # the first link meets the lock, which is gone when it is read
        calls.append(dst)
        if len(calls) == 1:
            raise FileExistsError(dst)
        link(src, dst)

    monkeypatch.setattr(records.os, "link", released_meanwhile)
    (summary,) = runner.run([Run.of(cfg, tmp_path / "run")])
    assert summary["status"] == "completed" and len(calls) == 2 and not (tmp_path / "run" / LOCK).exists()


def test_a_kill_while_the_lock_is_made_leaves_no_lock_without_its_holder(tmp_path, monkeypatch):
    """The fault drill found it: killed between creating the lock and writing its holder, samrepro left an
    empty lock that no later run could judge. The lock now appears whole (a hard link of a written file)."""
    cfg = compose("task=quadratic", "steps=4")

    def killed(*args):
        raise KeyboardInterrupt  # what a kill at that moment leaves behind

    monkeypatch.setattr(records.os, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run([Run.of(cfg, tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # no lock, no temp file: the folder it made is gone again
    monkeypatch.undo()
    (summary,) = runner.run([Run.of(cfg, tmp_path / "run")])
    assert summary["status"] == "completed" and not (tmp_path / "run" / LOCK).exists()


def test_jobs_that_share_a_folder_are_computed_once_or_refused(tmp_path):
    cfg = compose("task=quadratic", "steps=4")
    same = runner.run([Run.of(cfg, tmp_path / "a"), Run.of(cfg, tmp_path / "a", threads=2)])
    assert same[0] == same[1] and same[0]["status"] == "completed"
    with pytest.raises(ConfigError, match="two jobs of this sweep map to this folder with different configs "
                                          r"\(lr: 0.1 → 0.2\)"):
        runner.run([Run.of(cfg, tmp_path / "b"), Run.of(cfg, tmp_path / "b", lr=0.2)])
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("value, error", [({"steps": 0}, "steps=0: must be an integer > 0"),
                                          ({"lr_schedule": {"name": "bogus", "final_ratio": 1.0, "horizon": None}},
                                           "lr_schedule.name=bogus")])
def test_a_bad_value_of_one_run_of_a_batch_is_refused_before_any_run(tmp_path, value, error):
    """Steps and LR schedules may differ within a batch: each run's own are checked, not only the batch's first."""
    cfg = compose("task=quadratic", "steps=4")
    with pytest.raises(ConfigError, match=error):
        runner.run([Run.of(cfg, tmp_path / "bad", **value), *(Run.of(cfg, tmp_path / f"good{i}") for i in range(2))])
    assert not any(tmp_path.iterdir())


def digits(text):
    """The significant digits of a decimal float's text: '-0.00012340e-5' → '1234'."""
    mantissa = text.lstrip("-").lower().split("e")[0].replace(".", "")
    return mantissa.strip("0") or "0"


def same_float(text, value):
    """``text`` reads back as ``value``, bit for bit (NaN as NaN)."""
    return math.isnan(value) and text == "nan" or struct.pack("<d", float(text)) == struct.pack("<d", value)


@pytest.mark.parametrize("task", sorted(BATCHABLE))
def test_metrics_csv_holds_each_logged_value_exactly_in_its_shortest_decimal(task, tmp_path, monkeypatch):
    """Every row of every run of a batch (a diverging configuration, NaN metrics and values that carry autograd
    included): its step, and each metric as the shortest decimal that reads back as the logged double."""
    logged = {}
    build = tasks.build

    def spying_build(*args):
        task = build(*args)
        monkeypatch.setattr(type(task), "narrowable", False)  # position c of every block is configuration c
        metrics = task.metrics

        def spy(params, step=0):
            out = metrics(params, step)
            logged[step] = {k: v.tolist() for k, v in out.items()}
            return out

        task.metrics = spy
        return task

    monkeypatch.setattr(tasks, "build", spying_build)
    cfg = compose(f"task={task}", *BATCHABLE[task], "steps=7", "log_every=2")
    configs = [dict(opt="sam", lr=0.01, rho=0.05), dict(opt="usam", lr=1e300, rho=1e308), dict(opt="gd", lr=0.02)]
    runner.run([Run.of(cfg, tmp_path / str(i), **c) for i, c in enumerate(configs)])
    for c in range(len(configs)):
        header, *body = rows(tmp_path / str(c))
        assert header == ["step", *next(iter(logged.values()))] and len(body) == (1 if c == 1 else 5)
        assert [int(r[0]) for r in body] == ([0] if c == 1 else [0, 2, 4, 6, 7])
        for step, *fields in body:
            want = [float(logged[int(step)][k][c]) for k in header[1:]]
            assert all(same_float(f, v) and digits(f) == digits(repr(v)) for f, v in zip(fields, want, strict=True))


def test_csv_lines_write_every_double_as_its_shortest_decimal():
    """Random bit patterns (every exponent), the edges (±0, the subnormals, the largest double, the decades
    where notations switch) and the non-finite: each field reads back bit for bit, with repr's digits."""
    import numpy as np

    bits = np.random.default_rng(0).integers(0, 2**64, 60_000, dtype=np.uint64, endpoint=False)
    values = bits.view(np.float64)
    edges = [0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, 1e-5, 9.99e-5, 1e-4, 1e15,
             1e16, 123456789012345680.0, 0.1, 1 / 3, math.nan, math.inf, -math.inf]
    values = np.concatenate([values, edges, edges[::-1]]).reshape(-1, 4)
    steps = np.arange(len(values)) * 7
    lines = records.csv_lines(steps, values).decode().splitlines()
    assert len(lines) == len(values)
    for line, step, row in zip(lines, steps.tolist(), values.tolist()):
        first, *fields = line.split(",")
        assert first == str(step)
        assert all(same_float(f, v) and (not math.isfinite(v) and f == repr(v) or digits(f) == digits(repr(v)))
                   for f, v in zip(fields, row, strict=True)), line
    assert records.csv_lines(steps[:0], values[:0]) == b""


def test_a_record_writes_the_rows_of_its_column_and_a_resumed_one_keeps_those_up_to_its_checkpoint(tmp_path):
    """A run's rows are those of its column in the logs it follows, where the log says they are due (a
    narrowed batch logs fewer columns); written only when asked (flush, finish)."""
    import numpy as np

    path = tmp_path / "metrics.csv"
    record = RunRecord(tmp_path, {"task": "t"}, ["a", "b"], {"lr": 0.1}, {})
    (tmp_path / "q").mkdir()
    quoted = RunRecord(tmp_path / "q", {"task": "t"}, ["a,b", 'say "b"'], {"lr": 0.1}, {})  # a user task's names
    quoted.finish("completed", 0, 0.0)
    assert rows(tmp_path / "q") == [["step", "a,b", 'say "b"']]
    log = train.MetricLog(2, 2)
    record.follow(log, 1)
    block = np.array([[0.0, 0.0], [0.1, 1 / 3]])  # two configurations' rows; this run's is the second
    for step in range(3):
        log.append(step, block, np.array([True, step != 1]), np.arange(2))  # step 1 is not a row of this run
    assert not path.exists() and record.last == {"a": 0.1, "b": 1 / 3} and record.steps_logged == 2
    record.flush()
    assert path.read_text() == "step,a,b\n0,0.1,0.3333333333333333\n2,0.1,0.3333333333333333\n"
    log.append(3, block[1:] + 1, np.array([True]), np.array([1]))  # the batch narrowed to this run
    later = train.MetricLog(1, 2)  # the log that follows a full one
    record.follow(later, 0)
    later.append(4, np.array([[6.0, 7.0]]), np.array([True]), np.arange(1))
    record.finish("completed", 4, 0.0)
    assert rows(tmp_path)[3:] == [["3", "1.1", "1.3333333333333333"], ["4", "6.0", "7.0"]]
    assert json.loads((tmp_path / "summary.json").read_text())["final"] == {"a": 6.0, "b": 7.0}

    resumed = RunRecord(tmp_path, {"task": "t"}, ["a", "b"], {"lr": 0.1}, {}, resume_step=3)  # its checkpoint: step 3
    assert [r[0] for r in rows(tmp_path)] == ["step", "0", "2", "3"] and not (tmp_path / "summary.json").exists()
    assert resumed.last == {"a": 1.1, "b": 1.3333333333333333} and resumed.steps_logged == 3
    log = train.MetricLog(1, 2)
    resumed.follow(log, 0)
    log.append(4, np.array([[6.0, 7.0]]), np.array([True]), np.arange(1))
    resumed.finish("completed", 4, 0.0)
    assert [r[0] for r in rows(tmp_path)] == ["step", "0", "2", "3", "4"]


def test_a_full_log_is_written_by_every_running_configuration(tmp_path, monkeypatch):
    """The trainer writes its runs' rows once its log is full (rows or values), then logs on into a new one:
    metrics.csv grows during the run, and ends as it does when the log never fills."""
    cfg = compose("task=quadratic", "steps=9")
    runner.run([Run.of(cfg, tmp_path / "whole" / str(i), lr=lr) for i, lr in enumerate((0.1, 0.2))])
    sizes = []
    write = records.write_atomic

    def spy(path, text, clean=True):
        if (path := Path(path)).name == "metrics.csv":
            sizes.append((path.parent.name, text.count(b"\n")))
        write(path, text, clean)

    monkeypatch.setattr(records, "write_atomic", spy)
    monkeypatch.setattr(train.MetricLog, "ROWS", 4)
    runner.run([Run.of(cfg, tmp_path / "parts" / str(i), lr=lr) for i, lr in enumerate((0.1, 0.2))])
    assert sizes == [("0", 5), ("1", 5), ("0", 9), ("1", 9), ("0", 11), ("1", 11)]  # header + 4, + 4, + 2
    monkeypatch.setattr(train.MetricLog, "ROWS", 10_000)
    monkeypatch.setattr(train.MetricLog, "VALUES", 3 * 2 * 4)  # three logged steps of 2 configurations × 4 metrics
    runner.run([Run.of(cfg, tmp_path / "values" / str(i), lr=lr) for i, lr in enumerate((0.1, 0.2))])
    assert sizes[6:] == [("0", 4), ("1", 4), ("0", 7), ("1", 7), ("0", 10), ("1", 10), ("0", 11), ("1", 11)]
    for i in "01":
        whole = (tmp_path / "whole" / i / "metrics.csv").read_bytes()
        assert (tmp_path / "parts" / i / "metrics.csv").read_bytes() == whole
        assert (tmp_path / "values" / i / "metrics.csv").read_bytes() == whole
