"""The 4D toy of Wen et al. Fig. 1: L(x, y) = F0(x)·y0² + F1(x)·y1², x, y ∈ R².

F0(x) = x0² + 6x1² + 8 and F1(x) = 4(1 − x0)² + (1 − x1)² + 1, defined once as ``theory.TOY4D_FACTORS``.
The zero-loss manifold is Γ = {y = 0}; there the Hessian is diag(0, 0, 2F0, 2F1) in the coordinates
(x0, x1, y0, y1), with 2F0 ≥ 16 > 12 ≥ 2F1 on [0, 1]². Limiting flows on Γ (Wen et al. Table 1, Thm 8,
Thm 11; ``theory.TOY4D_LIMITS``): full-batch SAM minimizes λ1 = 2F0 → x = (0, 0); GD on L^asc minimizes
the smallest non-zero eigenvalue 2F1 → (1, 1); SAM with batch size 1 minimizes the trace 2(F0 + F1)
→ (0.8, 1/7).

Batch size 1 (stochastic SAM, Wen et al. eq. 7) samples one of the per-example losses
L_0 = 2F0·y0², L_1 = 2F1·y1² (scaled by M = 2 so that their mean is L) per step and configuration.
A batch is a [C, 2] tensor of weights (w0, w1) with L_batch = w0·F0·y0² + w1·F1·y1²: (1, 1) is the
full batch, (2, 0) and (0, 2) the two examples.

Parameters: one [C, 4] tensor (x0, x1, y0, y1). Metrics at Φ(x) ≈ (x, 0) (the gradient-flow
projection onto Γ; the difference is O(‖y‖²)): λ_max = 2·max(F0, F1), λ_min = 2·min(F0, F1) (the
smallest non-zero eigenvalue), trace = 2(F0 + F1); and grad_v1_cos = |cos∠(∇L(w), v1(∇²L(w)))| at
the current point w, the alignment of Wen et al. Thm 8 (phase II: the angle is O(ρ)).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.tasks import Task, float_list, repeat_param
from samrepro.theory import TOY4D_FACTORS
from samrepro.theory import toy4d_factors as factors

SAMPLE_CHUNK = 4096  # example indices drawn per configuration at a time (one generator call per chunk)


def closed_form_hessian(w: Tensor, weights: Tensor | None = None) -> Tensor:
    """∇²L_batch at w = (x0, x1, y0, y1), shape [C, 4, 4] (weights as in the module docstring)."""
    x0, x1, y0, y1 = w.unbind(-1)
    a, b = (1.0, 1.0) if weights is None else weights.unbind(-1)
    f0, f1 = factors(w[..., :2])
    h = w.new_zeros(*w.shape, 4)
    h[..., 0, 0] = a * 2 * y0**2 + b * 8 * y1**2
    h[..., 1, 1] = a * 12 * y0**2 + b * 2 * y1**2
    h[..., 2, 2] = a * 2 * f0
    h[..., 3, 3] = b * 2 * f1
    cross = {(0, 2): a * 4 * x0 * y0, (1, 2): a * 24 * x1 * y0,
             (0, 3): -b * 16 * (1 - x0) * y1, (1, 3): -b * 4 * (1 - x1) * y1}
    for (i, j), v in cross.items():
        h[..., i, j] = v
        h[..., j, i] = v
    return h


class Toy4D(Task):
    metric_names = ("x0", "x1", "y0", "y1", "loss", "lambda_max", "lambda_min", "trace", "grad_v1_cos")

    @property
    def narrowable(self) -> bool:
        """Full batch: nothing per configuration but the parameters (batch size 1 draws per configuration)."""
        return self.batch_size == 2

    def __init__(self, x_init: Sequence[float], y_init: Sequence[float], batch_size: int, n_configs: int,
                 device: torch.device):
        self.init = [*x_init, *y_init]
        kw = {"dtype": self.dtype, "device": device}
        # F_k = a_k·u_2k² + b_k·u_2k+1² + e_k with u = (x0 − c0, x1 − c0, x0 − c1, x1 − c1) (theory.TOY4D_FACTORS);
        # ∂F/∂u = 2·u·(a0, b0, a1, b1).
        (a0, b0, c0, e0), (a1, b1, c1, e1) = TOY4D_FACTORS
        self._u_map = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], **kw)
        self._u_offset = torch.tensor([0.0 - c0, 0.0 - c0, 0.0 - c1, 0.0 - c1], **kw)
        self._y_map = torch.tensor([[0.0, 0], [0, 0], [1, 0], [0, 1]], **kw)
        self._weights = torch.tensor([a0, b0, a1, b1], **kw)
        self._offset = torch.tensor([e0, e1], **kw)
        self._du = 2 * self._weights
        self.batch_size = batch_size
        self.n_configs = n_configs
        self.device = device

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        return [repeat_param(self.init, self.n_configs, self.device)]

    def _factors_and_y(self, w: Tensor, batch: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """u = (x0 − c0, x1 − c0, x0 − c1, x1 − c1), F = (F0, F1), and the batch-weighted y and y² (few,
        vectorized ops, u and y by matrix products rather than slices, whose backward is costly under autograd
        (gd_ascent): the per-step cost of a tiny problem is its op count). u and y are exact (one non-zero
        term per entry); F = (a·u0² + b·u1²) + e is summed elementwise, not by a matrix product, whose
        rounding depends on the kernel the BLAS picks for C rows (batch-dependent on another machine's CPU): a
        configuration's bits are then the same in any batch."""
        u = torch.addmm(self._u_offset, w, self._u_map)
        f = (u.square() * self._weights).view(-1, 2, 2).sum(2) + self._offset
        y = w @ self._y_map
        yw = y if batch is None else y * batch
        return u, f, yw, y * yw

    def loss(self, params: Sequence[Tensor], batch: Tensor | None = None, perturbed: bool = False) -> Tensor:
        _, f, _, y2w = self._factors_and_y(params[0], batch)
        return (f * y2w).sum(1)

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: Tensor | None = None, perturbed: bool = False):
        """∇L_batch = (a·∂F0/∂x·y0² + b·∂F1/∂x·y1², a·2F0·y0, b·2F1·y1) with (a, b) the batch weights."""
        u, f, yw, y2w = self._factors_and_y(params[0], batch)
        parts = (u * self._du).view(-1, 2, 2) * y2w[:, :, None]  # rows (∂F0/∂x·a·y0², ∂F1/∂x·b·y1²)
        grad = torch.cat((parts[:, 0] + parts[:, 1], 2 * f * yw), dim=1)
        return (f * y2w).sum(1), [grad]

    def batches(self, seeds: Sequence[int]) -> Iterator[Tensor | None]:
        """Full batch: None forever. Batch size 1: per configuration, an example index drawn uniformly
        from its own seeded stream (independent of how configurations are batched together)."""
        if self.batch_size == 2:
            while True:
                yield None
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        while True:
            index = torch.stack([torch.randint(0, 2, (SAMPLE_CHUNK,), generator=g) for g in generators])
            chunk = torch.nn.functional.one_hot(index, 2).to(torch.float64).mul_(2).to(self.device)
            for t in range(SAMPLE_CHUNK):
                yield chunk[:, t]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        (w,) = params
        f0, f1 = factors(w[:, :2])
        _, (grad,) = self.loss_and_grad(params)
        _, vectors = torch.linalg.eigh(closed_form_hessian(w))  # the trainer never passes non-finite w
        top = vectors[..., -1]
        cos = (grad * top).sum(1).abs() / torch.linalg.vector_norm(grad, dim=1).clamp_min(1e-300)
        out = {k: w[:, i] for i, k in enumerate(("x0", "x1", "y0", "y1"))}
        out.update(loss=self.loss(params), lambda_max=2 * torch.maximum(f0, f1),
                   lambda_min=2 * torch.minimum(f0, f1), trace=2 * (f0 + f1), grad_v1_cos=cos)
        return out


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> Toy4D:
    x_init = float_list(cfg, "x_init", 2)
    y_init = float_list(cfg, "y_init", 2)
    require(all(math.isfinite(v) for v in x_init + y_init), "task.x_init/y_init", x_init + y_init,
            "must be finite")
    require(cfg.batch_size in (1, 2), "task.batch_size", cfg.batch_size,
            "allowed: 1 (stochastic SAM, one example per step) or 2 (full batch)")
    return Toy4D(x_init, y_init, cfg.batch_size, n_configs, device)
