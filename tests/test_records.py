"""Runs you can trust (DESIGN §3): a run folder knows its config, nothing else is deleted or mislabelled,
open files stay bounded, and a diverging configuration never disturbs the others of its batch."""

import csv
import io
import json
import resource
from array import array

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module

from samrepro import records, runner, tasks
from samrepro.config import ConfigError
from samrepro.records import RunRecord, claim, collect, fingerprint, run_folders
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
    assert first["fingerprint"] == fingerprint(Run.of(cfg, tmp_path).config)
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


def test_claim_says_what_a_folder_may_be_used_for(tmp_path):
    cfg = Run.of(compose("task=quadratic", "steps=4"), tmp_path).config
    assert claim(tmp_path / "absent", cfg) == "new"
    assert claim(tmp_path, cfg) == "new"  # empty
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ConfigError, match="without samrepro's config record"):
        claim(tmp_path, cfg)


def test_gd_runs_once_per_config_whatever_rho(tmp_path):
    cfg = compose("task=quadratic", "steps=10", "log_every=5")
    runs = [Run.of(cfg, tmp_path / f"gd{rho}", opt="gd", rho=rho) for rho in (0.0, 0.1, 0.2)]
    first, *copies = runner.run(runs)
    assert "same_as" not in first
    for run, summary in zip(runs[1:], copies):
        assert summary["same_as"] == str(runs[0].dir) and summary["rho"] == run.config["rho"]
        assert (run.dir / "metrics.csv").read_bytes() == (runs[0].dir / "metrics.csv").read_bytes()
        assert summary["fingerprint"] == fingerprint(run.config) != first["fingerprint"]
    assert runner.run(runs) == [{**s, "skipped": True} for s in (first, *copies)]  # all three finished now


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


def test_collect_reads_each_runs_own_config_and_skips_a_stage_folder(tmp_path):
    cfg = compose("task=single_neuron", "steps=4", "log_every=2")
    runner.run([Run.of(cfg, tmp_path / "stage" / "phase", opt="gd")])
    (tmp_path / "stage" / "summary.json").write_text(json.dumps({"status": "completed"}))  # a stage's own
    df = collect(run_folders(tmp_path))
    assert set(df.run) == {"phase"} and set(df["opt.name"]) == {"gd"} and len(df) == 3


@pytest.mark.parametrize("task", sorted(BATCHABLE))
def test_metrics_csv_holds_the_repr_of_each_logged_value(task, tmp_path, monkeypatch):
    """The bytes that samrepro wrote before rows were kept as arrays: csv.writer over ``str(step)`` and
    ``repr(float(v))`` of each metric tensor's ``tolist()``, for every row of every run of a batch (a
    diverging configuration, NaN metrics and values that carry autograd included)."""
    logged = {}
    build = tasks.build

    def spying_build(*args):
        task = build(*args)
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
        got = (tmp_path / str(c) / "metrics.csv").read_bytes()
        names, *steps = [row[0] for row in rows(tmp_path / str(c))]
        assert names == "step" and len(steps) == (1 if c == 1 else 5)
        want = io.StringIO()
        columns = next(iter(logged.values())).keys()
        csv.writer(want, lineterminator="\n").writerows(
            [["step", *columns], *([s, *(repr(float(logged[int(s)][k][c])) for k in columns)] for s in steps)])
        assert got == want.getvalue().encode()


def test_a_record_writes_its_rows_by_count_and_a_resumed_one_keeps_those_up_to_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "FLUSH_ROWS", 3)
    monkeypatch.setattr(records, "FLUSH_VALUES", 40)
    path = tmp_path / "metrics.csv"
    record = RunRecord(tmp_path, {"task": "t"}, ["a", "b"], {"lr": 0.1})
    block = array("d", [0.0, 0.0, 0.1, 1 / 3])  # two configurations' rows; this run's is the second
    for step in range(2):
        record.write_row(step, block, 2)
    assert not path.exists() and record.last == {"a": 0.1, "b": 1 / 3} and record.steps_logged == 1
    record.write_row(2, block, 2)  # the third waiting row: written
    assert path.read_text() == "step,a,b\n" + "".join(f"{s},0.1,0.3333333333333333\n" for s in range(3))
    wide = array("d", [float(i) for i in range(20)])
    record.write_row(3, wide, 4)
    assert len(rows(tmp_path)) == 1 + 3
    record.write_row(4, wide, 6)  # 2 rows · 20 values ≥ FLUSH_VALUES: written before FLUSH_ROWS
    assert rows(tmp_path)[4:] == [["3", "4.0", "5.0"], ["4", "6.0", "7.0"]]
    record.finish("completed", 4, 0.0)
    assert json.loads((tmp_path / "summary.json").read_text())["final"] == {"a": 6.0, "b": 7.0}

    resumed = RunRecord(tmp_path, {"task": "t"}, ["a", "b"], {"lr": 0.1}, resume_step=3)  # its checkpoint: step 3
    assert [r[0] for r in rows(tmp_path)] == ["step", "0", "1", "2", "3"] and not (tmp_path / "summary.json").exists()
    assert resumed.last == {"a": 4.0, "b": 5.0} and resumed.steps_logged == 3
    resumed.write_row(4, wide, 6)
    resumed.finish("completed", 4, 0.0)
    assert [r[0] for r in rows(tmp_path)] == ["step", "0", "1", "2", "3", "4"]
    assert rows(tmp_path)[-1] == ["4", "6.0", "7.0"]
