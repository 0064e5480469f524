"""Theory formulas, the figure registry, and `samrepro-figs` end to end on the cheapest figure."""

import numpy as np
import pandas as pd
import pytest

from samrepro import theory
from samrepro.figures import registry
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


def test_registry_has_the_foundation_figures():
    assert {"dai_fig4", "dai_table1", "dai_thm1", "dai_thm2"} <= set(registry())


def test_make_figs_runs_a_sweep_draws_it_and_reports_claims(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_figs(["dai_fig4", "--results", "out"])
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "out" / "figures" / f"dai_fig4{suffix}").stat().st_size > 10_000
    df = pd.read_csv(tmp_path / "out" / "dai_fig4.csv")
    assert set(df["opt.name"]) == {"gd", "sam", "usam"} and df.step.max() == 2000
    claims = (tmp_path / "out" / "CLAIMS.md").read_text()
    rows = [line for line in claims.splitlines() if line.startswith("| dai_fig4 |")]
    assert len(rows) == 3 and all("**PASS**" in r for r in rows)
