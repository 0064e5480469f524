"""The Wen et al. figures' plumbing and claims: a Figure that supplies its own DataFrame, and verdicts on
synthetic data built from the theory."""

import numpy as np
import pandas as pd

from samrepro import theory
from samrepro.figures import Figure, ahn_fig1, make, wen_fig1, wen_table1, wen_thm21
from samrepro.figures.make import make_csv


def test_a_figure_with_compute_skips_the_sweep_and_saves_its_csv(tmp_path, monkeypatch):
    """Its inputs (:func:`make.compute_inputs`): up to date while they are the same, computed again when one
    changes."""
    calls = []
    df = pd.DataFrame({"a": [1, 2]})
    fig = Figure("no_such_experiment", "t", lambda d, s: None, lambda d: [], compute=lambda: calls.append(1) or df)
    out, made = make_csv(fig, tmp_path / "no_such_experiment.csv", {})
    pd.testing.assert_frame_equal(out, df)
    assert set(made["inputs"]) == {"compute_code"} and made["csv_sha256"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "no_such_experiment.csv"), df)
    assert make_csv(fig, tmp_path / "no_such_experiment.csv", made)[1] == made and len(calls) == 1
    monkeypatch.setattr(make, "compute_inputs", lambda compute: {"compute_code": "edited"})
    assert make_csv(fig, tmp_path / "no_such_experiment.csv", made)[1]["inputs"] == {"compute_code": "edited"}
    assert len(calls) == 2


def test_a_compute_that_runs_sweeps_depends_on_the_run_code_and_configs_and_one_that_does_not_only_on_its_own(
        monkeypatch):
    """ahn_fig1 runs a sweep (samrepro.cli's multirun): the code that computes runs and the config files are its
    inputs; wen_table1's measurement is not made again for a change of either (its own code: its module and
    every samrepro module it uses)."""
    sweeping, own = make.compute_inputs(ahn_fig1.compute), make.compute_inputs(wen_table1.compute)
    assert set(sweeping) == {"compute_code", "samrepro_code", "conf"} and set(own) == {"compute_code"}
    monkeypatch.setattr(make, "conf_hash", lambda: "an edited experiment")
    monkeypatch.setattr(make, "code_version", lambda target: "another version")
    assert make.compute_inputs(ahn_fig1.compute) != sweeping and make.compute_inputs(wen_table1.compute) == own
    assert "samrepro.sharpness" in make.code_sources(wen_table1.compute)  # the code it measures with


def thm21_rows(norm_factor: float) -> pd.DataFrame:
    rows = []
    for lr in (0.1, 0.4):
        norm = norm_factor * theory.sam_quadratic_limit_norm(lr, 0.1, 2.0)
        rows.append({"run": f"lr={lr}", "step": 100, "lr": lr, "rho": 0.1, "w0": -norm, "w_norm": norm,
                     "task.eigenvalues": "[2.0, 1.0]"})
    return pd.DataFrame(rows)


def test_thm21_claims_pass_on_the_prediction_and_fail_off_it():
    assert [c.passed for c in wen_thm21.claims(thm21_rows(1.0))] == [True, True]
    assert [c.passed for c in wen_thm21.claims(thm21_rows(1.01))] == [True, False]


def test_table1_claims_use_the_smallest_rho_and_the_monte_carlo_error():
    base = {"loss": "q", "point": "p", "limit_max": 2.0, "limit_asc": 0.5, "limit_avg": 1.0, "avg_se": 0.01,
            "limit_smax": 3.0, "limit_sasc": 3.0}
    rows = pd.DataFrame([{**base, "rho": 0.1, "max": 3.0, "asc": 0.9, "avg": 2.0},  # far, but not the limit
                         {**base, "rho": 0.001, "max": 2.001, "asc": 0.5004, "avg": 1.02, "smax": 3.001,
                          "sasc": 2.999}])
    assert [c.passed for c in wen_table1.claims(rows)] == [True] * 5
    rows.loc[1, "avg"] = 1.05  # 5 standard errors off
    rows.loc[1, "sasc"] = 1.5  # the full-batch R^asc's λ_min/2 scale, not Tr/2 (Thm 10)
    assert [c.passed for c in wen_table1.claims(rows)] == [True, True, False, True, False]
    old_csv = rows.drop(columns=["smax", "sasc"])  # made before Thm 9, 10 were measured: shown as not run
    assert [c.verdict for c in wen_table1.claims(old_csv)][3:] == ["not run", "not run"]


def test_limiting_regularizers_ignore_the_zero_eigenvalues():
    limits = theory.limiting_regularizers(np.array([0.0, 1e-16, 2.0, 16.0]))
    assert limits == {"max": 8.0, "asc": 1.0, "avg": 18.0 / 8}


def test_fig1_names_the_runs_that_diverged():
    runs = [("a", 0.002, 2.0, "completed"), ("b", 0.005, 2.0, "diverged"), ("c", 0.005, 0.5, "completed")]
    df = pd.DataFrame([{"run": r, "step": 10, "lr": lr, "rho": rho, "status": status, "opt": "gd_ascent",
                        "task.batch_size": 2, "lr_schedule.name": "constant"} for r, lr, rho, status in runs])
    assert wen_fig1.diverged_note(df, "gd_ascent", 2) == "; ρ = 2 with η = 0.005 diverges"
    assert wen_fig1.diverged_note(df[df.run != "b"], "gd_ascent", 2) == ""
