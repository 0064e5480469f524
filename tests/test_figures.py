"""Theory formulas, the figure registry, settings read back from a figure's columns, and `samrepro-figs`
end to end on the cheapest figures: only the ids named, staleness by content (never by mtime)."""

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samrepro import theory
from samrepro.figures import columns, dai_fig1, dai_fig4, dai_thm1, dai_thm2, dai_thm3, dai_thm4, registry, stability
from samrepro.figures import make as make_module
from samrepro.figures.make import main as make_figs

REPO_RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_usam_threshold_of_eq7_solves_its_equation_and_tends_to_gd():
    lr, rho = 0.4, np.array([1e-9, 0.01, 0.1, 1.0])
    y2 = theory.usam_limit_y2(lr, rho)
    assert np.allclose((1 + rho * y2) * y2, 2 / lr)
    assert theory.usam_limit_y2(lr, 0.0) == pytest.approx(2 / lr)
    assert theory.usam_max_lr(2.0, 0.0) == theory.gd_max_lr(2.0) == 1.0


def test_eq3_bound_is_the_fixed_point_of_its_recursion():
    lr, rho, alpha, beta = 0.3, 0.2, 0.5, 2.0
    bias = theory.sam_loss_bound(lr, rho, alpha, beta, t=np.inf, loss0=1.0)
    q = alpha * lr * (2 - lr * beta)
    assert bias == pytest.approx((1 - q) * bias + lr**2 * beta**3 * rho**2 / 2)


def runs_frame(name: str, **task) -> pd.DataFrame:
    """Two runs' config columns as a CSV stores them: lists as strings, null as NaN."""
    cols = {f"task.{k}": [v, v] for k, v in task.items()}
    return pd.DataFrame({"task": [name, name], **cols, "seed": [0, 0], "lr": [0.1, 0.2]})


def test_settings_are_read_back_from_the_collected_columns():
    csv = runs_frame(name="matrix_sensing", eigen="[4.0, 0.5]", m=None).to_csv(index=False)
    df = pd.read_csv(io.StringIO(csv))
    assert columns.setting(df, "task.eigen") == [4.0, 0.5] and columns.setting(df, "task.m") is None
    assert columns.setting(df, "seed") == 0 and type(columns.setting(df, "seed")) is int
    with pytest.raises(ValueError, match="lr differs"):
        columns.setting(df, "lr")
    assert dict(columns.task_config(df)) == {"name": "matrix_sensing", "eigen": [4.0, 0.5], "m": None}


def test_sharpness_at_init_is_the_top_hessian_eigenvalue_of_the_runs_task():
    quadratic = runs_frame(_target_="samrepro.tasks.quadratic.build", name="quadratic",
                           eigenvalues="[4.0, 1.0, 0.25]", init="[1.0, 1.0, 1.0]")
    assert columns.sharpness_at_init(quadratic) == pytest.approx(4.0, rel=1e-12)
    # ½(xy)² at (5, 7): ∇²L = [[y², 2xy], [2xy, x²]] = [[49, 70], [70, 25]], λ_max = 37 + √(12² + 70²)
    neuron = runs_frame(_target_="samrepro.tasks.single_neuron.build", name="single_neuron",
                        loss="square", init="[5.0, 7.0]")
    assert columns.sharpness_at_init(neuron) == pytest.approx(37 + np.hypot(12, 70), rel=1e-12)


def test_settled_step_is_where_y2_stays_at_its_limit():
    y = np.sqrt([9.0, 5.0, 4.99, 5.2, 5.01, 5.0])  # within 1% of the final y² = 5 from step 4 on
    gd = pd.DataFrame({"step": range(6), "y": y, "lr": 0.4, "opt": "gd"})
    assert dai_fig4.settled_step(gd) == 4
    sam = gd.assign(**{"opt": "sam", "y": np.sqrt([9.0, 0.1, 0.04, 0.06, 0.01, 0.0])})  # 1%·2/η = 0.05
    assert dai_fig4.settled_step(sam) == 4


def test_dai_fig1_calibration_row_checks_the_measured_initial_sharpness():
    df = pd.DataFrame({"opt": "gd", "rho": 0.001, "step": [0, 5], "lambda_max": [37.0, 25.0],
                       "task.init_scale": 1.2, "task.sharpness_iters": 30})
    target = 0.95 * 2 / 0.05
    ok = dai_fig1.calibration_claim(df, 0.05, 1.005 * target)
    assert ok.passed and f"= {1.005 * target / 1.44:.4g}·α²" in ok.measured and "reads 37" in ok.measured
    assert not dai_fig1.calibration_claim(df, 0.05, 1.02 * target).passed


def test_registry_has_the_foundation_figures():
    assert {"dai_fig4", "dai_table1", "dai_thm1", "dai_thm2"} <= set(registry())


def test_the_cpu_figures_run_on_the_cpu_also_where_there_is_a_gpu():
    """Their experiments say device: cpu (a GPU machine's make figs gives the committed bytes; the small
    tensors run no faster on a GPU); the GPU figures' and the paper-size ones say auto."""
    from hydra import compose, initialize_config_module

    from samrepro.cli import CONF_MODULE

    figures = registry()
    experiments = resources.files(CONF_MODULE) / "experiment"
    with initialize_config_module(version_base="1.3", config_module=CONF_MODULE):
        device = {name: compose("config", overrides=[f"experiment={name}"]).device
                  for name in [*figures, "dai_fig1_paper", "dai_fig2_paper"]
                  if (experiments / f"{name}.yaml").is_file()}
    assert {name for name, d in device.items() if d == "cpu"} == {
        name for name in device if name in figures and not figures[name].gpu}
    assert {d for name, d in device.items() if d != "cpu"} == {"auto"}


def test_a_full_run_sweeps_draws_and_rewrites_claims_md(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(make_module, "registry", lambda: {"dai_fig4": registry()["dai_fig4"]})
    make_figs(["--results", "out"])  # no ids: every figure (here the one registered)
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "out" / "figures" / f"dai_fig4{suffix}").stat().st_size > 10_000
    df = pd.read_csv(tmp_path / "out" / "dai_fig4.csv")
    assert set(df["opt"]) == {"gd", "sam", "usam"} and df.step.max() == 2000
    claims = (tmp_path / "out" / "CLAIMS.md").read_text()
    rows = [line for line in claims.splitlines() if line.startswith("| dai_fig4 |")]
    assert len(rows) == 3 and all("**PASS**" in r for r in rows)
    assert "wrote out/CLAIMS.md" in capsys.readouterr().out


def file_states(folder: Path) -> dict[Path, tuple[bytes, int]]:
    """Each file below ``folder`` with its bytes and its mtime."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, dict, str]:
    """`samrepro-figs dai_fig4` (3 runs of 2,000 steps: the cheapest sweep) once, on a copy of the repository's
    results/ (mtimes kept) in a folder that is also the working directory (runs/ go there): the folder, its
    results' files before, and what it printed."""
    root = tmp_path_factory.mktemp("first_run")
    before = file_states(Path(shutil.copytree(REPO_RESULTS, root / "results")))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            make_figs(["dai_fig4", "--results", "results"])
    finally:
        os.chdir(cwd)
    return root, before, out.getvalue()


@pytest.fixture
def results(first_run, tmp_path, monkeypatch) -> Path:
    """The first run's folder (runs/ and results/, mtimes kept), copied, as the working directory."""
    monkeypatch.chdir(shutil.copytree(first_run[0], tmp_path / "copy"))
    return Path("results")


def test_figure_ids_touch_only_their_files_and_mtimes_alone_rewrite_nothing(first_run, results, capsys):
    _, before, out = first_run
    own = {Path("dai_fig4.csv"), Path("dai_fig4.manifest.json"), Path("figures/dai_fig4.png"),
           Path("figures/dai_fig4.pdf")}
    after = file_states(results)
    assert {p: s for p, s in after.items() if p not in own} == {p: s for p, s in before.items() if p not in own}
    verdicts = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(verdicts) == 3 and all(line.startswith("  [PASS] dai_fig4: ") for line in verdicts)
    assert "results/CLAIMS.md left as it is" in out
    manifest = json.loads((results / "dai_fig4.manifest.json").read_text())
    runs = manifest["inputs"]["runs"]
    assert len(runs) == 3 and all(d.startswith("runs/dai_fig4/") for d in runs)
    assert all([len(digest) for digest in runs[d].split(" ")] == [16, 16] for d in runs)  # config, metrics
    csv_sha256 = make_module.file_sha256(results / "dai_fig4.csv")
    assert manifest["csv_sha256"] == manifest["drawn_from"]["csv_sha256"] == csv_sha256
    assert (results / "dai_fig4.manifest.json").read_text() == json.dumps(manifest, indent=2, sort_keys=True) + "\n"

    rng = random.Random(0)  # a fresh clone: every file's mtime arbitrary
    for path in [*results.rglob("*"), *Path("runs").rglob("*")]:
        if path.is_file():
            mtime = rng.randrange(10**9, 2 * 10**18)
            os.utime(path, ns=(mtime, mtime))
    touched = file_states(results)
    make_figs(["dai_fig4", "--results", "results"])
    assert file_states(results) == touched
    assert "dai_fig4: 6003 rows" in (out := capsys.readouterr().out) and "nothing written" in out


def test_a_changed_csv_or_input_or_drawing_code_rewrites_only_what_depends_on_it(results):
    csv, manifest_path = results / "dai_fig4.csv", results / "dai_fig4.manifest.json"
    png = results / "figures" / "dai_fig4.png"
    made = csv.read_bytes()
    csv.write_bytes(made[: len(made) // 2])  # a truncated CSV: its sha256 no longer matches the manifest's
    drawn = file_states(png.parent)
    make_figs(["dai_fig4", "--results", "results"])
    assert csv.read_bytes() == made and file_states(png.parent) == drawn  # same CSV again: the figure stands

    manifest = json.loads(manifest_path.read_text())
    run = next(iter(manifest["inputs"]["runs"]))
    manifest["inputs"]["runs"][run] = "0" * 16 + manifest["inputs"]["runs"][run][16:]  # it had another config
    manifest_path.write_text(json.dumps(manifest))
    inode = csv.stat().st_ino
    make_figs(["dai_fig4", "--results", "results"])
    assert csv.stat().st_ino != inode and csv.read_bytes() == made and file_states(png.parent) == drawn

    manifest = json.loads(manifest_path.read_text())
    manifest["drawn_from"]["drawing_code"] = "0" * 64  # the figure was drawn by other drawing code
    manifest_path.write_text(json.dumps(manifest))
    csv_state, png_inode = (csv.read_bytes(), csv.stat().st_mtime_ns), png.stat().st_ino
    make_figs(["dai_fig4", "--results", "results"])
    assert png.stat().st_ino != png_inode and (csv.read_bytes(), csv.stat().st_mtime_ns) == csv_state
    assert json.loads(manifest_path.read_text())["drawn_from"]["drawing_code"] == make_module.code_hash(dai_fig4.draw)

    pdf = png.with_suffix(".pdf")  # a PDF left stale or cut short (a kill between the PNG and the PDF): both redrawn
    whole, png_inode = pdf.read_bytes(), png.stat().st_ino
    pdf.write_bytes(whole[:100])
    make_figs(["dai_fig4", "--results", "results"])
    assert pdf.read_bytes() == whole and png.stat().st_ino != png_inode


def test_runs_that_computed_other_last_bits_make_their_own_csv(results):
    """A CPU whose kernels round otherwise computes other last digits for the same configs (dai_fig4 under
    ATEN_CPU_CAPABILITY=default, and on the GPU machine's CPU): the runs' metrics checksums are inputs of the
    CSV, so the CSV is rebuilt from those runs, not served as committed from another machine."""
    run = Path("runs/dai_fig4/opt=sam")
    lines = (run / "metrics.csv").read_bytes().splitlines(keepends=True)
    step, loss, x, y = lines[-1].decode().strip().split(",")
    other_y = repr(float(y) * (1 + 2**-50))  # the last row as another machine could have computed it
    metrics = b"".join(lines[:-1]) + f"{step},{loss},{x},{other_y}\n".encode()
    (run / "metrics.csv").write_bytes(metrics)
    summary = json.loads((run / "summary.json").read_text())
    summary["metrics_sha256"] = hashlib.sha256(metrics).hexdigest()[:16]  # as that machine recorded it
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    make_figs(["dai_fig4", "--results", "results"])
    df = pd.read_csv(results / "dai_fig4.csv")
    assert df.loc[(df.opt == "sam") & (df.step == int(step)), "y"].item() == float(other_y) != float(y)
    manifest = json.loads((results / "dai_fig4.manifest.json").read_text())
    assert manifest["inputs"]["runs"][run.as_posix()] == f"{summary['fingerprint']} {summary['metrics_sha256']}"


def test_drawing_code_hash_covers_the_figure_modules_the_drawing_uses(tmp_path, monkeypatch):
    thm1, thm2 = make_module.code_hash(dai_thm1.draw), make_module.code_hash(dai_thm2.draw)
    edited = tmp_path / "stability.py"
    edited.write_text(Path(stability.__file__).read_text() + "# an edit\n")
    monkeypatch.setattr(stability, "__file__", str(edited))
    assert make_module.code_hash(dai_thm1.draw) != thm1  # dai_thm1 draws with stability.draw_phase_diagram
    assert make_module.code_hash(dai_thm2.draw) == thm2


def test_code_hashes_cover_the_samrepro_modules_a_figure_imports_as_modules(tmp_path, monkeypatch):
    """scripts/drills.py stale shows it (row f'): dai_thm3 draws its 2/η line with ``theory.gd_limit_y2``
    (``from samrepro import theory``: a module, not a function of samrepro.figures), so an edit of theory.py
    left the figure as it was; dai_thm4's computed CSV (its ``compute`` uses theory) was kept the same way."""
    draw, compute = make_module.code_hash(dai_thm3.draw), make_module.code_hash(dai_thm4.compute)
    edited = tmp_path / "theory.py"
    edited.write_text(Path(theory.__file__).read_text() + "# an edit\n")
    monkeypatch.setattr(theory, "__file__", str(edited))
    assert make_module.code_hash(dai_thm3.draw) != draw and make_module.code_hash(dai_thm4.compute) != compute


def test_listing_the_figures_does_not_import_torchvision():
    code = ("import sys, samrepro.figures, samrepro.figures.make; samrepro.figures.registry(); "
            "print(sorted({'torchvision', 'samrepro.tasks.cifar10'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("sig, group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_samrepro_figs_says_so_in_one_line_and_goes_on_from_there(tmp_path, sig, group):
    """Ctrl-C (the terminal's SIGINT reaches every process of the group) or a SIGTERM to samrepro-figs alone,
    while its two worker processes compute: exit code 130 and one line — no worker's traceback, no warning —,
    no lock or temp file left, the runs that were training say ``interrupted``; the same command then finishes
    them and draws the figures."""
    cmd = [str(Path(sys.executable).parent / "samrepro-figs"), "dai_fig4", "dai_thm3", "--results", "results", "-j2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob("runs/*/*/config.yaml")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until a run is written
    (os.killpg if group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.splitlines() == [
        "samrepro-figs: interrupted; the runs in progress say so in their folders, and the finished runs and figures "
        "are kept: the same command goes on from there"], err
    statuses = {json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/*/*/summary.json")}
    assert statuses <= {"interrupted", "completed"}, statuses  # none, where the signal came before training
    assert not [p for p in tmp_path.rglob("*") if p.name == ".samrepro.lock" or p.name.endswith(".tmp")]
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {json.loads(p.read_text())["status"] for p in tmp_path.glob("runs/*/*/summary.json")} == {"completed"}
    assert all((tmp_path / "results" / "figures" / f"{i}.png").exists() for i in ("dai_fig4", "dai_thm3"))
