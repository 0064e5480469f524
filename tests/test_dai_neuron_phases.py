"""Dai et al. Thm 4/16 (SAM) and Thm 5/35 (USAM) on ℓ(xy), phase by phase (figures dai_thm4, dai_thm5), and
Lemmas 13, 14 and Thm 15 on ½(xy)² step by step (dai_thm2_steps):
(A3)'s constant, the verdicts on hand-built paths, and a short real SAM sweep judged and then perturbed."""

import numpy as np
import pandas as pd
import pytest

from samrepro import theory
from samrepro.cli import multirun
from samrepro.collect import collect
from samrepro.figures import dai_thm2_steps, dai_thm4, dai_thm5


def test_assumption_c_is_the_largest_c_of_a3_for_the_logistic_loss():
    c = theory.assumption_c(np.tanh)
    assert np.tanh(c) == pytest.approx(c / 2, abs=1e-9) and 1.91 < c < 1.92
    s = np.linspace(1e-6, c, 1000)
    assert (np.tanh(s) >= s / 2 - 1e-12).all()  # |ℓ'(s)| ≥ |s|/2 on [0, c], so ≥ c/2 beyond (tanh increases)
    assert np.tanh(c + 0.01) < (c + 0.01) / 2  # a larger c breaks (A3)


def usam_path(ratio: float) -> pd.DataFrame:
    """A USAM-like run from (2, √40) at η = 1/18, ρ = 0.5 (inside Thm 35): x drops 0.5 a step to 0, y²
    falls linearly from 40 and first passes below ỹ² = 7.544 at step 10, then stays at ``ratio``·y²_10."""
    t = np.arange(21)
    y2 = np.where(t <= 10, 40 - (40 - 7.5) * t / 10, 7.5)
    y2[-1] = ratio * 7.5
    return pd.DataFrame({"run": 0, "step": t, "x": np.maximum(2 - 0.5 * t, 0.0), "y": np.sqrt(y2),
                         "lr": 1 / 18, "rho": 0.5, "status": "completed", "steps": 20,
                         "task.init": f"[2.0, {float(np.sqrt(40))!r}]"})


def test_dai_thm5_judges_usams_limit_against_y2_at_the_first_crossing():
    initial, limit, formal = dai_thm5.claims(usam_path(0.99))
    assert initial.passed and "t1 = 3 (≤ 37)" in initial.measured
    assert limit.passed and "t* = 10" in limit.measured and "0.9900" in limit.measured
    assert formal.passed and "vacuous" in formal.note  # 4Cγ(η + ρCγ)² ≈ 5.5 exceeds every ε < 2
    assert not dai_thm5.claims(usam_path(0.6))[1].passed  # below 0.95·(1 − η² − ρ²) = 0.71


@pytest.fixture(scope="module")
def sam_runs(tmp_path_factory) -> pd.DataFrame:
    """SAM from the γ = 1 inits of η_k = 0.1 and 0.2, at η ∈ {0.1, 0.2}, ρ = 1, 300 steps (< 2 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("dai_thm4"))
        inits = "[1.0540925533894598,3.3333333333333335],[0.7453559924999299,2.3570226039551585]"
        return collect(multirun(["experiment=dai_thm4", f"task.init={inits}", "lr=0.1,0.2", "rho=1.0",
                                 "steps=300"])).drop(columns=["run_dir"])


def test_dai_thm4_passes_on_real_sam_runs_and_fails_where_a_bound_is_broken(sam_runs):
    claims = dai_thm4.claims(sam_runs)
    assert [c.passed for c in claims] == [True] * 5, [c.measured for c in claims]
    assert "never reached" in claims[2].measured  # y_t ≥ |x_t| all the way down (t2 never comes)
    ph = dai_thm4.phases(sam_runs)
    assert len(ph) == 2 and (ph.t1 <= ph.t1_bound).all() and (ph.rate >= 1).all()

    unit = ph.iloc[0]
    wide = sam_runs.copy()  # |x_t| above B once, after the Initial Phase
    wide.loc[(wide.run == unit.run) & (wide.step == unit.t1 + 3), "x"] = 1.5 * unit.box
    assert not dai_thm4.claims(wide)[1].passed
    slow = sam_runs.copy()  # y_t stalls for one step of the Middle Phase: less than Lemma 30's decrease
    at = (slow.run == unit.run) & (slow.step == unit.t1 + 1)
    slow.loc[(slow.run == unit.run) & (slow.step == unit.t1 + 2), "y"] = slow.loc[at, "y"].iloc[0]
    assert not dai_thm4.claims(slow)[2].passed
    stuck = sam_runs.copy()  # one run ends on the y-axis away from the origin
    stuck.loc[dai_thm4.final_rows(stuck).index[0], "y"] = 0.5
    assert not dai_thm4.claims(stuck)[4].passed


def factorization_runs(drift: float, growth: float) -> pd.DataFrame:
    """½(xy)² at η = 1/74, ρ = 0.5 (5ρ = 2.5): SAM steps from (5, 7) to (2, 6), then y shrinks by
    (1 − drift·ηρ²) a step with |x| = 1; USAM from (5, 7) multiplies x and y by ``growth`` a step."""
    lr, rho, t = 1 / 74, 0.5, np.arange(6)
    sam = pd.DataFrame({"x": [5.0, *(2.0 * (-0.5) ** t[:5])],
                        "y": [7.0, *(6.0 * (1 - drift * lr * rho**2) ** t[:5])]})
    usam = pd.DataFrame({"x": 5.0 * growth**t, "y": 7.0 * growth**t})
    runs = [r.assign(run=i, step=t, opt=opt) for i, (opt, r) in enumerate((("sam", sam), ("usam", usam)))]
    df = pd.concat(runs, ignore_index=True)
    return df.assign(loss=0.5 * (df.x * df.y) ** 2, lr=lr, rho=rho, status="completed", **{"task.init": "[5.0, 7.0]"})


def test_dai_thm2_steps_scores_lemma_14s_drift_and_thm_15s_doubling_per_step():
    lemma13, lemma14, thm15 = dai_thm2_steps.claims(factorization_runs(drift=1.0, growth=3.0))
    assert lemma13.passed and "over 1 steps" in lemma13.measured
    assert lemma14.passed and "4 steps" in lemma14.measured and "median 1.000" in lemma14.measured
    assert thm15.passed and "min growth factor over t ≥ 1 = 3" in thm15.measured
    assert "0.159" in lemma14.note  # eq. (9)'s own limit on ρ at η = 1/74
    assert not dai_thm2_steps.claims(factorization_runs(drift=0.25, growth=3.0))[1].passed  # slower than ½ηρ²
    assert not dai_thm2_steps.claims(factorization_runs(drift=1.0, growth=1.5))[2].passed  # less than doubling
