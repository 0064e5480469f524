"""The CLI and run-folder contracts: schema, determinism, divergence, interruption, errors."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from samrepro import runner
from samrepro.cli import multirun
from samrepro.collect import collect, run_folders
from samrepro.config import ConfigError
from samrepro.runner import Run

TINY = ["task=single_neuron", "opt=sam", "lr=0.4", "rho=0.1", "steps=20", "log_every=5", "progress=false"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
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
    assert OmegaConf.load(tmp_path / "a" / "config.yaml").task.init == [2.0, 40**0.5]  # samrepro's own, resolved

    # same config and seed => byte-identical metrics.csv; a finished run folder is skipped on re-run
    assert samrepro_cli(*TINY, "hydra.run.dir=b").returncode == 0
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    again = samrepro_cli(*TINY, "hydra.run.dir=a")
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr


def test_runs_built_in_python_are_checked_against_the_schema(tmp_path):
    """runner.run checks a hand-built config as the CLI does: types and names from config.RunSchema."""
    cfg = OmegaConf.to_container(compose("task=quadratic", "steps=5"), resolve=True)
    cases = [({"lr_schedule": {"name": "cosine", "final_ratio": 1.0}}, "lr_schedule.name=cosine: allowed: constant"),
             ({"steps": "many"}, "steps=many: must be an integer > 0"),
             ({"opt": {**cfg["opt"], "nesterov": True}}, "opt.nesterov: unknown key in opt"),
             ({"until": {"loss": "low"}}, "until.loss=low: must map metric names to numbers")]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            runner.run([Run({**cfg, **change}, tmp_path / "run")])
    without_seed = {k: v for k, v in cfg.items() if k != "seed"}
    with pytest.raises(ConfigError, match="seed: missing"):
        runner.run([Run(without_seed, tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_task_keys_are_checked_when_the_task_is_built(samrepro_cli, tmp_path):
    result = samrepro_cli("task=single_neuron", "task.init=[1.0]", "hydra.run.dir=bad")
    assert result.returncode == 2
    assert result.stderr.strip() == "samrepro: error: task.init=[1.0]: must have 2 entries"
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_folder_holding_other_files_is_left_as_it_was(samrepro_cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for bad, says in ((["task=single_neuron", "task.init=[1.0]"], "task.init=[1.0]: must have 2 entries"),
                      (["steps=3"], "holds files samrepro did not write (notes.txt)")):
        result = samrepro_cli(*bad, "hydra.run.dir=.")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert says in result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
        assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
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
    dirs = [tmp_path / "usam", tmp_path / "sam"]
    usam, sam = runner.run([Run.of(cfg, dirs[0], opt="usam", lr=0.9, rho=0.5),
                            Run.of(cfg, dirs[1], opt="sam", lr=0.9, rho=0.5)])
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
        runner.run([Run.of(cfg, tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_done"] == 20
    assert [r[0] for r in read_rows(tmp_path / "metrics.csv")[1:]] == ["0", "10", "20"]


@pytest.mark.slow
def test_the_batched_launcher_writes_what_hydras_own_launcher_writes(samrepro_cli, tmp_path, monkeypatch):
    """`samrepro -m` (batched launcher, in process) and Hydra's basic launcher (one job at a time, in a
    subprocess): the same folders, byte-identical metrics, the same .hydra/ records (but for the launcher)."""
    monkeypatch.chdir(tmp_path)
    dirs = multirun(["experiment=dai_fig4", "steps=30", "log_every=10"])
    assert [d.as_posix() for d in dirs] == [f"runs/dai_fig4/log_every=10,opt={o},steps=30"
                                            for o in ("gd", "sam", "usam")]
    basic = samrepro_cli("-m", "experiment=dai_fig4", "steps=30", "log_every=10", "hydra/launcher=basic",
                         "hydra.sweep.dir=basic")
    assert basic.returncode == 0, basic.stderr
    for d in dirs:
        other = tmp_path / "basic" / d.name
        assert (d / "metrics.csv").read_bytes() == (other / "metrics.csv").read_bytes()
        for name in ("config.yaml", "overrides.yaml"):
            assert OmegaConf.load(d / ".hydra" / name) == OmegaConf.load(other / ".hydra" / name)
        ours, theirs = (OmegaConf.load(x / ".hydra" / "hydra.yaml").hydra for x in (d, other))
        for h in (ours, theirs):
            del h.launcher, h.runtime.choices["hydra/launcher"], h.runtime.output_dir, h.sweep.dir
            h.overrides.hydra = [o for o in h.overrides.hydra if not o.startswith(("hydra/launcher", "hydra.sweep"))]
        assert ours == theirs
    df = collect(run_folders(tmp_path / "runs"))
    assert len(df) == 3 * 4 and set(df["opt"]) == {"gd", "sam", "usam"}
    assert (df.status == "completed").all() and df["task.loss"].eq("logistic").all()


def test_each_jobs_config_is_what_hydra_composes_for_it_interpolations_included(tmp_path, monkeypatch):
    """The launcher composes once per config-group choice and applies lr/rho/seed before resolving: a key
    interpolating ${lr} and the opt group's own YAML must come out as Hydra's compose of each job."""
    monkeypatch.chdir(tmp_path)
    dirs = multirun(["task=quadratic", "opt=gd,sam,usam", "lr=0.1,0.2", "rho=0.05,0.1", "seed=0,1", "steps=2",
                     "+user.lr_copy=${lr}", "loss_ceiling=${rho}", "name=compose"])
    assert len(dirs) == 24
    for d in dirs[::5]:
        job = OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "overrides.yaml"))
        hydra_own = OmegaConf.to_container(compose(*job), resolve=True)
        assert OmegaConf.to_container(OmegaConf.load(d / "config.yaml")) == hydra_own
        assert hydra_own["user"]["lr_copy"] == hydra_own["lr"] and hydra_own["loss_ceiling"] == hydra_own["rho"]


@pytest.mark.slow
def test_sigterm_is_an_interruption_that_keeps_the_rows(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "samrepro", "task=quadratic", "steps=100000000", "log_every=1000",
                             "progress=false", "hydra.run.dir=long"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "long" / "config.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "samrepro: interrupted" in err
    summary = json.loads((tmp_path / "long" / "summary.json").read_text())
    rows = read_rows(tmp_path / "long" / "metrics.csv")[1:]
    assert summary["status"] == "interrupted" and summary["steps_done"] == int(rows[-1][0]) >= 1000


def test_a_ctrl_c_that_hydra_turns_into_another_error_is_an_interruption(monkeypatch):
    """Ctrl-C while Hydra composes: its config source closes a file it never opened (an UnboundLocalError
    raised while handling the KeyboardInterrupt), and OmegaConf can wrap one into Hydra's
    ConfigCompositionException (seen when samrepro-figs was interrupted); both are the interruption, not an
    error of the config."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException

    from samrepro.cli import CONF_MODULE, one_line_errors

    real_open = Path.open

    def interrupted_open(self, *args, **kwargs):
        if self.suffix == ".yaml":
            raise KeyboardInterrupt
        return real_open(self, *args, **kwargs)

    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        monkeypatch.setattr(Path, "open", interrupted_open)
        with pytest.raises(KeyboardInterrupt), one_line_errors():
            compose("config", overrides=["experiment=dai_thm3"])
    with pytest.raises(KeyboardInterrupt), one_line_errors():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ConfigCompositionException("wrapped") from AttributeError("'NoneType' has no attribute")


def test_a_ctrl_c_while_the_sweeper_composes_its_jobs_is_an_interruption(tmp_path, monkeypatch, capsys):
    """Seen in CI (an interrupted samrepro-figs): Ctrl-C inside OmegaConf's ``flag_override`` while the batched
    sweeper composes its jobs; the context manager's clean-up then fails (ConfigKeyError), Hydra wraps that in
    a ConfigCompositionException and the sweeper turns it into a ConfigError: the interruption, not one line
    of a config error. The same inside the sweep's later checks (``validate``), which go through ``fail`` too."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigKeyError

    def interrupted_compose(self, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ConfigCompositionException() from ConfigKeyError("'NoneType' object has no attribute "
                                                                    "'_invalidate_flags_cache'")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", interrupted_compose)
    with pytest.raises(KeyboardInterrupt):
        multirun(["experiment=dai_thm3"])
    assert capsys.readouterr().err == "" and not (tmp_path / "runs").exists()
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exit_info:  # a config error outside an interruption is still one line
        multirun(["experiment=dai_thm3", "steps=-1"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("samrepro: error: steps=-1")


def test_numpy_is_imported_before_torch_so_that_an_interruption_during_it_is_not_lost():
    """torch's C extension imports numpy itself and discards any error of that import: a Ctrl-C or SIGTERM in
    those ≈ 40 ms was lost (in the SIGTERM fault drill, a sweep then ran on with numpy half-imported and ended
    with an AttributeError traceback, exit code 1; 9 of 30 alarms aimed at that window did so). The runner,
    which brings torch into the CLI, imports numpy first, where an interruption propagates."""
    order = subprocess.run([sys.executable, "-c", """
import sys
seen = []
class Watch:
    def find_spec(self, name, path, target=None):
        seen.append(name)
sys.meta_path.insert(0, Watch())
from samrepro import runner
print(seen.index("numpy") < seen.index("torch._C"))
"""], capture_output=True, text=True, timeout=120)
    assert order.stdout.strip() == "True", order.stderr
