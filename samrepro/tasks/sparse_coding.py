"""Sparse coding with a threshold neuron (Ahn et al. 2023a, Fig. 1; Dai et al. §4, App. B.2).

Data (Ahn et al. eq. 1): x = λ·y·e_j + ξ with y uniform on {±1}, j uniform on [d], ξ ~ N(0, I_d).

Network (our reading of Ahn et al. eq. 2, whose text we could not retrieve; see results/CLAIMS.md,
"Settings the papers leave open"): the dictionary ±e_i is the fixed first layer, with one shared bias b,
and the second layer has two trained scalars a₊, a₋:

    f(x; a₋, a₊, b) = Σ_{i=1}^d [ a₊·ReLU(x_i + b) + a₋·ReLU(−x_i + b) ].

Why this reading: "threshold neurons" are neurons with a non-zero first-layer bias, and b is the only
first-layer parameter; a± ~ N(0, 1/(2d)) (with signs) is the usual output-weight init, and b = 0.
Averaging out the noise gives ℓ((a₊ + a₋)·d·h(b)), h(b) = E ReLU(ξ + b) increasing in b: Dai's
ℓ(xy), where a smaller y is a more negative b. Under the MEAN loss the direction a₊ = a₋ has
curvature d²/(4π) at b = 0, so GD's threshold 2/λ_max is Ahn et al.'s 8π/d² (``theory.
ahn_gd_threshold``); a summed loss would put it at 8π/(n·d²). With b = 0 the network is the linear
classifier (a₊ − a₋)/2·Σ_i x_i + (a₊ + a₋)/2·Σ_i |x_i| (test accuracy at best Φ(λ/√d) ≈ 58.4%); with
b < 0 each unit is a soft threshold that picks out the one large coordinate.

Loss: ``loss_mult`` · (1/n) Σ_k log(1 + e^{−y_k f(x_k)}). ``loss_mult`` = c maps Dai et al.'s (η, ρ),
given on an unstated loss scale, onto ours: USAM's ρ is not invariant to rescaling
the loss, so the loss is rescaled, never η alone.

Dead network: a test point on which every unit is off (|x_i| ≤ −b for all i, so f = 0, counted as an
error) is a dead point; ``dead_frac`` is their fraction, and a run whose last logged ``dead_frac``
exceeds ``dead_fraction`` is flagged ``dead`` in ``summary.json`` (:meth:`SparseCoding.flags`). A
dead network is a result, distinct from a non-finite divergence (status ``diverged``).

Speed: the sums over coordinates are evaluated exactly from counts and sums of sorted values. With
N₊ = #{x_i > −b}, S₊ their sum, N₋ = #{x_i < b}, S₋ their sum: R₊ = Σ ReLU(x_i + b) = S₊ + b·N₊ and
R₋ = Σ ReLU(−x_i + b) = b·N₋ − S₋, so f = a₊R₊ + a₋R₋, ∇f = (R₊, R₋, a₊N₊ + a₋N₋) in (a₊, a₋, b), with
ReLU′(0) = 0 (strict inequalities), and the only non-zero second derivatives off the kinks are
∂²f/∂a₊∂b = N₊, ∂²f/∂a₋∂b = N₋. The counts and sums of all samples for C biases come from one table
lookup per bias plus a short window of sorted values (:class:`SortedSamples`), not from O(C·n·d) work.
``loss`` keeps the dense form (the definition, used by autograd and the tests); ``loss_and_grad`` and
``metrics`` use the table form.

Batching: a configuration's bits do not depend on the batch it runs in. Every sum is over one
configuration's own entries (the Hessian too: no matrix product, whose rounding would depend on the
batch), and softplus and σ are ``samrepro.tasks.softplus`` / ``logistic`` (torch's own compute a tensor's
last entries by another formula).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from samrepro.config import require
from samrepro.optim import no_grad
from samrepro.tasks import Task, logistic, softplus


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


def network(a_plus: Tensor, a_minus: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """f(x) = Σ_i [a₊·ReLU(x_i + b) + a₋·ReLU(−x_i + b)] for every configuration: a±, b of shape [C],
    x of shape [n, d] → outputs [C, n] (dense; the definition)."""
    a_plus, a_minus, bias = (v[:, None, None] for v in (a_plus, a_minus, b))
    return (a_plus * F.relu(x + bias) + a_minus * F.relu(-x + bias)).sum(-1)


def by_units(a: Tensor, x: Tensor) -> Tensor:
    """a₊·x₊ + a₋·x₋ per configuration and sample: a [C, 2], x [C, 2, n] (index 1: the a₊ and a₋ units)."""
    return a[:, 0, None] * x[:, 0] + a[:, 1, None] * x[:, 1]


def is_dead(dead_frac: float, dead_fraction: float) -> bool:
    """A dead network: every unit is off on more than ``dead_fraction`` of the test points."""
    return dead_frac > dead_fraction


class SortedSamples:
    """Samples x [n, d] prepared to evaluate, for C biases b at once, R = Σ_i ReLU(b − z_i) and the
    active counts N = #{z_i < b} of every row z of [−x; x] (module docstring): row block 0 (z = −x)
    gives the a₊ units ReLU(x_i + b), block 1 (z = x) the a₋ units ReLU(−x_i + b).

    All 2n·d values are sorted once into one array V and cut into K bins at breakpoints g_1 < … < g_K
    taken from V. A table holds, per breakpoint and row, the count and the sum of the row's values
    below it. For a bias with g_j ≤ b < g_{j+1}, a row's N and Σ_{z_i<b} z_i are the table's entries at
    g_j plus those of the few values of V in [g_j, b): a window of V from g_j (the values after the
    bin are ≥ g_{j+1} > b, so the test z < b alone selects them). A call costs O(C·(rows + V's bin
    size)), with no per-row search."""

    def __init__(self, x: Tensor, table_entries: int = 1 << 22):
        self.n = x.shape[0]
        z = torch.cat([-x, x])
        rows, d = z.shape
        values, order = z.flatten().sort()
        row_of = order // d
        bins = max(1, min(values.numel() // 64, table_entries // rows))
        self.breaks = values[torch.linspace(0, values.numel() - 1, bins + 1, device=x.device).long()[1:-1]]
        starts = torch.searchsorted(values, self.breaks)  # first index of V at or above each breakpoint
        bin_of = torch.searchsorted(self.breaks, values, right=True)  # #{g_j ≤ V}
        ends = torch.cat([starts, starts.new_tensor([values.numel()])])
        self.width = int((ends - torch.cat([starts.new_zeros(1), starts])).max())
        cell = bin_of * rows + row_of
        count = torch.zeros(bins * rows, dtype=x.dtype, device=x.device).index_add_(0, cell, torch.ones_like(values))
        total = torch.zeros(bins * rows, dtype=x.dtype, device=x.device).index_add_(0, cell, values)
        # table[j] = per row, the count (sum) of values below g_j; table[0] (g_0 = −∞) = 0
        self.count_table = F.pad(count.view(bins, rows).cumsum(0), (0, 0, 1, 0))[:-1].contiguous()
        self.sum_table = F.pad(total.view(bins, rows).cumsum(0), (0, 0, 1, 0))[:-1].contiguous()
        self.starts = torch.cat([starts.new_zeros(1), starts])
        self.values = F.pad(values, (0, self.width), value=math.inf)
        self.row_of = F.pad(row_of, (0, self.width))
        self.offsets = torch.arange(self.width, device=x.device)

    def relu_sums(self, b: Tensor) -> tuple[Tensor, Tensor]:
        """For biases b of shape [C]: (R, N), each [C, 2, n], with N = #{z_i < b} (strict: a unit
        exactly at its kink is off, ReLU′(0) = 0) and R = Σ_{z_i < b} (b − z_i) = b·N − (sum of those
        z_i); index 0 of the second axis is (R₊, N₊), index 1 is (R₋, N₋)."""
        j = torch.searchsorted(self.breaks, b, right=True)  # g_j ≤ b < g_{j+1}
        window = self.starts.index_select(0, j)[:, None] + self.offsets  # [C, width]
        values = self.values.take(window)
        below = (values < b[:, None]).to(b.dtype)
        rows = self.row_of.take(window)
        count = self.count_table.index_select(0, j).scatter_add_(1, rows, below)  # [C, 2n]
        total = self.sum_table.index_select(0, j).scatter_add_(1, rows, below * values)
        r = b[:, None] * count - total
        return r.view(-1, 2, self.n), count.view(-1, 2, self.n)


class SparseCoding(Task):
    narrowable = True  # batch-invariant, nothing per configuration but the parameters
    metric_names = ("train_loss", "test_acc", "bias", "a_plus", "a_minus", "lambda_max", "dead_frac")

    def __init__(self, cfg: DictConfig, device: torch.device):
        x, y = sample(cfg.n_train, cfg.d, cfg.signal, cfg.data_seed)
        x_test, y_test = sample(cfg.n_test, cfg.d, cfg.signal, cfg.test_seed)
        self.x, self.y = x.to(device), y.to(device)
        self.train = SortedSamples(self.x)
        self.test, self.y_test = SortedSamples(x_test.to(device)), y_test.to(device)
        self.scale = float(cfg.loss_mult) / cfg.n_train
        self.init_std = math.sqrt(cfg.init_var if cfg.init_var is not None else 1.0 / (2 * cfg.d))
        self.dead_fraction = float(cfg.dead_fraction)
        self.device = device
        self.pairs = torch.triu_indices(3, 3, device=device)  # the entries (p ≤ q) of the symmetric 3×3 Hessian
        self.pair_of = torch.tensor([[0, 1, 2], [1, 3, 4], [2, 4, 5]], device=device)  # entry (p, q) → its pair

    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        """[a₊, a₋] ~ N(0, init_var) with their signs, from each configuration's seed, and b = 0
        (Ahn et al. Fig. 1)."""
        a = torch.stack(
            [torch.randn(2, generator=torch.Generator().manual_seed(s), dtype=self.dtype) for s in seeds]
        )
        return [
            (a * self.init_std).to(self.device).requires_grad_(),
            torch.zeros(len(seeds), 1, dtype=self.dtype, device=self.device).requires_grad_(),
        ]

    def loss(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False) -> Tensor:
        """loss_mult · mean over the training set of log(1 + e^{−y f(x)}), f by the dense definition."""
        a, b = params
        f = network(a[:, 0], a[:, 1], b[:, 0], self.x)
        return self.scale * softplus(-self.y * f).sum(1)

    @staticmethod
    def _outputs(params: Sequence[Tensor], data: SortedSamples) -> tuple[Tensor, Tensor, Tensor]:
        """(f [C, n], R, N [C, 2, n] of :meth:`SortedSamples.relu_sums`) by the sorted form:
        f = a₊R₊ + a₋R₋, ∇f = (R₊, R₋, a₊N₊ + a₋N₋)."""
        a, b = params
        r, n_active = data.relu_sums(b[:, 0])
        return by_units(a, r), r, n_active

    @no_grad
    def loss_and_grad(self, params: Sequence[Tensor], batch: object = None, perturbed: bool = False):
        """∇L = scale · Σ_k ℓ'(y_k f_k)·y_k·∇f_k with ℓ'(s) = −σ(−s), scale = loss_mult/n."""
        a = params[0]
        f, r, n_active = self._outputs(params, self.train)
        loss, slope, _ = logistic(-self.y * f)  # ℓ(m) = softplus(−m) and σ(−m) = −ℓ'(m), margins m = y·f
        weights = (-self.scale * slope * self.y)[:, None]  # [C, 1, n]
        grad_a = (weights * r).sum(2)
        n_weighted = (weights * n_active).sum(2)
        grad_b = by_units(a, n_weighted[:, :, None])  # [C, 1]
        return self.scale * loss.sum(1), [grad_a, grad_b]

    @torch.no_grad()
    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        """Training loss, test accuracy (f = 0 is an error), a±, b, the fraction of dead test points,
        and λ_max of the 3×3 Hessian, off the kinks
        ∇²L = scale · Σ_k [ℓ''(m_k) ∇f_k ∇f_kᵀ + ℓ'(m_k)·y_k·∇²f_k], m_k = y_k f_k, ℓ'' = σ(m)σ(−m),
        ∇²f_k zero except ∂²f/∂a±∂b = N±."""
        a, b = params
        f, r, n_active = self._outputs(params, self.train)
        loss, slope, rise = logistic(-self.y * f)  # ℓ(m), σ(−m) = −ℓ'(m), σ(m) at the margins m = y·f
        grad_f = torch.stack([r[:, 0], r[:, 1], by_units(a, n_active)], 1)  # [C, 3, n]
        curvature = rise * slope
        # Σ_k ℓ''·∇f_k∇f_kᵀ entry by entry, each a sum over the samples of one configuration (no matrix
        # product: its rounding would depend on the batch)
        p, q = self.pairs
        hessian = (curvature[:, None] * grad_f[:, p] * grad_f[:, q]).sum(2)[:, self.pair_of]  # [C, 3, 3]
        cross = ((-slope * self.y)[:, None] * n_active).sum(2)  # Σ ℓ'(m)·y·N±, [C, 2]
        hessian[:, :2, 2] += cross
        hessian[:, 2, :2] += cross
        f_test, _, n_test = self._outputs(params, self.test)
        return {
            "train_loss": self.scale * loss.sum(1),
            "test_acc": (self.y_test * f_test > 0).to(f.dtype).mean(1),
            "bias": b[:, 0].clone(),
            "a_plus": a[:, 0].clone(),
            "a_minus": a[:, 1].clone(),
            "lambda_max": torch.linalg.eigvalsh(self.scale * hessian)[:, -1],
            "dead_frac": (n_test.sum(1) == 0).to(f.dtype).mean(1),
        }

    def flags(self, final: dict[str, float]) -> dict[str, object]:
        """``dead``: the last logged ``dead_frac`` exceeds ``task.dead_fraction`` (:func:`is_dead`)."""
        return {"dead": is_dead(final["dead_frac"], self.dead_fraction)} if final else {}


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> SparseCoding:
    for key in ("d", "n_train", "n_test"):
        require(isinstance(cfg[key], int) and cfg[key] > 0, f"task.{key}", cfg[key], "must be an integer > 0")
    for key in ("data_seed", "test_seed"):
        require(isinstance(cfg[key], int), f"task.{key}", cfg[key], "must be an integer")
    number = (int, float)
    require(isinstance(cfg.signal, number) and cfg.signal >= 0, "task.signal", cfg.signal,
            "must be a number >= 0 (λ)")
    require(isinstance(cfg.loss_mult, number) and not isinstance(cfg.loss_mult, bool) and cfg.loss_mult > 0,
            "task.loss_mult", cfg.loss_mult, "must be a number > 0 (the loss is loss_mult times the mean)")
    require(cfg.init_var is None or (isinstance(cfg.init_var, number) and cfg.init_var >= 0),
            "task.init_var", cfg.init_var, "must be null (= 1/(2d)) or a number >= 0")
    fraction = cfg.dead_fraction
    require(isinstance(fraction, number) and not isinstance(fraction, bool) and 0 <= fraction < 1,
            "task.dead_fraction", fraction, "must be a number in [0, 1)")
    return SparseCoding(cfg, device)
