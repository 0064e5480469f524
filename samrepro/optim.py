"""GD, SAM, USAM and GD on the ascent-direction loss: one update formula with a switch.

With g = ∇L(w) on the current batch (DESIGN §4):

    GD         w ← w − η g
    SAM        w ← w − η ∇L(w + ρ g/‖g‖)               Dai et al. eq. (1), Wen et al. eq. (3)
    USAM       w ← w − η ∇L(w + ρ g)                   Dai et al. eq. (2): no normalization, no projection
    gd_ascent  w ← w − η ∇_w[L(w + ρ ∇L(w)/‖∇L(w)‖)]   GD on Wen et al.'s L^asc, eq. (2): the full
                                                      derivative, through the normalized gradient

SAM and USAM are the same step with and without the normalization (as in optax.contrib.sam); GD is
that step with ρ = 0, which skips the second gradient. ‖g‖ is the global L2 norm over all parameters.

Configurations can be batched: with ``config_dim=True`` every parameter has a leading dimension of
size C (one slice per configuration, C independent problems), ``loss_fn`` returns C losses, and
η, ρ and the normalization switch are per-configuration vectors. Norms are then taken per slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from samrepro.config import OPT_RULES as RULES

LossFn = Callable[[Sequence[Tensor], bool], Tensor]
"""``loss_fn(params, perturbed)`` → losses (shape [C], or a scalar when unbatched). ``perturbed``
tells the task the pass is at an ascent point, so BatchNorm statistics are not updated there."""
GradFn = Callable[[Sequence[Tensor], bool], tuple[Tensor, Sequence[Tensor]]]
"""``grad_fn(params, perturbed)`` → (detached losses, gradients): a closed form, or autograd."""


def autograd_loss_and_grad(loss_fn: LossFn, params: Sequence[Tensor], perturbed: bool):
    """(losses, ∇ of their sum) by autograd; configurations are independent, so the gradient of the
    sum is each configuration's own gradient."""
    loss = loss_fn(params, perturbed)
    return loss.detach(), torch.autograd.grad(loss.sum(), params)


def config_dot(a: Sequence[Tensor], b: Sequence[Tensor], config_dim: bool) -> Tensor:
    """Σ over all parameters of ⟨a, b⟩: shape [C] with a configuration dimension, else a scalar."""
    if config_dim:
        return torch.stack([(x * y).reshape(x.shape[0], -1).sum(1) for x, y in zip(a, b)]).sum(0)
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


class SAM:
    """The update rules of this module's docstring, applied in place to ``params``.

    Two ways to use it, as in davda54/sam:
      * ``step(loss_fn)`` does a whole update (1 gradient for GD, 2 for SAM/USAM, 2 + a
        Hessian-vector product for gd_ascent) and returns the losses at the current point;
      * ``ascend(grads)`` / ``descend(grads)`` split the SAM/USAM step around a user's own
        second forward-backward pass.

    Args:
        params: leaf tensors (``requires_grad=True``), updated in place.
        rules: one rule name, or one per configuration (gd, sam and usam can be mixed in one
            batch; gd_ascent cannot).
        lr, rho: floats, or sequences of one value per configuration.
        config_dim: parameters carry a leading configuration dimension (see module docstring).
        momentum, weight_decay: optional heavy-ball momentum and L2 weight decay on the base
            (descent) step only; weight decay never enters the perturbation.
        eps: added to ‖g‖ in the SAM normalization (as in public implementations).
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        rules: str | Sequence[str],
        lr: float | Sequence[float],
        rho: float | Sequence[float] = 0.0,
        *,
        config_dim: bool = False,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
    ):
        self.params = list(params)
        ref = self.params[0]
        n = ref.shape[0] if config_dim else 1
        rules = [rules] * n if isinstance(rules, str) else list(rules)
        for r in rules:
            if r not in RULES:
                raise ValueError(f"opt={r}: unknown optimizer; allowed: {', '.join(RULES)}")
        if "gd_ascent" in rules and len(set(rules)) > 1:
            raise ValueError("opt=gd_ascent cannot be batched with other optimizers")
        if len(rules) != n:
            raise ValueError(f"got {len(rules)} optimizer rules for {n} configurations")
        self.config_dim = config_dim
        self.ascent_loss = rules[0] == "gd_ascent"

        def vector(v: float | Sequence[float]) -> Tensor:
            t = torch.as_tensor(v, dtype=ref.dtype, device=ref.device).expand(n).clone()
            return t if config_dim else t.reshape(())

        self.lr = vector(lr)
        self.base_lr = self.lr.clone()
        self.rho = vector([0.0 if r == "gd" else float(v) for r, v in zip(rules, vector(rho).reshape(n).tolist())])
        self.normalize = vector([0.0 if r == "usam" else 1.0 for r in rules]) > 0
        self.eps = eps
        self.momentum = momentum
        self.weight_decay = weight_decay
        # Python-side facts decided once, so that no step needs a host sync to branch.
        self.perturbs = not self.ascent_loss and bool((self.rho > 0).any())
        # Per-parameter views of a per-configuration vector: [C] -> [C, 1, ..., 1].
        self._view_shapes = [(n,) + (1,) * (p.dim() - 1) if config_dim else () for p in self.params]
        # Buffers allocated once: the point w of the step, and the momentum buffer.
        self._w = [] if self.ascent_loss else [torch.empty_like(p) for p in self.params]
        self._momentum_buf = [torch.zeros_like(p) for p in self.params] if momentum else []
        self._at_ascent_point = False
        self.frozen: Tensor | None = None
        """Batched: a [C] bool tensor; a True slice is left as it is by ``descend`` (the trainer freezes
        configurations that diverged or finished, so their non-finite steps never spread)."""

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """What a resumed run needs: the parameters and the momentum buffers."""
        return {"params": [p.detach().clone() for p in self.params],
                "momentum_buf": [b.clone() for b in self._momentum_buf]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        torch._foreach_copy_(self.params, state["params"])
        if self._momentum_buf:
            torch._foreach_copy_(self._momentum_buf, state["momentum_buf"])

    # ------------------------------------------------------------------ helpers
    def per_config_views(self, v: Tensor) -> list[Tensor]:
        """Per-parameter views of a per-configuration vector: [C] -> [C, 1, ..., 1] for each parameter."""
        return [v.view(s) for s in self._view_shapes]

    def grad_norm(self, grads: Sequence[Tensor]) -> Tensor:
        """‖g‖: the global L2 norm over all parameters, per configuration when batched."""
        if self.config_dim:  # √ with derivative 0 at g = 0 (as the unbatched norm), for gd_ascent's double backward
            square = config_dot(grads, grads, True)
            return torch.where(square > 0, square, 1.0).sqrt().where(square > 0, 0.0)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))

    def _ascent_scale(self, grads: Sequence[Tensor]) -> Tensor:
        """The factor s with perturbation e = s·g: ρ/(‖g‖+ε) for SAM, ρ for USAM, 0 for GD."""
        denom = torch.where(self.normalize, self.grad_norm(grads) + self.eps, 1.0)
        return self.rho / denom

    # ------------------------------------------------------------------ the two halves
    @torch.no_grad()
    def ascend(self, grads: Sequence[Tensor]) -> None:
        """Remember w and move to the ascent point w + e(g) (in place)."""
        torch._foreach_copy_(self._w, self.params)
        torch._foreach_addcmul_(self.params, list(grads), self.per_config_views(self._ascent_scale(grads)))
        self._at_ascent_point = True

    @torch.no_grad()
    def descend(self, grads: Sequence[Tensor]) -> None:
        """w ← w − η·d from w (restored exactly after ``ascend``, not as w + e − e), where d is
        ``grads`` (+ weight decay · w), accumulated into the momentum buffer when momentum > 0."""
        if self._at_ascent_point:
            torch._foreach_copy_(self.params, self._w)
            self._at_ascent_point = False
        direction = list(grads)
        if self.weight_decay:
            direction = torch._foreach_add(direction, self.params, alpha=self.weight_decay)
        if self.momentum:
            torch._foreach_mul_(self._momentum_buf, self.momentum)
            torch._foreach_add_(self._momentum_buf, direction)
            direction = self._momentum_buf
        if self.frozen is not None:
            direction = [torch.where(f, 0.0, d) for f, d in zip(self.per_config_views(self.frozen), direction)]
        torch._foreach_addcmul_(self.params, direction, self.per_config_views(-self.lr))

    # ------------------------------------------------------------------ the whole step
    def step(self, loss_fn: LossFn, grad_fn: GradFn | None = None) -> Tensor:
        """One update; returns the (detached) losses at the point before the update.

        ``grad_fn`` gives (losses, gradients) in closed form where a task has one (much cheaper than
        autograd on tiny problems); by default the gradient of ``loss_fn`` is taken by autograd.
        """
        if self.ascent_loss:
            return self._step_ascent_loss(loss_fn)
        if grad_fn is None:
            grad_fn = partial(autograd_loss_and_grad, loss_fn)
        loss, grads = grad_fn(self.params, False)
        if self.perturbs:
            self.ascend(grads)
            grads = grad_fn(self.params, True)[1]
        self.descend(grads)
        return loss

    def _step_ascent_loss(self, loss_fn: LossFn) -> Tensor:
        """GD on L^asc(w) = L(w + ρ∇L(w)/‖∇L(w)‖) (Wen et al. eq. 2).

        The ascent point is built in the autograd graph, so the gradient includes the term through
        the normalized gradient: ∇L^asc = ∇L(w') + ρ/‖g‖ · H(I − n nᵀ)∇L(w'), n = g/‖g‖, computed
        by double backward (one Hessian-vector product).
        """
        loss = loss_fn(self.params, False)
        grads = torch.autograd.grad(loss.sum(), self.params, create_graph=True)
        scale = self.rho / (self.grad_norm(grads) + self.eps)
        ascent_point = [p + s * g for p, s, g in zip(self.params, self.per_config_views(scale), grads)]
        grads_asc = torch.autograd.grad(loss_fn(ascent_point, True).sum(), [*self.params, *ascent_point],
                                        allow_unused=True)
        if all(g is None for g in grads_asc[len(self.params):]):
            raise ValueError("gd_ascent: loss_fn ignores the parameters it is passed, so its gradient would be "
                             "GD's; evaluate the model at them, e.g. torch.func.functional_call(model, "
                             "dict(zip(names, params)), x)")
        self.descend(grads_asc[:len(self.params)])
        return loss.detach()
