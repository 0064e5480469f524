"""The papers' closed-form predictions, each in one place with its equation number."""

from __future__ import annotations

import numpy as np


def gd_limit_y2(lr):
    """Dai et al. Table 1 / Thm 3 (Ahn et al.): GD on ℓ(xy) with η > η_GD ends at y∞² ≈ 2/η."""
    return 2.0 / np.asarray(lr, dtype=float)


def usam_limit_y2(lr, rho):
    """Dai et al. eq. (7): USAM on ℓ(xy) stops once (1 + ρy²)y² < 2/η, i.e. below
    ỹ² = (√(8ρ/η + 1) − 1)/(2ρ)  (→ 2/η as ρ → 0)."""
    lr, rho = np.broadcast_arrays(np.asarray(lr, dtype=float), np.asarray(rho, dtype=float))
    safe = np.where(rho > 0, rho, 1.0)
    return np.where(rho > 0, (np.sqrt(8 * rho / lr + 1) - 1) / (2 * safe), 2.0 / lr)


def usam_limit_y2_lower(lr, rho):
    """Dai et al. Thm 5: y∞² ≳ (1 − η² − ρ²)·ỹ²."""
    return (1 - np.asarray(lr) ** 2 - np.asarray(rho) ** 2) * usam_limit_y2(lr, rho)


def usam_stuck_ratio(lr, rho):
    """Dai et al. Thm 5 (informal): once (1 + ρy_t²)y_t² < 2/η at some t, y∞² ≳ (1 − η² − ρ²)·y_t²."""
    return 1 - np.asarray(lr, dtype=float) ** 2 - np.asarray(rho, dtype=float) ** 2


def usam_stuck_ratio_formal(lr, rho, gamma, big_c, eps):
    """Dai et al. Thm 44 (formal Thm 5): once η(1 + ρy_t²)y_t² = 2 − ε (t ≥ t1),
    y∞² ≥ (1 − 4Cγ(η + ρCγ)²/ε)·y_t², where y0² − x0² = γ/η and y0² = Cγ/η."""
    gamma, big_c = np.asarray(gamma, dtype=float), np.asarray(big_c, dtype=float)
    return 1 - 4 * big_c * gamma * (np.asarray(lr) + np.asarray(rho) * big_c * gamma) ** 2 / np.asarray(eps)


def usam_neuron_initial_steps(lr, big_c):
    """Dai et al. Lemma 43 (Thm 39): USAM's Initial Phase (x_t > ½√(γη)) ends by t1 ≤ 2√C/η − 1."""
    return 2 * np.sqrt(np.asarray(big_c, dtype=float)) / np.asarray(lr, dtype=float) - 1


def assumption_c(ell_prime, hi: float = 10.0) -> float:
    """The largest c of Dai et al. (A3) for a loss with ℓ' increasing and concave on s ≥ 0 (tanh):
    |ℓ'(s)| ≥ |s|/2 on [0, c] and ≥ c/2 beyond, i.e. the root of ℓ'(c) = c/2 (bisection)."""
    lo = 1e-9
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ell_prime(mid) >= mid / 2 else (lo, mid)
    return lo


def sam_neuron_initial_steps(lr, big_c, c):
    """Dai et al. Lemma 24 (Thm 20): SAM's Initial Phase (x_t > (c/4)√(γη)) ends by t1 ≤ 4√C/(cη) − 1."""
    return 4 * np.sqrt(np.asarray(big_c, dtype=float)) / (c * np.asarray(lr, dtype=float)) - 1


def sam_neuron_box(lr, rho, gamma, big_c, c):
    """Dai et al. Thm 26 / Thm 32: after the Initial Phase |x_t| ≤ B, and after the Middle Phase
    |x_t|, |y_t| ≤ B, with B = max{(2/c)√(η/(Cγ)), ηρ + √(Cγη)}."""
    lr, gamma, big_c = (np.asarray(v, dtype=float) for v in (lr, gamma, big_c))
    return np.maximum(2 / c * np.sqrt(lr / (big_c * gamma)), lr * np.asarray(rho) + np.sqrt(big_c * gamma * lr))


def sam_neuron_drift(y, lr, rho, c):
    """Dai et al. Lemma 30 (Thm 26): while y_t ≥ |x_t|, SAM's y_t drops per step by at least
    min{½ηρ²y_t, (c/(2√2))ηρ}."""
    lr, rho = np.asarray(lr, dtype=float), np.asarray(rho, dtype=float)
    return np.minimum(0.5 * lr * rho**2 * np.asarray(y), c / (2 * np.sqrt(2)) * lr * rho)


def usam_max_lr(lam1, rho):
    """Dai et al. Thm 1 / Thm 10: USAM on ½wᵀΛw diverges iff η(λ1 + ρλ1²) > 2 (⟨w0, e1⟩ ≠ 0)."""
    return 2.0 / (lam1 + np.asarray(rho, dtype=float) * lam1**2)


def gd_max_lr(lam1):
    """GD (and, by Dai et al. Thm 1, SAM for every ρ) is stable on a β-smooth loss iff η < 2/β; read the
    other way, at step size η the sharpness must stay below 2/η."""
    return 2.0 / lam1


def sam_loss_bound(lr, rho, alpha, beta, t, loss0):
    """Dai et al. eq. (3): SAM with η < 2/β on an α-strongly-convex β-smooth loss (L* = 0) has
    L(w_t) ≤ (1 − αη(2 − ηβ))^t L(w0) + ηβ³ρ²/(2α(2 − ηβ))."""
    lr = np.asarray(lr, dtype=float)
    contraction = (1 - alpha * lr * (2 - lr * beta)) ** np.asarray(t, dtype=float)
    return contraction * loss0 + lr * beta**3 * np.asarray(rho) ** 2 / (2 * alpha * (2 - lr * beta))


def sam_descent_bound(loss, grad_norm, lr, rho, beta):
    """Dai et al. Lemma 9 (eq. 4): one SAM step on a convex β-smooth loss with η < 2/β has
    L(w_{t+1}) ≤ L(w_t) − ½η(2 − ηβ)‖∇L(w_t)‖² + η²β³ρ²/2."""
    lr = np.asarray(lr, dtype=float)
    return loss - 0.5 * lr * (2 - lr * beta) * np.asarray(grad_norm) ** 2 + lr**2 * beta**3 * np.asarray(rho) ** 2 / 2


def sam_descent_excess(grad_norm, lr, rho, beta):
    """What Lemma 9's proof misses for 1/β < η < 2/β (our correction): there −(η − η²β)⟨∇L(w_{t+½}), ∇L(w_t)⟩
    > 0, and ⟨∇L(w_{t+½}) − ∇L(w_t), ∇L(w_t)⟩ ≤ βρ‖∇L(w_t)‖ adds η·max(0, ηβ − 1)·βρ‖∇L(w_t)‖ to eq. (4)'s
    right side (0 for η ≤ 1/β; an equality on the top eigendirection of a quadratic)."""
    lr = np.asarray(lr, dtype=float)
    return lr * np.maximum(0.0, lr * beta - 1) * beta * np.asarray(rho) * np.asarray(grad_norm)


def usam_pl_rate(lr, rho, beta, mu):
    """Dai et al. Lemma 49 (Andriushchenko & Flammarion 2022, Thm 10): USAM with η, ρ < 1/β on a β-smooth
    μ-PL loss has L(w_t) − L* ≤ q^t (L(w0) − L*), q = 1 − 2μη(1 − ρβ)(1 − ηβ(1 − ρβ)/2)."""
    lr, rho = np.asarray(lr, dtype=float), np.asarray(rho, dtype=float)
    return 1 - 2 * mu * lr * (1 - rho * beta) * (1 - lr * beta * (1 - rho * beta) / 2)


def usam_travel_bound(lr, rho, beta, mu, gap0):
    """Dai et al. Thm 48 (formal Thm 6) as printed: USAM with η, ρ < 1/β on a β-smooth μ-PL loss has
    ‖w_t − w0‖ ≤ η(1 + βρ)·√(2β²/μ)·(1 − 2μη(1 − ρβ)(ηβ(1 − ρβ)/2))^{−1/2}·√(L(w0) − L*) for all t."""
    lr, rho = np.asarray(lr, dtype=float), np.asarray(rho, dtype=float)
    factor = (1 - 2 * mu * lr * (1 - rho * beta) * (lr * beta * (1 - rho * beta) / 2)) ** -0.5
    return lr * (1 + beta * rho) * np.sqrt(2 * beta**2 / mu) * factor * np.sqrt(gap0)


def usam_travel_bound_summed(lr, rho, beta, mu, gap0):
    """Thm 48's proof with its last step summed (our correction): Σ_i √(q^i) = 1/(1 − √q) with q of
    Lemma 49, so ‖w_t − w0‖ ≤ η(1 + βρ)·√(2β²/μ)·√(L(w0) − L*)/(1 − √q); → (1 + βρ)√2·β/(μ^{3/2}(1 − ρβ))·
    √(L(w0) − L*) as η → 0, where the printed bound → 0."""
    lr, rho = np.asarray(lr, dtype=float), np.asarray(rho, dtype=float)
    summed = 1 / (1 - np.sqrt(usam_pl_rate(lr, rho, beta, mu)))
    return lr * (1 + beta * rho) * np.sqrt(2 * beta**2 / mu) * summed * np.sqrt(gap0)


def usam_factorization_min_rho(lr):
    """Dai et al. Thm 2 / Thm 15: on ½(xy)² with η = 1/(x0² + y0²), USAM diverges once ρ ≥ 15η."""
    return 15 * np.asarray(lr, dtype=float)


def sam_factorization_radius(rho):
    """Dai et al. Thm 2 / Thm 12: SAM on ½(xy)² (from 2x0 > y0 > x0 ≫ 0, η = 1/(x0² + y0²)) ends with
    |x|, |y| ≤ 5ρ."""
    return 5 * np.asarray(rho, dtype=float)


def ahn_gd_threshold(d, loss_mult=1.0):
    """Ahn et al. 2023a, Fig. 1 / §2: GD on the sparse-coding ReLU network learns a threshold neuron
    (b < 0) once η exceeds 8π/d² = 2/λ_max at initialization: along a₊ = a₋ the mean logistic loss
    has curvature d²/(4π) at b = 0 (ℓ''(0) = ¼, E Σ_i|x_i| ≈ d·√(2/π)). On c·L (``loss_mult`` = c)
    the threshold is 8π/(c·d²)."""
    return 8 * np.pi / (np.asarray(loss_mult, dtype=float) * np.asarray(d, dtype=float) ** 2)


def dai_loss_mult(d, lr_threshold):
    """The loss multiplier c that puts GD's threshold 8π/(c·d²) at ``lr_threshold`` (Dai et al.'s η = 0.025
    at half the threshold gives c = 8π/(0.05·d²) ≈ 0.01257 for d = 200)."""
    return 8 * np.pi / (np.asarray(lr_threshold, dtype=float) * np.asarray(d, dtype=float) ** 2)


def linear_classifier_accuracy(signal, d):
    """Ahn et al. §2: the linear classifier sign(Σ_i x_i) on x = λ·y·e_j + ξ has accuracy Φ(λ/√d)."""
    from math import erf, sqrt

    return 0.5 * (1 + erf(signal / sqrt(d) / sqrt(2)))


def usam_min_rho(lr, lam1):
    """Dai et al. Thm 1 / Thm 10 solved for ρ: at sharpness λ1 (with ηλ1 < 2) USAM is unstable once
    ρ > (2/(ηλ1) − 1)/λ1, i.e. once η(λ1 + ρλ1²) > 2."""
    lam1 = np.asarray(lam1, dtype=float)
    return (2.0 / (np.asarray(lr, dtype=float) * lam1) - 1.0) / lam1


# Wen et al. 2023, the 4D toy of Fig. 1: L(x, y) = F0(x)·y0² + F1(x)·y1² with
# F_k(x) = a_k(x0 − c_k)² + b_k(x1 − c_k)² + e_k, i.e. F0 = x0² + 6x1² + 8, F1 = 4(1 − x0)² + (1 − x1)² + 1.
TOY4D_FACTORS = ((1.0, 6.0, 0.0, 8.0), (4.0, 1.0, 1.0, 1.0))  # (a_k, b_k, c_k, e_k), k = 0, 1


def toy4d_factors(x):
    """(F0(x), F1(x)) of Wen et al. Fig. 1 for x of shape [..., 2] (a NumPy array or a torch tensor)."""
    x0, x1 = x[..., 0], x[..., 1]
    return tuple(a * (x0 - c) ** 2 + b * (x1 - c) ** 2 + e for a, b, c, e in TOY4D_FACTORS)


def toy4d_loss(w):
    """L(x, y) = F0(x)·y0² + F1(x)·y1² of Wen et al. Fig. 1, w = (x0, x1, y0, y1) of shape [..., 4]."""
    f0, f1 = toy4d_factors(w[..., :2])
    return f0 * w[..., 2] ** 2 + f1 * w[..., 3] ** 2


def toy4d_weighted_argmin(w0, w1):
    """argmin_x w0·F0(x) + w1·F1(x) (each F_k separable and quadratic in x)."""
    (a0, b0, c0, _), (a1, b1, c1, _) = TOY4D_FACTORS
    return ((w0 * a0 * c0 + w1 * a1 * c1) / (w0 * a0 + w1 * a1),
            (w0 * b0 * c0 + w1 * b1 * c1) / (w0 * b0 + w1 * b1))


# Limiting flows on Γ = {y = 0}, where the Hessian's non-zero eigenvalues are 2F0 > 2F1 (on [0, 1]²).
TOY4D_LIMITS = {
    "sam": toy4d_weighted_argmin(1.0, 0.0),  # Thm 8 / eq. (6): argmin λ1 = argmin F0
    "gd_ascent": toy4d_weighted_argmin(0.0, 1.0),  # Thm 13 (Table 1): argmin λ_min = argmin F1
    "sam_bs1": toy4d_weighted_argmin(1.0, 1.0),  # Thm 11 / eq. (8): argmin Tr = argmin F0 + F1
}


def toy4d_sam_bs1_cycle_limit(lr, iters: int = 200):
    """Where SAM with batch size 1 on the 4D toy stops at a finite constant η (our analysis, not the
    paper's): in its 2-cycle the step on L_k = 2F_k·y_k² weights F_k by (2/(2 − 4ηF_k))², so x settles at
    the fixed point of x = argmin_x Σ_k (2/(2 − 4ηF_k(x)))²·F_k(x). → argmin F0 + F1 as η → 0."""
    x = np.asarray(TOY4D_LIMITS["sam_bs1"], dtype=float)
    for _ in range(iters):
        w0, w1 = ((2 / (2 - 4 * lr * f)) ** 2 for f in toy4d_factors(x))
        x = np.array(toy4d_weighted_argmin(w0, w1))
    return x


def sam_quadratic_limit_norm(lr, rho, lam1):
    """Wen et al. Thm 21: SAM on ½xᵀAx with ηλ1 < 1 aligns with v1(A) and
    ‖x(t)‖ → ηρλ1/(2 − ηλ1)."""
    lr, lam1 = np.asarray(lr, dtype=float), np.asarray(lam1, dtype=float)
    return lr * np.asarray(rho, dtype=float) * lam1 / (2 - lr * lam1)


def limiting_regularizers(eigenvalues):
    """Wen et al. Table 1 (Thm 12, 13, 14): lim R_ρ/ρ² on Γ for the worst-direction (λ1/2),
    ascent-direction (λ_min/2, the smallest non-zero eigenvalue) and average-direction (Tr/(2D))
    sharpness, from the Hessian's eigenvalues at a point of Γ (D = their number)."""
    ev = np.asarray(eigenvalues, dtype=float)
    nonzero = ev[ev > 1e-9 * ev.max()]
    return {"max": ev.max() / 2, "asc": nonzero.min() / 2, "avg": ev.sum() / (2 * len(ev))}


def toy4d_flow(x_start, tau, w0, w1):
    """X(τ) of dX/dτ = −∇(w0·F0 + w1·F1)(X) on Γ = {y = 0} of the 4D toy, in closed form (each F_k is a
    separable quadratic): X_i(τ) = x*_i + (X_i(0) − x*_i)·e^{−2A_i τ}, A_i = w0·a_0i + w1·a_1i, x* the weighted
    argmin. Wen et al. eq. (6), dX/dτ = −½∇λ1 with λ1 = 2F0: (w0, w1) = (1, 0); eq. (8), −½∇Tr with
    Tr = 2(F0 + F1): (1, 1); τ = ηρ²t (Thm 8, Thm 11). ``tau`` of shape [N] gives [N, 2]."""
    (a0, b0, _, _), (a1, b1, _, _) = TOY4D_FACTORS
    target = np.array(toy4d_weighted_argmin(w0, w1))
    rates = 2 * np.array([w0 * a0 + w1 * a1, w0 * b0 + w1 * b1])
    tau = np.asarray(tau, dtype=float)[..., None]
    return target + (np.asarray(x_start, dtype=float) - target) * np.exp(-rates * tau)


def toy4d_projection(w, horizon: float = 8.0, dt: float = 0.01):
    """Φ(w) of Wen et al. (the end of gradient flow on L from w = (x0, x1, y0, y1), shape [..., 4]) on the
    4D toy, by RK4: ẋ = −(∇F0·y0² + ∇F1·y1²), ẏ_k = −2F_k·y_k. The normal rates 2F_k ≥ 2 make ‖y‖ shrink by
    e^{−2·horizon}; returns x at the end, shape [..., 2]."""

    def velocity(v):
        x, y = v[..., :2], v[..., 2:]
        grads = [2 * np.array([a, b]) * (x - c) for a, b, c, _ in TOY4D_FACTORS]  # ∇F_k(x)
        f = np.stack(toy4d_factors(x), axis=-1)
        return np.concatenate([-(grads[0] * y[..., :1] ** 2 + grads[1] * y[..., 1:] ** 2), -2 * f * y], axis=-1)

    v = np.asarray(w, dtype=float)
    for _ in range(int(round(horizon / dt))):
        k1 = velocity(v)
        k2 = velocity(v + dt / 2 * k1)
        k3 = velocity(v + dt / 2 * k2)
        k4 = velocity(v + dt * k3)
        v = v + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return v[..., :2]
