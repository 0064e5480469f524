"""Theory formulas, the figure registry, settings read back from a figure's columns, and `samrepro-figs`
end to end on the cheapest figure."""

import io

import numpy as np
import pandas as pd
import pytest

from samrepro import theory
from samrepro.figures import columns, dai_fig1, dai_fig4, registry
from samrepro.figures.make import main as make_figs


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
    quadratic = runs_frame(name="quadratic", eigenvalues="[4.0, 1.0, 0.25]", init="[1.0, 1.0, 1.0]")
    assert columns.sharpness_at_init(quadratic) == pytest.approx(4.0, rel=1e-12)
    # ½(xy)² at (5, 7): ∇²L = [[y², 2xy], [2xy, x²]] = [[49, 70], [70, 25]], λ_max = 37 + √(12² + 70²)
    neuron = runs_frame(name="single_neuron", loss="square", init="[5.0, 7.0]")
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


def test_make_figs_runs_a_sweep_draws_it_and_reports_claims(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_figs(["dai_fig4", "--results", "out"])
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "out" / "figures" / f"dai_fig4{suffix}").stat().st_size > 10_000
    df = pd.read_csv(tmp_path / "out" / "dai_fig4.csv")
    assert set(df["opt"]) == {"gd", "sam", "usam"} and df.step.max() == 2000
    claims = (tmp_path / "out" / "CLAIMS.md").read_text()
    rows = [line for line in claims.splitlines() if line.startswith("| dai_fig4 |")]
    assert len(rows) == 3 and all("**PASS**" in r for r in rows)
