"""Dai et al. Lemma 9 (SAM's descent lemma) and Thm 6 / Thm 48 (USAM's travel on a PL loss) on quadratics:
the bounds of ``samrepro.theory`` against real steps, and the dai_lemma9 / dai_thm6 sweeps, thinned."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from samrepro import theory
from samrepro.cli import multirun
from samrepro.collect import collect
from samrepro.figures import registry
from samrepro.optim import SAM
from samrepro.tasks.quadratic import Quadratic

matplotlib.use("Agg")
BETA = 2.0


def one_sam_step(lr: float, rho: float, w0: list[float]) -> tuple[float, float, float]:
    """(L(w0), ‖∇L(w0)‖, L(w1)) for one SAM step of the trainer's optimizer on ½wᵀdiag(2, 0.5)w."""
    task = Quadratic([BETA, 0.5], w0, 1, torch.device("cpu"))
    params = task.init_params([0])
    loss0, (grad,) = task.loss_and_grad(params)
    SAM(params, "sam", lr, rho, config_dim=True).step(lambda p, perturbed: task.loss(p), task.loss_and_grad)
    return float(loss0), float(torch.linalg.vector_norm(grad)), float(task.loss_and_grad(params)[0])


@pytest.mark.parametrize("lr", [0.3, 0.7, 0.95])
def test_lemma_9_plus_the_missing_term_is_attained_on_the_top_eigendirection(lr):
    loss0, grad_norm, loss1 = one_sam_step(lr, 0.5, [1.0, 0.0])
    bound = theory.sam_descent_bound(loss0, grad_norm, lr, 0.5, BETA)
    excess = theory.sam_descent_excess(grad_norm, lr, 0.5, BETA)
    if lr <= 1 / BETA:  # eq. (4) holds strictly: the dropped term −(η − η²β)·βρ‖∇L‖ is < 0
        assert excess == 0 and loss1 == pytest.approx(bound - lr * (1 - lr * BETA) * BETA * 0.5 * grad_norm)
    else:  # eq. (4) fails by exactly η(ηβ − 1)βρ‖∇L(w0)‖
        assert loss1 > bound and loss1 == pytest.approx(bound + excess, rel=1e-12)


def test_thm_48_as_printed_vanishes_with_eta_while_the_summed_bound_tends_to_an_eta_free_limit():
    beta, mu, rho, gap0 = 2.0, 1.0, 0.2, 0.5  # w0 = e2 (the μ direction): gradient flow travels ‖w0‖ = 1
    printed = theory.usam_travel_bound(1e-4, rho, beta, mu, gap0)
    summed = theory.usam_travel_bound_summed(1e-4, rho, beta, mu, gap0)
    assert printed < 1e-3
    limit = (1 + beta * rho) * np.sqrt(2) * beta / (mu**1.5 * (1 - rho * beta)) * np.sqrt(gap0)
    assert summed == pytest.approx(limit, rel=1e-3) and summed > 1


def test_lemma_49_rate_is_what_usam_does_on_the_mu_direction_at_small_eta():
    """On e_μ one USAM step multiplies L by (1 − ημ(1 + ρμ))², below Lemma 49's q (a bound for every PL loss)."""
    lr, rho, beta, mu = 0.1, 0.2, 2.0, 1.0
    exact = (1 - lr * mu * (1 + rho * mu)) ** 2
    assert exact < theory.usam_pl_rate(lr, rho, beta, mu) < 1


def claims_of(fig_id: str, *overrides: str) -> list:
    df = collect(multirun([f"experiment={fig_id}", *overrides])).drop(columns=["run_dir"])
    return registry()[fig_id].claims(df)


def test_dai_lemma9_fails_above_one_over_beta_only_and_its_correction_holds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paper, proven, corrected = claims_of("dai_lemma9", "lr=0.3,0.7", "rho=0.5", "steps=20")
    assert paper.passed is False and "{0.7} only" in paper.measured and "20/40 steps" in paper.measured
    assert proven.passed and corrected.passed
    paper, _, _ = claims_of("dai_lemma9", "lr=0.2,0.5", "rho=0.5", "steps=20")  # η ≤ 1/β: eq. (4) holds
    assert paper.passed


def test_dai_thm6_printed_bound_fails_at_small_eta_and_the_summed_one_holds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, rate, summed = claims_of("dai_thm6", "lr=0.05,0.49", "rho=0", "steps=100")
    assert printed.passed is False and "fails at η ∈ {0.05}" in printed.measured
    assert rate.passed and summed.passed
    printed, _, _ = claims_of("dai_thm6", "lr=0.49", "rho=0", "steps=100")  # large η: the printed bound holds
    assert printed.passed
    registry()["dai_thm6"].draw(collect(multirun(["experiment=dai_thm6", "lr=0.49", "rho=0", "steps=100"]))
                                .drop(columns=["run_dir"]), tmp_path / "thm6")
    assert (tmp_path / "thm6.png").exists()
