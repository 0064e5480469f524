"""Sparse coding with a threshold neuron (Ahn et al. 2023a, Fig. 1; Dai et al. §4, App. B.2).

Data (Ahn et al. eq. 1): x = λ·y·e_j + ξ with y uniform on {±1}, j uniform on [d], ξ ~ N(0, I_d).

Network (our reconstruction of Ahn et al. eq. 2, whose exact form is not available to us; see
REFERENCE.md): one hidden layer of 2d ReLU units that share two scalar weights a+, a− and one bias b,
output layer fixed at ±1,

    f(x) = Σ_i [ ReLU(a+·x_i + b) − ReLU(s·a−·x_i + b) ],      s = ``a_minus_sign`` (default −1).

With b = 0 and a+ = a− > 0 this is the linear classifier a·Σ_i x_i (test accuracy Φ(λ/√d) ≈ 58.4%);
with b < 0 each pair is a soft threshold of x_i, which picks out the one large coordinate. The loss
is logistic, ℓ(y f) = log(1 + e^{−y f}), averaged (``loss_reduction: mean``) or summed over the n
training samples. Under the mean, the Hessian at initialization is ≈ ¼·E[∇f ∇fᵀ] with
∇_{a±} f ≈ ±Σ_i ReLU(±x_i) ≈ ±d/√(2π), so λ_max ≈ d²/(4π) and GD's stability threshold is
2/λ_max ≈ 8π/d², Ahn et al.'s phase transition (``theory.ahn_gd_threshold``).

Scalars a± (not vectors in R^d): per-coordinate weights would give λ_max ≈ d/(4π), a threshold of
8π/d, inconsistent with Ahn et al.'s 8π/d². Init a± ~ N(0, ``init_var``) (default 1/(2d)), b = 0;
with ``init_abs`` (default) a± are taken as |N(0, init_var)|. Calibration: with independent signs,
half the draws have sign(a+) ≠ −s·sign(a−): both units then see the same half-line, f = ±(|a+| − |a−|)·
Σ_i ReLU(±x_i) carries no label information, and GD keeps a+ − a− fixed (accuracy 50% forever); with
both a± < 0 our GD runs ended with every unit switched off (f ≡ 0). Only a± > 0 starts from the
linear classifier Ahn et al. describe, so that is the default.

Speed: the sum over coordinates is evaluated exactly from each sample's sorted coordinates and their
prefix sums. For w ≠ 0, Σ_i ReLU(w·x_i + b) = w·S + b·N, where N counts and S sums the coordinates on
the active side of the threshold −b/w (found by binary search); ∂/∂w = S and ∂/∂b = N. A step then
costs O(C·n·log d) instead of O(C·n·d). ``loss`` keeps the dense form (the definition, used by
autograd and the tests); ``loss_and_grad`` and ``metrics`` use the sorted form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.tasks import Task

REDUCTIONS = ("mean", "sum")


def sample(
    n: int, d: int, signal: float, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """n samples (x [n, d], y [n]) of Ahn et al. eq. (1): x = λ·y·e_j + ξ, from their own generator."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen).to(dtype) * 2 - 1
    j = torch.randint(0, d, (n,), generator=gen)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    x[torch.arange(n), j] += signal * y
    return x, y


def network(a_plus: Tensor, a_minus: Tensor, b: Tensor, x: Tensor, a_minus_sign: float) -> Tensor:
    """f(x) = Σ_i [ReLU(a+·x_i + b) − ReLU(s·a−·x_i + b)] for every configuration: a±, b of shape [C],
    x of shape [n, d] → outputs [C, n] (dense; the definition)."""
    w_plus, w_minus, bias = (v[:, None, None] for v in (a_plus, a_minus_sign * a_minus, b))
    return (F.relu(w_plus * x + bias) - F.relu(w_minus * x + bias)).sum(-1)


class SortedSamples:
    """Samples x [n, d] stored as sorted coordinates and prefix sums, to evaluate Σ_i ReLU(w·x_i + b)
    and its derivatives for C configurations in O(C·n·log d) (module docstring)."""

    def __init__(self, x: Tensor):
        self.sorted = x.sort(dim=1).values.contiguous()
        self.prefix = F.pad(self.sorted.cumsum(1), (1, 0))  # prefix[:, k] = sum of the k smallest
        self.total = self.prefix[:, -1:]
        self.d = x.shape[1]

    def relu_sum(self, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For weights w, biases b of shape [C]: (Σ_i ReLU(w x_i + b), S = ∂/∂w, N = ∂/∂b), each [n, C].

        Active coordinates: x_i > −b/w for w > 0, x_i < −b/w for w < 0, all for w = 0 < b (none for
        w = 0 ≥ b). One binary search serves both signs: it counts x_i ≤ −b/w, which differs from
        #{x_i < −b/w} only when a coordinate equals the threshold exactly, where ReLU(w x_i + b) = 0
        (a kink; probability zero for Gaussian data)."""
        n = self.sorted.shape[0]
        positive, zero = w > 0, w == 0
        t = (-b / torch.where(zero, torch.ones_like(w), w)).expand(n, -1).contiguous()
        below = torch.searchsorted(self.sorted, t, right=True)  # #{x_i ≤ t}
        below_sum = self.prefix.gather(1, below)
        count = torch.where(positive, self.d - below, below).to(w.dtype)
        total = torch.where(positive, self.total - below_sum, below_sum)
        on = (b > 0).to(w.dtype)
        count = torch.where(zero, self.d * on, count)
        total = torch.where(zero, self.total * on, total)
        return w * total + b * count, total, count


class SparseCoding(Task):
    metric_names = ("train_loss", "test_acc", "bias", "a_plus", "a_minus", "lambda_max")

    def __init__(self, cfg: DictConfig, n_configs: int, device: torch.device):
        x, y = sample(cfg.n_train, cfg.d, cfg.signal, cfg.data_seed)
        x_test, y_test = sample(cfg.n_test, cfg.d, cfg.signal, cfg.test_seed)
        self.x, self.y = x.to(device), y.to(device)
        self.train = SortedSamples(self.x)
        self.test, self.y_test = SortedSamples(x_test.to(device)), y_test.to(device)
        self.sign = float(cfg.a_minus_sign)
        self.scale = 1.0 / cfg.n_train if cfg.loss_reduction == "mean" else 1.0
        self.init_std = math.sqrt(cfg.init_var if cfg.init_var is not None else 1.0 / (2 * cfg.d))
        self.init_abs = cfg.init_abs
        self.device = device

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        """[a+, a−] ~ N(0, init_var) (absolute values with ``init_abs``) from each configuration's seed,
        and b = 0 (Ahn et al. Fig. 1)."""
        a = (
            torch.stack(
                [torch.randn(2, generator=torch.Generator().manual_seed(s), dtype=self.dtype) for s in seeds]
            )
            * self.init_std
        )
        a = a.abs() if self.init_abs else a
        return [
            a.to(self.device).requires_grad_(),
            torch.zeros(len(seeds), 1, dtype=self.dtype, device=self.device).requires_grad_(),
        ]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        """Σ or mean over the training set of log(1 + e^{−y f(x)}), f by the dense definition."""
        a, b = params
        f = network(a[:, 0], a[:, 1], b[:, 0], self.x, self.sign)
        return self.scale * F.softplus(-self.y * f).sum(1)

    def _outputs(self, params: Sequence[Tensor], data: SortedSamples) -> tuple[Tensor, list[Tensor]]:
        """(f, [∂f/∂a+, ∂f/∂a−, ∂f/∂b]), each [n, C], by the sorted form."""
        a, b = params
        bias = b[:, 0]
        f_plus, s_plus, n_plus = data.relu_sum(a[:, 0], bias)
        f_minus, s_minus, n_minus = data.relu_sum(self.sign * a[:, 1], bias)
        return f_plus - f_minus, [s_plus, -self.sign * s_minus, n_plus - n_minus]

    @torch.no_grad()
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """∇L = scale · Σ_k ℓ'(y_k f_k)·y_k·∇f_k with ℓ'(s) = −σ(−s); ∇f by the sorted form."""
        f, grad_f = self._outputs(params, self.train)
        margin = self.y[:, None] * f
        weights = -self.scale * torch.sigmoid(-margin) * self.y[:, None]  # [n, C]
        grad_a, grad_b = (
            torch.stack([(weights * g).sum(0) for g in grads], 1) for grads in (grad_f[:2], grad_f[2:])
        )
        return self.scale * F.softplus(-margin).sum(0), [grad_a, grad_b]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        """Training loss, test accuracy on the held-out set, a±, b, and λ_max(∇²L): off the ReLU
        kinks ∇²L = scale · Σ_k ℓ''(y_k f_k) ∇f_k ∇f_kᵀ with ℓ'' = σ(s)σ(−s) (a 3×3 matrix)."""
        a, b = params
        f, grad_f = self._outputs(params, self.train)
        margin = self.y[:, None] * f
        curvature = torch.sigmoid(margin) * torch.sigmoid(-margin)
        grad_f = torch.stack(grad_f, -1)  # [n, C, 3]
        hessian = self.scale * torch.einsum("nc,ncp,ncq->cpq", curvature, grad_f, grad_f)
        f_test = self._outputs(params, self.test)[0]
        return {
            "train_loss": self.scale * F.softplus(-margin).sum(0),
            "test_acc": (self.y_test[:, None] * f_test > 0).to(f.dtype).mean(0),
            "bias": b[:, 0],
            "a_plus": a[:, 0],
            "a_minus": a[:, 1],
            "lambda_max": torch.linalg.eigvalsh(hessian)[:, -1],
        }


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> SparseCoding:
    for key in ("d", "n_train", "n_test"):
        require(isinstance(cfg[key], int) and cfg[key] > 0, f"task.{key}", cfg[key], "must be an integer > 0")
    for key in ("data_seed", "test_seed"):
        require(isinstance(cfg[key], int), f"task.{key}", cfg[key], "must be an integer")
    require(
        isinstance(cfg.signal, (int, float)) and cfg.signal >= 0,
        "task.signal",
        cfg.signal,
        "must be a number >= 0 (λ)",
    )
    require(cfg.a_minus_sign in (-1, 1), "task.a_minus_sign", cfg.a_minus_sign, "allowed: -1, 1")
    require(
        cfg.loss_reduction in REDUCTIONS,
        "task.loss_reduction",
        cfg.loss_reduction,
        f"allowed: {', '.join(REDUCTIONS)}",
    )
    require(
        cfg.init_var is None or (isinstance(cfg.init_var, (int, float)) and cfg.init_var >= 0),
        "task.init_var",
        cfg.init_var,
        "must be null (= 1/(2d)) or a number >= 0",
    )
    require(isinstance(cfg.init_abs, bool), "task.init_abs", cfg.init_abs, "allowed: true, false")
    return SparseCoding(cfg, n_configs, device)
