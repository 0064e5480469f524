"""Sharpness measurements: Hessians of small problems, the top eigenvalue of large ones, and the
worst-, ascent- and average-direction sharpness of Wen et al. Table 1.

The Hessian functions take ``loss_fn(params) -> losses`` (shape [C] with a configuration dimension)
and return one value per configuration.
  * small problems: the dense Hessian by torch.func (forward-over-reverse, vmapped over a basis);
  * large problems: Hessian-vector products by double backward, with power iteration for λ_max along
    training runs (one fixed start vector for every configuration) and Lanczos for one-off
    measurements (exact once its iterations reach the parameter count).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from samrepro.optim import config_dot

LossFn = Callable[[Sequence[Tensor]], Tensor]


def dense_hessian(loss_fn: LossFn, params: Sequence[Tensor]) -> Tensor:
    """∇²L per configuration, shape [C, D, D], D = parameters per configuration (torch.func)."""
    shapes = [p.shape[1:] for p in params]
    sizes = [s.numel() for s in shapes]
    n = params[0].shape[0]
    flat = torch.cat([p.detach().reshape(n, -1) for p in params], dim=1)

    def total_loss(x: Tensor) -> Tensor:
        parts = torch.split(x, sizes, dim=1)
        return loss_fn([t.reshape(n, *s) for t, s in zip(parts, shapes, strict=True)]).sum()

    grad = torch.func.grad(total_loss)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (flat,), (v,))[1]

    d = flat.shape[1]
    basis = torch.eye(d, dtype=flat.dtype, device=flat.device)[:, None, :].expand(d, n, d)
    with warnings.catch_warnings():  # torch's forward AD loads its JVP decompositions with torch.jit.script,
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)  # and says so
        columns = torch.func.vmap(hvp)(basis)  # [D, C, D]: column j of every configuration's Hessian
    return columns.permute(1, 2, 0)


def hvp_operator(loss_fn: LossFn, params: Sequence[Tensor]) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """v ↦ ∇²L·v at ``params`` (per configuration), by double backward; the first backward is
    kept and reused by every product."""
    params = [p.detach().requires_grad_() for p in params]
    grads = torch.autograd.grad(loss_fn(params).sum(), params, create_graph=True)

    def hvp(v: Sequence[Tensor]) -> list[Tensor]:
        return list(torch.autograd.grad(grads, params, grad_outputs=list(v), retain_graph=True))

    return hvp


def _normalized(v: Sequence[Tensor], config_dim: bool) -> list[Tensor]:
    norm = config_dot(v, v, config_dim).sqrt().clamp_min(torch.finfo(v[0].dtype).tiny)
    return [x / (norm.view(-1, *([1] * (x.dim() - 1))) if config_dim else norm) for x in v]


def top_eigenvalue(loss_fn: LossFn, params: Sequence[Tensor], *, config_dim: bool = True, iters: int = 50,
                   generator: torch.Generator | None = None, start: Sequence[Tensor] | None = None) -> Tensor:
    """λ_max(∇²L) by power iteration on Hessian-vector products (the eigenvalue of largest
    magnitude; for the PSD-dominated Hessians measured here that is the top one). It starts from
    ``start`` (shaped like ``params``) when given, else from a Gaussian vector drawn from ``generator``."""
    hvp = hvp_operator(loss_fn, params)
    if start is None:
        start = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    v = _normalized(start, config_dim)
    eigenvalue = torch.zeros(())
    for _ in range(iters):
        hv = hvp(v)
        eigenvalue = config_dot(v, hv, config_dim)
        v = _normalized(hv, config_dim)
    return eigenvalue.detach()


def _flat_operator(loss_fn: LossFn, params: Sequence[Tensor], config_dim: bool):
    """The HVP as a map on flat vectors [C, D] (C = 1 without a configuration dimension)."""
    hvp = hvp_operator(loss_fn, params)
    shapes = [p.shape for p in params]
    n = params[0].shape[0] if config_dim else 1
    sizes = [p[0].numel() if config_dim else p.numel() for p in params]

    def op(q: Tensor) -> Tensor:
        parts = [t.reshape(s) for t, s in zip(torch.split(q, sizes, dim=1), shapes, strict=True)]
        return torch.cat([h.reshape(n, -1) for h in hvp(parts)], dim=1)

    return op, n, sum(sizes)


def lanczos_top_eigenvalue(loss_fn: LossFn, params: Sequence[Tensor], *, config_dim: bool = True,
                           iters: int = 30, generator: torch.Generator | None = None) -> Tensor:
    """λ_max(∇²L) (the largest algebraic eigenvalue) by Lanczos on Hessian-vector products, with full
    reorthogonalization, per configuration. k ≤ min(iters, D) products; converges much faster than
    power iteration when λ1 ≈ λ2 and never confuses a large negative eigenvalue with the top one."""
    op, n, d = _flat_operator(loss_fn, params, config_dim)
    ref = params[0]
    k = min(iters, d)
    q = torch.randn((n, d), generator=generator, dtype=ref.dtype).to(ref.device)
    q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
    basis, alphas, betas = [q], [], []
    tiny = torch.finfo(ref.dtype).tiny
    for j in range(k):
        w = op(basis[-1]).detach()
        alphas.append((w * basis[-1]).sum(1))
        if j == k - 1:
            break
        stacked = torch.stack(basis, dim=2)  # [C, D, j+1]
        for _ in range(2):  # full reorthogonalization, twice for numerical safety
            w = w - (stacked @ (stacked.transpose(1, 2) @ w[:, :, None]))[:, :, 0]
        beta = torch.linalg.vector_norm(w, dim=1)
        betas.append(beta)
        basis.append(w / beta.clamp_min(tiny)[:, None])  # β = 0: the Krylov space is invariant
    t = torch.diag_embed(torch.stack(alphas, 1))
    if betas:
        off = torch.diag_embed(torch.stack(betas, 1), offset=1)
        t = t + off + off.transpose(1, 2)
    top = torch.linalg.eigvalsh(t)[:, -1]
    return top if config_dim else top[0]


def optimize_on_sphere(f: Callable[[Tensor], Tensor], dim: int, *, maximize: bool, starts: int = 64,
                       iters: int = 300, lr: float = 0.05, dtype: torch.dtype = torch.float64,
                       generator: torch.Generator | None = None) -> Tensor:
    """max (or min) of f(u) over unit vectors u ∈ R^dim: Adam on u = z/‖z‖ from ``starts`` random
    starts (f maps [S, dim] → [S]); returns the best value found."""
    z = torch.randn((starts, dim), generator=generator, dtype=dtype).requires_grad_()
    opt = torch.optim.Adam([z], lr=lr)
    sign = -1.0 if maximize else 1.0
    for _ in range(iters):
        opt.zero_grad()
        (sign * f(z / z.norm(dim=1, keepdim=True))).sum().backward()
        opt.step()
    values = f(z / z.norm(dim=1, keepdim=True)).detach()  # f may itself need autograd (R^asc)
    return values.max() if maximize else values.min()


def worst_direction_sharpness(loss: Callable[[Tensor], Tensor], x: Tensor, rho: float, **kw) -> Tensor:
    """R^max_ρ(x) = max_{‖v‖≤1} L(x + ρv) − L(x) (Wen et al. eq. 1), maximized over the sphere
    (for ρ small and x near a minimizer the maximum is on it). ``loss`` maps [S, D] → [S]."""
    return optimize_on_sphere(lambda v: loss(x + rho * v), x.numel(), maximize=True, **kw) - loss(x[None])[0]


def ascent_direction_sharpness(loss: Callable[[Tensor], Tensor], x: Tensor, rho: float, radius: float,
                               **kw) -> Tensor:
    """inf over x′ = x + r·u, ‖u‖ = 1, of R^asc_ρ(x′) = L(x′ + ρ∇L(x′)/‖∇L(x′)‖) − L(x′) (Wen et al.
    eq. 2 and Definition 3: R^asc is undefined on Γ, its limiting regularizer is the infimum over
    nearby points). ``radius`` = r ≪ ρ."""

    def r_asc(u: Tensor) -> Tensor:
        xp = x + radius * u
        if not xp.requires_grad:
            xp = xp.detach().requires_grad_()
        lp = loss(xp)
        g = torch.autograd.grad(lp.sum(), xp, create_graph=True)[0]
        return loss(xp + rho * g / g.norm(dim=1, keepdim=True)) - lp

    return optimize_on_sphere(r_asc, x.numel(), maximize=False, **kw)


def average_direction_sharpness(loss: Callable[[Tensor], Tensor], x: Tensor, rho: float, samples: int = 20000,
                                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """R^avg_ρ(x) = E_{g~N(0,I)} L(x + ρg/‖g‖) − L(x) (Wen et al. Table 1), Monte Carlo with antithetic
    pairs ±v; returns (estimate, standard error)."""
    v = torch.randn((samples, x.numel()), generator=generator, dtype=x.dtype)
    v = v / v.norm(dim=1, keepdim=True)
    values = 0.5 * (loss(x + rho * v) + loss(x - rho * v)) - loss(x[None])[0]
    return values.mean(), values.std() / samples**0.5
