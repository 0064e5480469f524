"""Sharpness measurements: Hessian spectra of small problems, top eigenvalue and trace of large ones.

All functions take ``loss_fn(params) -> losses`` (shape [C] with a configuration dimension) and
return one value per configuration.
  * small problems: the dense Hessian by torch.func (forward-over-reverse, vmapped over a basis);
  * large problems: Hessian-vector products by double backward, with power iteration for λ_max and
    Hutchinson's estimator for the trace.
"""

from __future__ import annotations

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
        return loss_fn([t.reshape(n, *s) for t, s in zip(parts, shapes)]).sum()

    grad = torch.func.grad(total_loss)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (flat,), (v,))[1]

    d = flat.shape[1]
    basis = torch.eye(d, dtype=flat.dtype, device=flat.device)[:, None, :].expand(d, n, d)
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


def hutchinson_trace(loss_fn: LossFn, params: Sequence[Tensor], *, config_dim: bool = True,
                     samples: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """Tr ∇²L ≈ mean of vᵀ∇²L v over Rademacher vectors v (Hutchinson's estimator)."""
    hvp = hvp_operator(loss_fn, params)
    total = 0.0
    for _ in range(samples):
        v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
        total = total + config_dot(v, hvp(v), config_dim)
    return (total / samples).detach()
