"""Hydra works as its users know it: help, completion, --info, sweep syntax, interpolation, config
folders of one's own, callbacks, ``${hydra:runtime.output_dir}`` and an objective for optimizing sweepers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from samrepro.cli import multirun
from samrepro.records import read_summary

FAST = ["task=quadratic", "steps=3", "progress=false"]


def samrepro(cwd, *args, env=None):
    """The samrepro command in ``cwd`` (with ``env`` added to the environment)."""
    return subprocess.run([sys.executable, "-m", "samrepro", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def write_module(folder: Path, relpath: str, source: str) -> None:
    path = folder / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_help_is_samrepros_own_and_imports_no_torch(tmp_path):
    probe = ("import sys; sys.argv = ['samrepro', '--help']\nfrom samrepro.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("samrepro: SAM, USAM and GD") and "powered by Hydra" not in result.stdout
    assert "opt: gd, gd_ascent, sam, usam" in result.stdout and "samrepro -m task=quadratic" in result.stdout
    assert result.stdout.strip().endswith("False")  # torch was never imported


def test_config_errors_and_cfg_import_no_torch(tmp_path):
    probe = ("import sys\nfrom samrepro.cli import main\nfor argv in (['rho=-1'], ['task=nope'], ['--cfg', 'job']):\n"
             "    sys.argv = ['samrepro', *argv]\n    try:\n        main()\n    except SystemExit as e:\n"
             "        print('exit', e.code)\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "False", result.stdout + result.stderr
    assert result.stderr.splitlines() == ["samrepro: error: rho=-1: must be a finite number >= 0",
                                          "samrepro: error: task=nope: unknown; allowed: cifar10, matrix_sensing, "
                                          "quadratic, single_neuron, sparse_coding, toy4d"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("entry, argv, env", [
    ("samrepro.cli:main", ["samrepro", "-sc", "query=bash"], {"COMP_LINE": "samrepro task="}),
    ("samrepro.collect:collect_main", ["samrepro-collect", "runs/q", "-o", "q.csv"], {}),
    ("samrepro.plot:main", ["samrepro-plot", "runs/q", "-y", "loss"], {}),
])
def test_completion_collect_and_plot_import_no_torch(tmp_path, entry, argv, env):
    assert samrepro(tmp_path, "-m", *FAST, "lr=0.1,0.2", "name=q").returncode == 0
    module, function = entry.split(":")
    probe = (f"import sys; sys.argv = {argv!r}\nfrom {module} import {function}\n"
             f"try:\n    {function}()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, **env})
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr


def test_tab_completion_installs_and_completes_choices(tmp_path):
    install = samrepro(tmp_path, "-sc", "install=bash")
    assert install.returncode == 0 and "hydra_bash_completion" in install.stdout, install.stderr
    query = samrepro(tmp_path, "-sc", "query=bash", env={"COMP_LINE": "samrepro opt="})
    assert query.returncode == 0 and query.stdout.split() == ["opt=gd", "opt=gd_ascent", "opt=sam", "opt=usam"]


def test_info_lists_samrepros_plugins(tmp_path):
    info = samrepro(tmp_path, "--info", "plugins")
    assert info.returncode == 0 and "BatchedSweeper" in info.stdout and "BatchedLauncher" in info.stdout


def test_glob_and_range_sweeps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = multirun([*FAST, "opt=glob(*,exclude=gd_ascent)", "seed=range(2)", "name=g"])
    assert sorted(d.name for d in dirs) == sorted(f"opt={o},seed={s},steps=3,task=quadratic"
                                                  for o in ("gd", "sam", "usam") for s in (0, 1))


def test_interval_is_one_line_for_the_basic_semantics(tmp_path):
    result = samrepro(tmp_path, "-m", *FAST, "lr=interval(0.1,0.5)")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "lr=interval(0.1,0.5): samrepro's sweeper" in result.stderr and "optuna" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_sampling_sweeper_gets_interval_and_the_objective(tmp_path):
    """A sweeper of the user's (here: random search) samples interval() and receives each job's objective,
    a float, through any launcher: the batched one here."""
    write_module(tmp_path / "plugins", "hydra_plugins/random_search/__init__.py", """
        import json, random
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper

        class RandomSearch(Sweeper):
            def __init__(self, trials=3, **ignored):
                self.trials = trials

            def setup(self, *, hydra_context, task_function, config):
                self.launcher = Plugins.instance().instantiate_launcher(
                    hydra_context=hydra_context, task_function=task_function, config=config)

            def sweep(self, arguments):
                rng, jobs = random.Random(0), [[] for _ in range(self.trials)]
                for o in OverridesParser.create().parse_overrides(arguments):
                    for job in jobs:
                        if o.is_sweep_override():
                            interval = o.value()
                            job.append(f"{o.key_or_group}={rng.uniform(interval.start, interval.end):.4f}")
                        else:
                            job.append(o.input_line)
                returns = self.launcher.launch(jobs, initial_job_idx=0)
                with open("objectives.json", "w") as f:
                    json.dump([[r.overrides, r.return_value] for r in returns], f)
                return [returns]
        """)
    result = samrepro(tmp_path, "-m", *FAST, "lr=interval(0.1,0.5)", "objective=final.loss",
                      "hydra.sweeper._target_=hydra_plugins.random_search.RandomSearch",
                      env={"PYTHONPATH": str(tmp_path / "plugins")})
    assert result.returncode == 0, result.stderr
    trials = json.loads((tmp_path / "objectives.json").read_text())
    assert len(trials) == 3 and len({json.dumps(o) for o, _ in trials}) == 3
    for overrides, value in trials:
        lr = next(o for o in overrides if o.startswith("lr="))
        summary = read_summary(next((tmp_path / "runs" / "adhoc").glob(f"*{lr}*")))
        assert isinstance(value, float) and value == summary["final"]["loss"]


def test_steps_to_time_runs_each_lr_for_its_own_steps_in_one_batch(tmp_path, monkeypatch):
    """``'steps=${steps_to_time:0.5,${lr}}'`` (quoted: Hydra's override grammar takes no nested ``${}``): each η
    runs round(0.5/η) steps (time ηt = 0.5), the three in one batch."""
    from samrepro import runner

    batches = []
    execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda base, runs, *a: batches.append(len(runs)) or execute(base, runs, *a))
    monkeypatch.chdir(tmp_path)
    dirs = multirun([*FAST, "lr=0.1,0.05,0.02", "steps='${steps_to_time:0.5,${lr}}'", "name=t"])
    assert [read_summary(d)["steps_done"] for d in dirs] == [5, 10, 25] and batches == [3]


@pytest.mark.slow
def test_interpolating_a_users_own_key(tmp_path):
    result = samrepro(tmp_path, *FAST, "+base_lr=0.2", "lr=${base_lr}", "rho=${base_lr}", "hydra.run.dir=out")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["lr"] == config["rho"] == config["base_lr"] == 0.2


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_an_experiment_in_the_users_own_config_folder(tmp_path, how):
    write_module(tmp_path, "myconf/experiment/mine.yaml", """
        # @package _global_
        defaults:
          - override /task: single_neuron
        lr: 0.3
        name: mine
        """)
    where = ["--config-dir", "myconf"] if how == "--config-dir" else [f"hydra.searchpath=[file://{tmp_path}/myconf]"]
    result = samrepro(tmp_path, *where, "experiment=mine", "steps=3", "progress=false")
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "mine").iterdir()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"]["name"] == "single_neuron" and config["lr"] == 0.3


CALLBACK = """
    import json
    from hydra.experimental.callback import Callback

    class Record(Callback):
        def on_job_start(self, config, **kwargs):
            self.write("start", config)

        def on_job_end(self, config, job_return, **kwargs):
            self.write("end", config)

        def write(self, event, config):
            with open("events.jsonl", "a") as f:
                f.write(json.dumps([event, config.hydra.runtime.output_dir, config.lr]) + "\\n")
    """


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["batched", "local_parallel", "basic"])
def test_callbacks_fire_once_per_run_and_output_dir_resolves(tmp_path, launcher):
    write_module(tmp_path / "user", "usercb.py", CALLBACK)
    result = samrepro(tmp_path, "-m", *FAST, "lr=0.1,0.2", "seed=0,1", f"hydra/launcher={launcher}",
                      "+hydra.callbacks.record._target_=usercb.Record", "+user.where=${hydra:runtime.output_dir}",
                      env={"PYTHONPATH": str(tmp_path / "user")})
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    runs = sorted(str(p.parent) for p in (tmp_path / "runs" / "adhoc").glob("*/summary.json"))
    assert len(runs) == 4
    for event in ("start", "end"):
        assert sorted(d for e, d, _ in events if e == event) == runs  # once per run, with its own folder
    for run_dir in runs:
        assert yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["user"]["where"] == run_dir


def test_a_sweep_ends_with_its_summary(tmp_path):
    result = samrepro(tmp_path, "-m", "task=quadratic", "opt=gd,usam", "lr=0.1,0.9", "rho=0.5", "steps=100",
                      "progress=false")
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    report = next(line for line in lines if " runs: " in line)
    assert "4 runs: 2 completed, 2 diverged in" in report and "runs/adhoc" in report
    assert any(line.startswith("next: samrepro-collect runs/adhoc") for line in lines)
    again = samrepro(tmp_path, "-m", "task=quadratic", "opt=gd,usam", "lr=0.1,0.9", "rho=0.5", "steps=100",
                     "progress=false")
    assert "4 runs: 4 skipped in" in again.stdout + again.stderr


@pytest.mark.parametrize("item", ["lr=0.001", "lr=1", "seed=-3", "rho=+0.5", "lr=1e-3", "lr=1E+3", "lr=.5", "lr=5.",
                                  "rho=-.5e3", "lr=1.e5", "lr=00.5", "lr=01", "lr=1_000", "lr=inf", "seed=abc",
                                  "lr=0.1,0.2", "opt=sam", "+lr=0.1", "lr='0.1'"])
def test_the_sweepers_quick_reading_of_a_number_is_hydras(item):
    """``lr``, ``rho`` and ``seed`` set to a plain number are read without Hydra's parser: the same Override
    (value and its type) as the parser's, and anything else goes to the parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from samrepro.hydra_plugin import _parse

    theirs, ours = OverridesParser.create().parse_override(item), _parse(item)
    assert ours == theirs and type(ours.value()) is type(theirs.value()), (ours, theirs)


@pytest.mark.parametrize("lines", [[], ["lr=0.1", "opt=sam"], ["x: y", "'q'", "task.init=[1,2]", "é=1",
                                                              "a long override with spaces " * 5]])
def test_overrides_yaml_is_the_yaml_of_the_list(lines):
    from samrepro.hydra_plugin import overrides_yaml

    assert overrides_yaml(lines) == yaml.dump(lines, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                              allow_unicode=True)
