"""Sharpness measurements against random quadratics with known spectra (dense and HVP paths)."""

import math

import pytest
import torch

from samrepro import sharpness, theory


def random_quadratic(eigenvalues: list[list[float]], seed: int = 0):
    """C quadratics ½xᵀA_c x with A_c = Q_c diag(λ_c) Q_cᵀ, Q_c random orthogonal."""
    gen = torch.Generator().manual_seed(seed)
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    c, d = lam.shape
    q, _ = torch.linalg.qr(torch.randn((c, d, d), generator=gen, dtype=torch.float64))
    a = q @ torch.diag_embed(lam) @ q.transpose(1, 2)

    def loss(params):
        (x,) = params
        return 0.5 * torch.einsum("ci,cij,cj->c", x, a, x)

    x = torch.randn((c, d), generator=gen, dtype=torch.float64)
    return loss, [x], a, lam


SPECTRA = [[5.0, 4.9, 1.0, 0.5, 0.0, 0.0], [3.0, 2.0, 2.0, 1.0, -0.5, 0.1]]


def test_dense_hessian_is_the_matrix():
    loss, params, a, lam = random_quadratic(SPECTRA)
    h = sharpness.dense_hessian(loss, params)
    torch.testing.assert_close(h, a)
    torch.testing.assert_close(torch.linalg.eigvalsh(h), lam.sort(dim=1).values)


def test_lanczos_and_power_find_the_top_eigenvalue():
    loss, params, _, lam = random_quadratic(SPECTRA)
    top = lam.max(1).values
    gen = torch.Generator().manual_seed(1)
    lanczos = sharpness.lanczos_top_eigenvalue(loss, params, iters=6, generator=gen)
    torch.testing.assert_close(lanczos, top, rtol=1e-10, atol=1e-10)
    power = sharpness.top_eigenvalue(loss, params, config_dim=True, iters=400,
                                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(power, top, rtol=1e-3, atol=0)


def test_lanczos_without_config_dim():
    loss, params, _, lam = random_quadratic([SPECTRA[0]])
    unbatched = [params[0][0]]
    value = sharpness.lanczos_top_eigenvalue(lambda p: loss([p[0][None]])[0], unbatched, config_dim=False,
                                             iters=10)
    assert value.shape == () and value.item() == pytest.approx(5.0, rel=1e-10)


def test_table1_regularizers_on_a_quadratic_with_a_flat_direction():
    """On ½xᵀAx with A = diag(4, 1, 0) every point x = (0, 0, t) is a minimizer; R/ρ² are exact there."""
    a = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)

    def loss(w):
        return 0.5 * (a * w.square()).sum(1)

    x = torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)
    rho = 0.01
    gen = torch.Generator().manual_seed(0)
    limits = theory.limiting_regularizers(a.numpy())
    assert limits == {"max": 2.0, "asc": 0.5, "avg": pytest.approx(5 / 6)}
    r_max = sharpness.worst_direction_sharpness(loss, x, rho, generator=gen) / rho**2
    r_asc = sharpness.ascent_direction_sharpness(loss, x, rho, radius=1e-7, generator=gen) / rho**2
    r_avg, se = sharpness.average_direction_sharpness(loss, x, rho, samples=20000, generator=gen)
    assert r_max.item() == pytest.approx(2.0, rel=1e-6)
    assert r_asc.item() == pytest.approx(0.5, rel=1e-3)
    assert abs(r_avg.item() / rho**2 - 5 / 6) <= 5 * se.item() / rho**2
    assert math.isfinite(se.item())
