"""`samrepro-collect` and `samrepro-plot` on a real sweep made with the CLI: GD, SAM and USAM on
½wᵀΛw, Λ = diag(4, 1), w0 = (1, 1), η ∈ {0.1, 0.3}, ρ ∈ {0.1, 0.5}, two seeds, 50 steps."""

import io
import math
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from samrepro import plot
from samrepro.collect import collect, run_folders

matplotlib.use("Agg")

SWEEP = ["-m", "task=quadratic", "opt=gd,sam,usam", "lr=0.1,0.3", "rho=0.1,0.5", "seed=0,1", "steps=50", "name=mine",
         "progress=false"]
# USAM multiplies w_i by 1 − ηλ_i(1 + ρλ_i) per step. Only η = 0.3, ρ = 0.5 leaves (2/η = 6.7 <) λ(1 + ρλ) = 12:
# w_0 = (−2.6)^t, so L ≥ ½·4·2.6^(2t) passes the loss ceiling 1e12 first at step t = 15. GD (|1 − 0.3·4| < 1)
# and SAM (η < 2/λ_max = 0.5: Dai et al. Thm 1) stay finite.
DIVERGED_AT = math.ceil(math.log(1e12 / 2) / (2 * math.log(2.6)))
ROWS = 22 * 51 + 2 * (DIVERGED_AT + 1)  # 22 runs log steps 0..50; the 2 diverged ones steps 0..15


def cli(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs an installed console script (``samrepro``, ``samrepro-collect``, ``samrepro-plot``)."""
    return subprocess.run([str(Path(sys.executable).with_name(name)), *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The folder holding runs/mine (the sweep, 24 runs)."""
    root = tmp_path_factory.mktemp("sweep")
    done = cli("samrepro", *SWEEP, cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_collect_names_columns_as_the_summary_does_and_counts_what_it_wrote(sweep):
    assert DIVERGED_AT == 15
    done = cli("samrepro-collect", "runs/mine", "-o", "mine.csv", cwd=sweep)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr == f"samrepro-collect: 24 runs (22 completed, 2 diverged), {ROWS:,} rows → mine.csv\n"
    df = pd.read_csv(sweep / "mine.csv")
    assert len(df) == ROWS and list(df.columns[:5]) == ["step", "loss", "w_norm", "w0", "w1"]
    assert {"task", "opt", "lr", "rho", "seed", "status", "steps_done", "diverged_at", "task.eigenvalues",
            "lr_schedule.name"} <= set(df.columns)
    assert not {"opt.name", "task.name"} & set(df.columns)
    assert set(df.task) == {"quadratic"} and set(df.opt) == {"gd", "sam", "usam"}
    diverged = df[df.status == "diverged"].drop_duplicates("run")
    assert diverged[["opt", "lr", "rho", "diverged_at"]].values.tolist() == [["usam", 0.3, 0.5, 15]] * 2
    final = cli("samrepro-collect", "runs/mine", "--final", cwd=sweep)  # CSV on stdout, the count on stderr
    assert final.stderr == "samrepro-collect: 24 runs (22 completed, 2 diverged), 24 rows → stdout\n"
    runs = pd.read_csv(io.StringIO(final.stdout))
    assert len(runs) == 24 and "step" not in runs and runs.steps_done.max() == 50
    assert "--final" in cli("samrepro-collect", "--help", cwd=sweep).stdout


def test_collect_refuses_a_folder_without_runs_in_one_line(tmp_path):
    done = cli("samrepro-collect", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "holds no finished run folder" in done.stderr


def assert_figure(stem: Path) -> None:
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(stem.parent.glob("*.tmp"))


def test_plot_from_the_sweep_folder_and_from_the_csv(sweep):
    done = cli("samrepro-plot", "runs/mine", "--hue", "opt", "--style", "rho", "--logy", "-o", "figs/by_opt",
               cwd=sweep)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("samrepro-plot: figs/by_opt.png, figs/by_opt.pdf: loss against step, "
                                  "12 lines, 2 diverged runs marked ×; lr also varies")
    assert_figure(sweep / "figs" / "by_opt")
    assert cli("samrepro-collect", "runs/mine", "-o", "mine.csv", cwd=sweep).returncode == 0
    done = cli("samrepro-plot", "mine.csv", "-x", "lr", "--hue", "opt", "--style", "rho", "--logy", "--logx",
               "-o", "by_lr.png", cwd=sweep)  # a suffix in -o is dropped: both files are written
    assert done.stdout == "samrepro-plot: by_lr.png, by_lr.pdf: loss against lr, 6 lines, 2 diverged runs marked ×\n"
    assert_figure(sweep / "by_lr")
    done = cli("samrepro-plot", "runs/mine", "-y", "w_norm", "--where", "opt=usam", "--where", "lr=0.3",
               "--seeds", "lines", cwd=sweep)  # default: beside the runs; colour: the keys left varying (ρ)
    assert done.stdout == ("samrepro-plot: runs/mine/plot_w_norm.png, runs/mine/plot_w_norm.pdf: w_norm against "
                           "step, 4 lines, 2 diverged runs marked ×\n")
    assert_figure(sweep / "runs" / "mine" / "plot_w_norm")


def test_a_diverged_run_ends_in_a_cross_at_its_last_logged_point(sweep):
    df = collect(run_folders(sweep / "runs" / "mine"))
    fig, note = plot.plot(df, "loss", hue="opt", style="rho", logy=True)
    crosses = [line for line in fig.axes[0].lines if line.get_marker() == "x" and len(line.get_xdata())]
    last = df[(df.status == "diverged") & (df.step == DIVERGED_AT)].loss
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [DIVERGED_AT] * 2
    assert list(crosses[0].get_ydata()) == list(last) and last.iloc[0] > 1e12  # the loss that passed the ceiling
    assert "diverged" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "12 lines, 2 diverged" in note and len(fig.axes[0].collections) == 12  # a min–max band over 2 seeds each
    fig, note = plot.plot(df, "loss", hue="opt", style="rho", seeds="lines")
    assert "24 lines, 2 diverged" in note and not fig.axes[0].collections


@pytest.mark.parametrize("args, message", [
    (["-y", "nope"], "-y nope: no such metric; allowed: loss, w_norm, w0, w1"),
    (["--hue", "colour"], "--hue colour: no such config key; allowed: task, task.eigenvalues"),
    (["--where", "opt=adam"], "--where opt=adam: no run has it; opt takes gd, sam, usam"),
])
def test_bad_columns_give_one_line_and_exit_2(sweep, args, message):
    done = cli("samrepro-plot", "runs/mine", *args, "-o", "bad", cwd=sweep)
    assert done.returncode == 2 and done.stdout == "" and not (sweep / "bad.png").exists()
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"samrepro-plot: error: {message}")
