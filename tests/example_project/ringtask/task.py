"""The ring loss L(w) = (‖w‖² − 1)²/4 on w ∈ R²: a samrepro task defined outside samrepro.

Its minimizers form the unit circle. With r = ‖w‖, ∇L(w) = (r² − 1)·w is radial, so gradient descent, SAM
and USAM only ever change r: every run keeps the angle it starts at. The Hessian (r² − 1)·I + 2wwᵀ has
eigenvalues 3r² − 1 (radial) and r² − 1 (along the circle); on the circle λ_max = 2, so GD converges to it
for η < 1. SAM does not: its ascent point w + ρ·∇L/‖∇L‖ lies at radius r + ρ·sign(r − 1), always on the far
side of the circle, so each step pushes r back across it by about 2ηρ and SAM bounces around the circle.

Batched: the parameter is one [C, 2] tensor, a row per configuration of a sweep (``config_dim``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.tasks import Task


class Ring(Task):
    metric_names = ("loss", "radius", "angle", "lambda_max")

    def __init__(self, init_radius: float, n_configs: int, device: torch.device):
        self.init_radius, self.n_configs, self.device = init_radius, n_configs, device

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        """Radius ``init_radius``, at an angle drawn uniformly from each configuration's seed."""
        angles = torch.tensor([2 * math.pi * torch.rand(1, generator=torch.Generator().manual_seed(s)).item()
                               for s in seeds], dtype=self.dtype)
        w = self.init_radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        return [w.to(self.device).requires_grad_()]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        (w,) = params
        return (w.square().sum(1) - 1).square() / 4  # one loss per configuration: shape [C]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        (w,) = params
        r = torch.linalg.vector_norm(w, dim=1)
        return {"loss": self.loss(params), "radius": r, "angle": torch.atan2(w[:, 1], w[:, 0]),
                "lambda_max": 3 * r.square() - 1}


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> Ring:
    """The task of conf/task/ring.yaml: ``_target_: ringtask.task.build``."""
    radius = cfg.init_radius
    require(isinstance(radius, (int, float)) and radius > 0, "task.init_radius", radius, "must be a number > 0")
    return Ring(float(radius), n_configs, device)
