"""wen_flows: the closed-form limiting flows of Wen et al. eq. (6), (8) on the 4D toy, the projection Φ, and the
Thm 8 / Thm 11 / Cor. 15 claims on hand-built trajectories (each verdict made to flip) and on a real run."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samrepro import theory
from samrepro.collect import collect, run_folders
from samrepro.figures import wen_flows

X_INIT, Y_INIT = [0.5, 0.5], [0.1, 0.1]


def gradient(x: np.ndarray, w0: float, w1: float) -> np.ndarray:
    """∇(w0·F0 + w1·F1) by central differences of theory.toy4d_factors."""
    out = []
    for e in np.eye(2) * 1e-6:
        hi, lo = theory.toy4d_factors(x + e), theory.toy4d_factors(x - e)
        out.append((w0 * (hi[0] - lo[0]) + w1 * (hi[1] - lo[1])) / 2e-6)
    return np.array(out)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])
def test_toy4d_flow_solves_the_riemannian_gradient_flow_and_ends_at_the_weighted_argmin(weights):
    tau = np.array([0.0, 0.03, 0.1])
    x = theory.toy4d_flow(X_INIT, tau, *weights)
    h = 1e-6
    derivative = (theory.toy4d_flow(X_INIT, tau + h, *weights) - theory.toy4d_flow(X_INIT, tau - h, *weights)) / (2 * h)
    for xi, di in zip(x, derivative, strict=True):
        np.testing.assert_allclose(di, -gradient(xi, *weights), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(x[0], X_INIT)
    np.testing.assert_allclose(theory.toy4d_flow(X_INIT, [50.0], *weights)[0],
                               theory.toy4d_weighted_argmin(*weights), atol=1e-12)


def test_projection_fixes_gamma_and_moves_x_by_order_y_squared():
    on_gamma = np.array([0.3, 0.7, 0.0, 0.0])
    np.testing.assert_allclose(theory.toy4d_projection(on_gamma), on_gamma[:2])
    shifts = [np.linalg.norm(theory.toy4d_projection(np.array([*X_INIT, s, s])) - X_INIT) for s in (0.1, 0.05)]
    assert shifts[0] > 1e-3
    assert shifts[0] / shifts[1] == pytest.approx(4, rel=0.02)  # O(‖y‖²)
    np.testing.assert_allclose(theory.toy4d_projection(np.array([*X_INIT, *Y_INIT]), dt=0.002),
                               theory.toy4d_projection(np.array([*X_INIT, *Y_INIT])), atol=1e-6)


def trajectories(offset) -> pd.DataFrame:
    """Hand-built runs of the wen_flows grid: x on the flow X(τ) plus ``offset(lr, rho)``·τ/T3 in x0, y at the
    phase II 2-cycle amplitude ηρλ1/(2 − ηλ1) from step 10 on (phase I over by then)."""
    rows = []
    for bs, weights in ((2, (1.0, 0.0)), (1, (1.0, 1.0))):
        for lr in (0.01, 0.02, 0.04):
            for rho in (0.02, 0.04):
                run = f"lr={lr},rho={rho},task.batch_size={bs}"
                steps = np.unique(np.r_[10, np.linspace(0, wen_flows.HORIZON / (lr * rho**2), 21).round()])
                start = theory.toy4d_projection(np.array([*X_INIT, *Y_INIT]))
                x = theory.toy4d_flow(start, lr * rho**2 * steps, *weights)
                x[:, 0] += offset(lr, rho) * steps / steps[-1]
                lam1 = 2 * theory.toy4d_factors(x)[0]
                a = lr * rho * lam1 / (2 - lr * lam1)
                for i, step in enumerate(steps):
                    y = Y_INIT if i == 0 else [a[i], 0.0]
                    rows.append({"run": run, "step": step, "lr": lr, "rho": rho, "task.batch_size": bs,
                                 "x0": x[i, 0] if i else X_INIT[0], "x1": x[i, 1] if i else X_INIT[1],
                                 "y0": y[0], "y1": y[1], "task.x_init": str(X_INIT), "task.y_init": str(Y_INIT),
                                 "steps": 10000, "log_every": 10, "status": "completed"})
    return pd.DataFrame(rows)


def verdicts(df: pd.DataFrame) -> dict[str, bool | None]:
    return {c.claim: c.passed for c in wen_flows.claims(df)}


def test_claims_pass_on_an_error_first_order_in_eta_and_fail_when_it_grows_with_rho_or_exceeds_the_bound(monkeypatch):
    def quadratic(w, rho, example=None):
        """R^max of L (y along v1) or of L_k on their quadratic models: the inner maximization is tested below."""
        f = theory.toy4d_factors(np.array(w[:2]))
        k = 0 if example is None else example
        return (1 if example is None else 2) * f[k] * (rho**2 + 2 * rho * abs(w[2 + k]))

    monkeypatch.setattr(wen_flows, "worst_direction", quadratic)
    good = verdicts(trajectories(lambda lr, rho: 3 * lr))
    assert all(good.values()), good
    rho_driven = verdicts(trajectories(lambda lr, rho: 3 * rho))
    order = [k for k in rho_driven if "set by η" in k]
    assert len(order) == 2 and not any(rho_driven[k] for k in order)
    assert all(v for k, v in rho_driven.items() if k not in order)  # within the bound, shrinking as (η, ρ) halve
    too_far = verdicts(trajectories(lambda lr, rho: 0.6))
    tracking = [k for k in too_far if k.startswith(("Thm 8 phase II: Φ", "Thm 11 phase II"))]
    assert len(tracking) == 2 and not any(too_far[k] for k in tracking)


@pytest.mark.slow
def test_cor15_and_cor17_measure_the_two_cycles_first_order_term():
    track = wen_flows.tracking(trajectories(lambda lr, rho: 0.0))
    along = wen_flows.sharpness_along(track)
    full = along[along["task.batch_size"] == 2]  # y = (a, 0) on the 2-cycle of L: R^max − ρ²λ1/2 = ρλ1a
    np.testing.assert_allclose(full.deviation, full.cycle, rtol=0.05)
    assert (full.ratio < 1).all()
    bs1 = along[along["task.batch_size"] == 1]
    assert (bs1.deviation > 0).all() and (bs1.ratio < 1).all()


def test_worst_direction_of_each_example_is_its_quadratic_models():
    x, a, rho = (0.3, 0.2), 1e-3, 0.02  # per example: R^max_k = ρ²λ_k/2 + ρλ_k|y_k| on L_k = (λ_k/2)·y_k², λ_k = 4F_k
    f0, f1 = theory.toy4d_factors(np.array(x))
    assert wen_flows.worst_direction((*x, a, 0.0), rho, 0) == pytest.approx(2 * f0 * rho**2 + 4 * f0 * rho * a,
                                                                              rel=1e-3)
    assert wen_flows.worst_direction((*x, a, 0.0), rho, 1) == pytest.approx(2 * f1 * rho**2, rel=1e-3)


@pytest.mark.slow
def test_a_real_full_batch_sam_run_tracks_the_flow_up_to_an_error_of_order_eta(samrepro_cli, tmp_path):
    """η = ρ = 0.04 (ρ/η = 1) for 625 steps reaches τ = ηρ²t = T3: the error is O(η), below (η+ρ)ln(1/ηρ)."""
    done = samrepro_cli("experiment=wen_flows", "lr=0.04", "rho=0.04", "task.batch_size=2", "steps=625",
                        "log_every=5")
    assert done.returncode == 0, done.stderr
    df = collect(run_folders(Path(tmp_path) / "runs" / "wen_flows"))
    err = wen_flows.errors(wen_flows.tracking(df)).iloc[0]
    assert err.tau == pytest.approx(wen_flows.HORIZON)
    assert 0.02 < err.err < 0.3 < err.bound  # ≈ 4η: the drift speed is off by (2/(2 − ηλ1))², not by o(1)
    phase = wen_flows.phase_one(df).iloc[0]
    assert phase.steps <= phase.predicted
