"""scripts/: every script's --help works without torch or the optional extras, bad arguments get a one-line
error, and a tiny real run of each prints its table."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
HEAVY = ("torch", "pytorch_optimizer", "hydra", "omegaconf", "matplotlib")
NUMBER = r"-?\d+\.\d+"  # a marginal cost within the noise can come out negative


def run_script(name: str, *args: str, cwd: Path, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs scripts/<name> with this venv's python in ``cwd``; each module in ``blocked`` fails to import."""
    env = dict(os.environ)
    if blocked:
        stubs = cwd / "blocked-modules"
        for module in blocked:
            (stubs / module).mkdir(parents=True, exist_ok=True)
            (stubs / module / "__init__.py").write_text(f"raise ImportError('{module} is blocked by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stubs), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("name, option", [("bench_step.py", "--models"), ("bench_sweep.py", "--quick"),
                                          ("bench_matrix_sensing.py", "--steps"), ("fault_drill.py", "--figure"),
                                          ("drills.py", "{race,stale}")])
def test_help_needs_neither_torch_nor_extras(name, option, tmp_path):
    result = run_script(name, "--help", cwd=tmp_path, blocked=HEAVY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}") and option in result.stdout


@pytest.mark.parametrize("name, args, message", [
    ("bench_step.py", ["--models", "vgg"],
     "argument --models: invalid choice: 'vgg' (choose from 'resnet18', 'cnn_tanh', 'fcn_relu')"),
    ("bench_step.py", ["--batch", "0"], "--batch 0: must be an integer > 0"),
    ("bench_matrix_sensing.py", ["--steps", "0"], "--steps 0: must be an integer > 0"),
    ("fault_drill.py", ["--kills", "0"], "--kills 0: must be an integer > 0"),
    ("drills.py", ["race", "--trials", "0"], "--trials 0: must be an integer > 0"),
    ("drills.py", ["stale", "--changes", "cz"], "--changes cz: must be letters of abcdefg"),
    ("fault_drill.py", ["--sweeps", "cifar10"],
     "--sweeps cifar10: must be distinct names among quadratic, matrix_sensing, sparse_coding"),
    ("bench_sweep.py", ["--fast"], "unrecognized arguments: --fast"),
])
def test_bad_arguments_get_one_error_line(name, args, message, tmp_path):
    result = run_script(name, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"{name}: error: {message}" and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["missing", "installed"])
def test_bench_step_prints_a_row_per_step_kind(peer, tmp_path):
    if peer == "installed" and importlib.util.find_spec("pytorch_optimizer") is None:
        pytest.skip("pytorch-optimizer (the bench extra) is not installed")
    blocked = ("pytorch_optimizer",) if peer == "missing" else ()
    result = run_script("bench_step.py", "--device", "cpu", "--models", "fcn_relu", "--batch", "4", "--steps", "1",
                        "--warmup", "1", "--repeats", "1", cwd=tmp_path, blocked=blocked)
    assert result.returncode == 0, result.stderr
    rows = [re.fullmatch(rf"fcn_relu +(.+?) +{NUMBER} +\d+( +{NUMBER})?", line)
            for line in result.stdout.splitlines() if line.startswith("fcn_relu")]
    expected = [("samrepro GD step", False), ("samrepro SAM", True)]  # SAM rows add SAM / (2 × SGD)
    if peer == "installed":
        expected += [("pytorch-optimizer torch.optim.SGD", False), ("pytorch-optimizer SAM", True)]
    assert [(row[1], row[2] is not None) for row in rows] == expected
    assert ("pytorch-optimizer is not installed: its rows are skipped" in result.stdout) == (peer == "missing")
    assert "batch 4; 1 timed steps × 1 after 1 warm-up; float32" in result.stdout


def test_bench_matrix_sensing_times_each_configuration(tmp_path):
    result = run_script("bench_matrix_sensing.py", "--steps", "3", "--d", "5", "--r", "1", "--device", "cpu",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("dai_fig2: 12 configurations, d=5, r=1, 3 steps")
    alone = re.findall(rf"alone: +(gd|sam|usam) rho=([\d.]+) +{NUMBER} s", out)
    assert sorted(alone) == sorted((o, r) for o in ("gd", "sam", "usam") for r in ("0.02", "0.05", "0.1", "0.5"))
    assert re.search(rf"batched, all 12: {NUMBER} s", out) and re.search(rf"ratio batched / slowest single run: "
                                                                         rf"{NUMBER}", out)
    assert list(tmp_path.iterdir()) == []  # its run folders lived in a temporary folder


@pytest.mark.slow
def test_bench_sweep_quick_times_the_three_paths(tmp_path):
    result = run_script("bench_sweep.py", "--quick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [re.sub(NUMBER, "T", line) for line in lines] == [
        "samrepro --help: T s; python -c 'import torch': T s (ratio T; goal < T)",
        "one run (task=quadratic, 1,000 steps, a row per step): T s",
        "  3 runs: T s (ratio to one run T; marginal cost of a run T ms)",
        "one run (task=quadratic, 1,000 steps, two rows: log_every=1000): T s",
        "  3 runs: T s (ratio to one run T; marginal cost of a run T ms)",
        "4-run sweep (20 steps), batched sweeper and launcher: T s",
        "4-run sweep (20 steps), Hydra's basic sweeper and launcher: T s (speed-up of batched Tx)",
        "4-run sweep (20 steps), batched sweeper, Hydra's basic launcher: T s (Tx)",
    ]


@pytest.mark.slow
def test_fault_drill_tiny_run_survives_its_kills_and_draws_only_when_asked(tmp_path):
    result = run_script("fault_drill.py", "--kills", "1", "--grid", "2", "--steps", "20", "--sweeps", "quadratic",
                        "--figure", "drill.png", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    survived = re.search(r"(\d+) kills survived in (\d+) trials \((\d+) run folders each\); mismatches: 0",
                         result.stdout)
    assert survived and int(survived[1]) >= 1 and int(survived[3]) == 3 * 2 * 2 + 4  # the sweep, dai_thm3
    assert "MISMATCH" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drill.pdf", "drill.png"]  # nothing else written here


@pytest.mark.slow
def test_race_drill_tiny_run_checks_every_folder_and_draws_only_when_asked(tmp_path):
    result = run_script("drills.py", "race", "--trials", "1", "--grid", "2", "--steps", "20", "--churn", "1",
                        "--figure", "race.png", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    folders = 3 * 2 * 2 + 1 + 4  # the sweep, the single run, dai_thm3's sweep
    assert re.search(rf"^trial 1: {folders} run folders checked, \d+ refusals, 0 mismatches", out, re.M)
    assert re.search(r"^lock churn: 4 processes for 1 s took one folder's lock [\d,]+ times, were refused by its "
                     r"live holder [\d,]+ times, met anything else 0 times$", out, re.M)
    assert re.search(rf"^race: 1 trials × 3 commands × 4 racers; {folders} run folders checked, \d+ refusals "
                     rf"\(exit code 2, one line\), every run computed once: yes \(summary.json writes {folders}, "
                     rf"racers' reports {folders}\); mismatches: 0$", out, re.M)
    assert "MISMATCH" not in out and out.rstrip().endswith("verdict: PASS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.pdf", "race.png"]  # nothing else written here


@pytest.mark.slow
def test_stale_drill_tiny_run_prints_its_matrix_and_draws_only_when_asked(tmp_path):
    result = run_script("drills.py", "stale", "--changes", "c", "--figure", "stale.png", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [re.split(r"  +", line) for line in result.stdout.splitlines() if line.startswith(("none", "(c"))]
    assert [row[1:] for row in rows] == [["SKIPPED", "SKIPPED", "PASS"], ["RECOMPUTED", "RECOMPUTED", "PASS"],
                                         ["REFUSED", "REFUSED", "PASS"]]
    assert "stale: 3 changes; 3 PASS, 0 FAIL; SERVED: 0" in result.stdout
    assert result.stdout.rstrip().endswith("verdict: PASS")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stale.pdf", "stale.png"]


@pytest.mark.slow
def test_fault_drill_tiny_run_survives_sigterm_in_a_matrix_sensing_sweep(tmp_path):
    """SIGTERM is an interruption (status interrupted): the resumed batch, smaller once its early divergences
    are done, gives every configuration the bytes of an uninterrupted run."""
    result = run_script("fault_drill.py", "--signal", "TERM", "--kills", "1", "--grid", "2", "--steps", "20",
                        "--sweeps", "matrix_sensing", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("signal: SIGTERM; reference: matrix_sensing")
    survived = re.search(r"(\d+) kills survived in (\d+) trials \((\d+) run folders each\); mismatches: 0",
                         result.stdout)
    assert survived and int(survived[1]) >= 1 and int(survived[3]) == 3 * 2 * 3 * 2 + 4  # the sweep, dai_thm3
    assert "MISMATCH" not in result.stdout
    assert not any(tmp_path.iterdir())
