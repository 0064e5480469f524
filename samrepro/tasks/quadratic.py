"""Quadratic L(w) = ½ wᵀΛw with Λ = diag(λ1, …, λd) (Dai et al. Thm 1 / Thm 10, after Bartlett et al.)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.tasks import Task, float_list, repeat_param


class Quadratic(Task):
    narrowable = True  # batch-invariant, nothing per configuration but the parameters

    def __init__(self, eigenvalues: Sequence[float], init: Sequence[float], n_configs: int,
                 device: torch.device):
        self.eigenvalues = torch.tensor(eigenvalues, dtype=self.dtype, device=device)
        self.init = list(init)
        self.n_configs = n_configs
        self.device = device
        self.metric_names = ("loss", "w_norm") + tuple(f"w{i}" for i in range(len(init)))

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        return [repeat_param(self.init, self.n_configs, self.device)]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        (w,) = params
        return 0.5 * (self.eigenvalues * w.square()).sum(-1)

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """∇L(w) = Λw."""
        (w,) = params
        return self.loss(params), [self.eigenvalues * w]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        (w,) = params
        out = {"loss": self.loss(params), "w_norm": torch.linalg.vector_norm(w, dim=-1)}
        out.update({f"w{i}": w[:, i] for i in range(w.shape[1])})
        return out


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> Quadratic:
    eigenvalues = float_list(cfg, "eigenvalues")
    require(all(v >= 0 for v in eigenvalues), "task.eigenvalues", eigenvalues, "must be >= 0 (Λ is PSD)")
    init = float_list(cfg, "init", len(eigenvalues))
    return Quadratic(eigenvalues, init, n_configs, device)
