"""The single-neuron linear network L(x, y) = ℓ(xy) (Dai et al. eq. 5, §3.1, App. E).

ℓ is convex, even, 1-Lipschitz with ℓ''(0) = 1 (Assumptions A1–A3):
  logistic  ℓ(s) = ½ log(1 + e^{−2s}) + ½ log(1 + e^{2s})   (so ℓ'(s) = tanh s)
  sqrt      ℓ(s) = √(1 + s²)
  square    ℓ(s) = ½ s²: the scalar factorization ½(xy)² of Dai et al. Thm 2 / Thm 11
            (not 1-Lipschitz; it is the problem of §2.2, not of §3.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.tasks import Task, float_list, repeat_param, softplus

LOSSES = {  # name: (ℓ, ℓ')
    "logistic": (lambda s: 0.5 * (softplus(-2 * s) + softplus(2 * s)), torch.tanh),
    "sqrt": (lambda s: torch.sqrt(1 + s.square()), lambda s: s / torch.sqrt(1 + s.square())),
    "square": (lambda s: 0.5 * s.square(), lambda s: s),
}


class SingleNeuron(Task):
    narrowable = True  # batch-invariant, nothing per configuration but the parameters
    metric_names = ("loss", "x", "y")

    def __init__(self, loss: str, init: Sequence[float], n_configs: int, device: torch.device):
        self.ell, self.ell_prime = LOSSES[loss]
        self.init = list(init)
        self.n_configs = n_configs
        self.device = device

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        return [repeat_param(self.init, self.n_configs, self.device)]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        (xy,) = params
        return self.ell(xy[:, 0] * xy[:, 1])

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """Dai et al. eq. (6): ∇L(x, y) = ℓ'(xy)·(y, x)."""
        (xy,) = params
        s = xy.prod(1, keepdim=True)  # xy as a [C, 1] column (x·y exactly: 1·x·y)
        return self.ell(s).view(-1), [self.ell_prime(s) * xy.flip(-1)]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        (xy,) = params
        return {"loss": self.loss(params), "x": xy[:, 0], "y": xy[:, 1]}


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> SingleNeuron:
    require(cfg.loss in LOSSES, "task.loss", cfg.loss, f"allowed: {', '.join(LOSSES)}")
    init = float_list(cfg, "init", 2)
    require(all(math.isfinite(v) for v in init), "task.init", init, "must be finite")
    return SingleNeuron(cfg.loss, init, n_configs, device)
