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

Batching: the A_i are stored once, whatever the number C of configurations, and a configuration's
bits do not depend on C (nor on its place in the batch). Its products are never folded into one GEMM
with the others (a float64 GEMM row's rounding depends on how many rows the product has): each is a
batched product over the configuration dimension (one GEMV per configuration and block of A, in
shapes that do not depend on C), and every per-configuration slice a product writes starts 64 bytes
apart from its neighbour's (dimensions padded with zeros), so that every slice is aligned alike.
Since UUᵀ is symmetric, the A_i are stored packed over its upper triangle, which halves the work:
  P_i = (A_i + A_iᵀ) on j < k and 2·(A_i)_jj on the diagonal, x̃ = (UUᵀ)_{j≤k} with the diagonal halved,
  r_i = ⟨P_i, x̃⟩ − b_i = ⟨A_i, UUᵀ⟩ − b_i,   G + Gᵀ = Σ_i r_i (A_i + A_iᵀ) = unpack(Σ_i r_i P_i),
so ∇L(U) = 2c·unpack(Pᵀr)·U (the halving and doubling are exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.sharpness import top_eigenvalue
from samrepro.tasks import Task

LOSS_COEFFICIENTS = {"half_mean": lambda m: 0.5 / m, "mean": lambda m: 1.0 / m, "half_sum": lambda m: 0.5}
INITS = ("gaussian", "orthogonal")
TEST_LOSSES = ("frobenius", "relative")
ALIGN = 8  # float64 entries in 64 bytes: every configuration's slice of a product is a multiple of this
BLOCK_BYTES = 4 << 20  # rows of packed A per block of a product: a block stays in cache across the configurations


def round_up(n: int, multiple: int = ALIGN) -> int:
    return -(-n // multiple) * multiple


class MatrixSensing(Task):
    narrowable = True  # batch-invariant, nothing per configuration but the parameters

    def __init__(self, d: int, r: int, m: int, data_seed: int, loss: str, init: str, init_scale: float,
                 test_loss: str, sharpness_every: int, sharpness_iters: int, n_configs: int,
                 device: torch.device):
        generator = torch.Generator().manual_seed(data_seed)
        u_star = torch.randn(d, r, generator=generator, dtype=self.dtype)
        u_star /= torch.linalg.vector_norm(u_star, dim=0)
        self.x_star = (u_star @ u_star.T).to(device)
        # row i: vec A_i (row-major), one copy for all configurations
        sensing = torch.randn(m, d * d, generator=generator, dtype=self.dtype)
        self.sensing = sensing.to(device)
        self.targets = self.sensing @ self.x_star.reshape(-1)
        self.coefficient = LOSS_COEFFICIENTS[loss](m)
        self.test_scale = 1.0 / self.x_star.square().sum().item() if test_loss == "relative" else 1.0
        self.d, self.m, self.init, self.init_scale = d, m, init, init_scale
        self.data_seed = data_seed
        self.sharpness_every, self.sharpness_iters = sharpness_every, sharpness_iters
        self.n_configs, self.device = n_configs, device
        # λ_max's power iteration starts from the same vector in every configuration, so that a
        # configuration measures the same λ_max batched or alone.
        self.power_start = torch.randn(d, d, generator=generator, dtype=self.dtype).to(device)
        self.metric_names = ("train_loss", "test_loss") + (("lambda_max",) if sharpness_every else ())
        self._pack(sensing.view(m, d, d), device)

    def _pack(self, a: Tensor, device: torch.device) -> None:
        """The packed A_i of the module docstring, P [m', T'], and the maps between UUᵀ and its packed form.
        U is padded with zeros to [d', d'] (d' = d rounded up to a multiple of 4, so d'² is a multiple of ALIGN), m
        and T = d(d+1)/2 + 1 are rounded up to multiples of ALIGN with zero rows and columns (column T is
        zero: unpacking maps the padding of U to it), so that every per-configuration slice is aligned alike."""
        m, d = a.shape[0], self.d
        self.dp = round_up(d, 4)
        rows, cols = torch.triu_indices(d, d)
        t = rows.numel()
        self.mp, tp = round_up(m), round_up(t + 1)
        packed = torch.zeros(self.mp, tp, dtype=self.dtype)
        packed[:m, :t] = a[:, rows, cols] + a[:, cols, rows]  # the diagonal: 2·(A_i)_jj, exactly
        self.packed = packed.to(device)
        self.padded_targets = F.pad(self.targets, (0, self.mp - m))
        upper = torch.zeros(tp, dtype=torch.long)  # x̃ = vec(UUᵀ)[upper]·half; its padding: 0·(UUᵀ)_00
        upper[:t] = rows * self.dp + cols
        half = torch.zeros(tp, dtype=self.dtype)
        half[:t] = torch.where(rows == cols, 0.5, 1.0)
        unpack = torch.full((self.dp, self.dp), t, dtype=torch.long)
        unpack[rows, cols] = unpack[cols, rows] = torch.arange(t)
        self.upper, self.half, self.unpack = upper.to(device), half.to(device), unpack.reshape(-1).to(device)
        block = max(ALIGN, BLOCK_BYTES // (tp * packed.element_size()) // ALIGN * ALIGN)
        self.blocks = [(i, min(i + block, self.mp)) for i in range(0, self.mp, block)]

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

    def _padded(self, u: Tensor) -> Tensor:
        """U zero-padded to [C, d', d'] (U itself when d' = d)."""
        pad = self.dp - self.d
        return F.pad(u, (0, pad, 0, pad)) if pad else u

    def _residuals(self, padded: Tensor) -> Tensor:
        """r_i = ⟨P_i, x̃⟩ − b_i = ⟨A_i, UUᵀ⟩ − b_i, shape [C, m'] (zero beyond m), from U padded: per
        configuration and block of P, one [1, T'] × [T', rows] product."""
        n = padded.shape[0]
        packed_upper = ((padded @ padded.mT).reshape(n, -1).index_select(1, self.upper) * self.half)[:, None]
        parts = [torch.bmm(packed_upper, self.packed[i:j].T.expand(n, -1, -1)) for i, j in self.blocks]
        return (parts[0] if len(parts) == 1 else torch.cat(parts, 2))[:, 0] - self.padded_targets

    def residuals(self, u: Tensor) -> Tensor:
        """r_i = ⟨A_i, UUᵀ⟩ − b_i for every configuration: shape [C, m]."""
        return self._residuals(self._padded(u))[:, :self.m]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        """L(U) = c·Σ_i r_i²."""
        return self.coefficient * self._residuals(self._padded(params[0])).square().sum(1)

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """L = c·Σ r_i², ∇_U L = 2c·(G + Gᵀ)U with G = Σ_i r_i A_i, G + Gᵀ = unpack(Σ_i r_i P_i) (per
        configuration and block of P, one [1, rows] × [rows, T'] product)."""
        (u,) = params
        n, padded = u.shape[0], self._padded(u)
        residuals = self._residuals(padded)
        row = residuals[:, None]
        weighted = None
        for i, j in self.blocks:
            part = torch.bmm(row[:, :, i:j], self.packed[i:j].expand(n, -1, -1))
            weighted = part if weighted is None else weighted + part
        symmetric = weighted[:, 0].index_select(1, self.unpack).view(n, self.dp, self.dp)  # G + Gᵀ
        grad = (2 * self.coefficient * symmetric) @ padded
        if padded is not u:
            grad = grad[:, :self.d, :self.d].contiguous()
        return self.coefficient * residuals.square().sum(1), [grad]

    def test_loss(self, u: Tensor) -> Tensor:
        """‖UUᵀ − X*‖_F² (frobenius), or that divided by ‖X*‖_F² (relative)."""
        padded = self._padded(u)
        return self.test_scale * ((padded @ padded.mT)[:, :self.d, :self.d] - self.x_star).square().sum((1, 2))

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
