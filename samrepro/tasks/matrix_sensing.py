"""Over-parameterized matrix sensing (Dai et al. §1.1 and App. A, after Li–Ma–Zhang 2018).

Data (App. A), drawn once from ``data_seed`` and shared by every configuration of a batch:
  U* ∈ R^{d×r} with standard Gaussian entries, columns normalized to unit norm; X* = U*U*ᵀ;
  A_1, …, A_m ∈ R^{d×d} with standard Gaussian entries; b_i = ⟨A_i, X*⟩.
Trained: a full d×d factor U (over-parameterized), initialized from each run's ``seed``:
  gaussian    U0 = α·G/√d, G standard Gaussian (so E U0U0ᵀ = α²I)
  orthogonal  U0 = α·Q, Q Haar-orthogonal (Li–Ma–Zhang's αB; U0U0ᵀ = α²I exactly)
Training loss, with r_i = ⟨A_i, UUᵀ⟩ − b_i and c set by ``loss``:
  L(U) = c·Σ_i r_i²,  c = 1/(2m) (half_mean) | 1/m (mean) | 1/2 (half_sum)
  ∇L(U) = 2c·Σ_i r_i (A_i + A_iᵀ) U
Test loss: ‖UUᵀ − X*‖_F² (frobenius) or that divided by ‖X*‖_F² (relative).

The A_i are stored once, as one [m, d²] matrix, whatever the number C of configurations: the
residuals of all configurations are one matmul vec(UUᵀ)[C, d²] @ Aᵀ, and Σ_i r_i A_i is one more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.sharpness import top_eigenvalue
from samrepro.tasks import Task

LOSS_COEFFICIENTS = {"half_mean": lambda m: 0.5 / m, "mean": lambda m: 1.0 / m, "half_sum": lambda m: 0.5}
INITS = ("gaussian", "orthogonal")
TEST_LOSSES = ("frobenius", "relative")


class MatrixSensing(Task):
    def __init__(self, d: int, r: int, m: int, data_seed: int, loss: str, init: str, init_scale: float,
                 test_loss: str, sharpness_every: int, sharpness_iters: int, n_configs: int,
                 device: torch.device):
        generator = torch.Generator().manual_seed(data_seed)
        u_star = torch.randn(d, r, generator=generator, dtype=self.dtype)
        u_star /= torch.linalg.vector_norm(u_star, dim=0)
        self.x_star = (u_star @ u_star.T).to(device)
        # row i: vec A_i (row-major), one copy for all configurations
        self.sensing = torch.randn(m, d * d, generator=generator, dtype=self.dtype).to(device)
        self.targets = self.sensing @ self.x_star.reshape(-1)
        self.coefficient = LOSS_COEFFICIENTS[loss](m)
        self.test_scale = 1.0 / self.x_star.square().sum().item() if test_loss == "relative" else 1.0
        self.d, self.init, self.init_scale = d, init, init_scale
        self.data_seed = data_seed
        self.sharpness_every, self.sharpness_iters = sharpness_every, sharpness_iters
        self.n_configs, self.device = n_configs, device
        # λ_max's power iteration starts from the same vector in every configuration, so that a
        # configuration measures the same λ_max batched or alone.
        self.power_start = torch.randn(d, d, generator=generator, dtype=self.dtype).to(device)
        self.metric_names = ("train_loss", "test_loss") + (("lambda_max",) if sharpness_every else ())

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        factors = []
        for seed in seeds:
            g = torch.randn(self.d, self.d, generator=torch.Generator().manual_seed(seed), dtype=self.dtype)
            if self.init == "gaussian":
                factors.append(g / self.d**0.5)
            else:  # Haar-distributed orthogonal matrix: QR of a Gaussian, signs fixed by diag(R)
                q, r = torch.linalg.qr(g)
                factors.append(q * torch.sign(torch.diagonal(r)))
        return [(self.init_scale * torch.stack(factors)).to(self.device).requires_grad_()]

    def residuals(self, u: Tensor) -> Tensor:
        """r_i = ⟨A_i, UUᵀ⟩ − b_i for every configuration: shape [C, m]."""
        return (u @ u.mT).reshape(u.shape[0], -1) @ self.sensing.T - self.targets

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        return self.coefficient * self.residuals(params[0]).square().sum(1)

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """L = c·Σ r_i², ∇_U L = 2c·(G + Gᵀ)U with G = Σ_i r_i A_i (one matmul with the stacked A)."""
        (u,) = params
        residuals = self.residuals(u)
        weighted = (residuals @ self.sensing).reshape(u.shape)
        loss = self.coefficient * residuals.square().sum(1)
        return loss, [2 * self.coefficient * (weighted + weighted.mT) @ u]

    def test_loss(self, u: Tensor) -> Tensor:
        return self.test_scale * (u @ u.mT - self.x_star).square().sum((1, 2))

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        """train_loss, test_loss and (every ``sharpness_every`` steps, NaN at other logged steps)
        λ_max(∇²L) by ``sharpness_iters`` steps of power iteration on Hessian-vector products."""
        (u,) = params
        out = {"train_loss": self.loss(params), "test_loss": self.test_loss(u)}
        if self.sharpness_every:
            if step % self.sharpness_every == 0:
                with torch.enable_grad():
                    out["lambda_max"] = top_eigenvalue(self.loss, params, config_dim=True,
                                                       iters=self.sharpness_iters,
                                                       start=[self.power_start.expand_as(u)])
            else:
                out["lambda_max"] = torch.full((u.shape[0],), float("nan"), dtype=u.dtype)
        return out


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> MatrixSensing:
    def positive_int(key: str) -> int:
        value = cfg[key]
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0, f"task.{key}", value,
                "must be an integer > 0")
        return value

    d, r = positive_int("d"), positive_int("r")
    require(r <= d, "task.r", r, f"must be <= task.d = {d}")
    m = 5 * d * r if cfg.m is None else positive_int("m")
    require(cfg.loss in LOSS_COEFFICIENTS, "task.loss", cfg.loss, f"allowed: {', '.join(LOSS_COEFFICIENTS)}")
    require(cfg.init in INITS, "task.init", cfg.init, f"allowed: {', '.join(INITS)}")
    require(isinstance(cfg.init_scale, (int, float)) and cfg.init_scale > 0, "task.init_scale",
            cfg.init_scale, "must be a number > 0")
    require(cfg.test_loss in TEST_LOSSES, "task.test_loss", cfg.test_loss,
            f"allowed: {', '.join(TEST_LOSSES)}")
    require(isinstance(cfg.data_seed, int), "task.data_seed", cfg.data_seed, "must be an integer")
    every = cfg.sharpness_every
    require(isinstance(every, int) and every >= 0, "task.sharpness_every", every,
            "must be an integer >= 0 (0: no lambda_max column)")
    iters = positive_int("sharpness_iters")
    return MatrixSensing(d, r, m, cfg.data_seed, cfg.loss, cfg.init, float(cfg.init_scale), cfg.test_loss,
                         every, iters, n_configs, device)
