"""GD, SAM, USAM and GD on the ascent-direction loss: one update formula with a switch.

With g = ∇L(w) on the current batch:

    GD         w ← w − η g
    SAM        w ← w − η ∇L(w + ρ g/‖g‖)               Dai et al. eq. (1), Wen et al. eq. (3)
    USAM       w ← w − η ∇L(w + ρ g)                   Dai et al. eq. (2): no normalization, no projection
    gd_ascent  w ← w − η ∇_w[L(w + ρ ∇L(w)/‖∇L(w)‖)]   GD on Wen et al.'s L^asc, eq. (2): the full
                                                      derivative, through the normalized gradient

SAM and USAM are the same step with and without the normalization (as in optax.contrib.sam); GD is
that step with ρ = 0, which skips the second gradient. ‖g‖ is the global L2 norm over all parameters.

Two optimizers apply it: ``SAM`` (all four rules, batched over configurations; the trainer's) and
``SAMOptimizer`` (SAM/USAM around any ``torch.optim`` base optimizer, for one configuration, as in
davda54/sam). Both build the perturbation e = s·g with s = ρ/(‖g‖+ε) or ρ: ``SAMOptimizer`` from
``global_grad_norm`` and ``ascent_scale``, ``SAM.ascend`` in fewer ops without a graph (``_ascent_scale``,
tested bit for bit against them), gd_ascent through the graph-safe ``global_grad_norm``.

Configurations can be batched: with ``config_dim=True`` every parameter has a leading dimension of
size C (one slice per configuration, C independent problems), ``loss_fn`` returns C losses, and
η, ρ and the normalization switch are per-configuration vectors. Norms are then taken per slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial, wraps

import torch
from torch import Tensor

from samrepro.config import OPT_RULES as RULES

LossFn = Callable[[Sequence[Tensor], bool], Tensor]
"""``loss_fn(params, perturbed)`` → losses (shape [C], or a scalar when unbatched). ``perturbed``
tells the task the pass is at an ascent point, so BatchNorm statistics are not updated there."""
GradFn = Callable[[Sequence[Tensor], bool], tuple[Tensor, Sequence[Tensor]]]
"""``grad_fn(params, perturbed)`` → (detached losses, gradients): a closed form, or autograd."""


def no_grad(fn: Callable) -> Callable:
    """``@torch.no_grad()`` at a fraction of its per-call cost (≈ 0.6 µs rather than 3 µs on a CPU): a step
    of a tiny task calls several such functions, and each call is a share of the step's cost."""
    @wraps(fn)
    def without_grad(*args, **kwargs):
        previous = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # what torch.no_grad itself calls, without its context objects
        try:
            return fn(*args, **kwargs)
        finally:
            torch._C._set_grad_enabled(previous)
    return without_grad


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


def global_grad_norm(grads: Sequence[Tensor], config_dim: bool = False) -> Tensor:
    """‖g‖: the global L2 norm over all parameters, per configuration when batched."""
    if config_dim:  # √ with derivative 0 at g = 0 (as the unbatched norm), for gd_ascent's double backward
        square = config_dot(grads, grads, True)
        return torch.where(square > 0, square, 1.0).sqrt().where(square > 0, 0.0)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))


def ascent_scale(grad_norm: Tensor, rho: float | Tensor, normalize: bool | Tensor, eps: float) -> Tensor:
    """The factor s with perturbation e = s·g: ρ/(‖g‖+ε) for SAM (Dai et al. eq. 1), ρ for USAM (eq. 2)."""
    normalize = torch.as_tensor(normalize, device=grad_norm.device)
    return rho / torch.where(normalize, grad_norm + eps, 1.0)


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
        self._decide_branches()
        self._one = torch.ones((), dtype=ref.dtype, device=ref.device)
        self._zero = torch.zeros((), dtype=ref.dtype, device=ref.device)
        # One parameter tensor on the CPU (the closed-form tasks): the step in single-tensor ops, each
        # the very kernel the foreach op runs there per tensor, and w − η·d written from w in one op.
        self._single = len(self.params) == 1 and ref.device.type == "cpu"
        self._views: dict[str, tuple[Tensor, list[Tensor]]] = {}
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

    def _decide_branches(self) -> None:
        """Python-side facts of the configurations' ρ and normalization, decided when they are set (here, and
        when the batch narrows), so that no step needs a host sync to branch."""
        self.perturbs = not self.ascent_loss and bool((self.rho > 0).any())  # else no second gradient
        self._normalizes = bool(self.normalize.any())  # else every s = ρ/1 = ρ: no ‖g‖ to take
        self._mixed = self._normalizes and not bool(self.normalize.all())  # SAM and USAM in one batch

    @torch.no_grad()
    def narrow(self, keep: Tensor) -> None:
        """Batched: keeps the configurations at positions ``keep`` only (the trainer drops those that ended),
        every per-configuration tensor cut alike; ``frozen`` is the caller's to set again."""
        self.params = [p.index_select(0, keep).requires_grad_(p.requires_grad) for p in self.params]
        self.lr, self.base_lr, self.rho, self.normalize = (
            v.index_select(0, keep) for v in (self.lr, self.base_lr, self.rho, self.normalize))
        self._w = [torch.empty_like(p) for p in self.params] if self._w else []
        self._momentum_buf = [b.index_select(0, keep) for b in self._momentum_buf]
        self._view_shapes = [(len(keep), *shape[1:]) for shape in self._view_shapes]
        self._views, self.frozen = {}, None
        self._decide_branches()  # e.g. only GD left: one gradient a step, as that batch alone

    # ------------------------------------------------------------------ helpers
    def per_config_views(self, v: Tensor) -> list[Tensor]:
        """Per-parameter views of a per-configuration vector: [C] -> [C, 1, ..., 1] for each parameter."""
        return [v.view(s) for s in self._view_shapes]

    def _views_of(self, name: str) -> list[Tensor]:
        """``per_config_views`` of the attribute ``name`` (lr, rho, frozen), made again only when the
        attribute is another tensor (``lr`` is rewritten in place by a schedule: its views follow)."""
        v = getattr(self, name)
        cached = self._views.get(name)
        if cached is None or cached[0] is not v:
            cached = self._views[name] = (v, self.per_config_views(v))
        return cached[1]

    def _ascent_scale(self, grads: Sequence[Tensor]) -> list[Tensor]:
        """Per parameter, ``ascent_scale(global_grad_norm(grads), ρ, normalize, ε)`` bit for bit, without a
        graph and in fewer ops: s = ρ/(‖g‖+ε) (SAM, Dai et al. eq. 1), ρ (USAM, eq. 2)."""
        if not self._normalizes:
            return self._views_of("rho")  # ρ/1 = ρ exactly
        rho, normalize = self.rho, self.normalize
        if not self.config_dim:
            norm = global_grad_norm(grads)
        else:
            if len(grads) == 1 and grads[0].dim() == 2:  # one [C, P] tensor: ‖g‖² straight in its [C, 1] view shape
                square = (grads[0] * grads[0]).sum(1, keepdim=True)
                rho, normalize = self._views_of("rho")[0], self._views_of("normalize")[0]
            else:
                square = config_dot(grads, grads, True)
            # global_grad_norm's √, 0 where ‖g‖² is 0 or NaN: ‖g‖² is ≥ +0 or NaN, so √ then NaN → 0
            norm = square.sqrt_().nan_to_num_(0.0, math.inf)
        d = norm.add_(self.eps)
        if self._mixed:
            d = torch.where(normalize, d, self._one)
        scale = torch.div(rho, d, out=d)
        return [scale] if rho is not self.rho else self.per_config_views(scale)

    @no_grad
    def ascend(self, grads: Sequence[Tensor]) -> None:
        """Remember w and move to the ascent point w + e(g) (in place): e = s·g with s = ρ/(‖g‖+ε) for
        SAM (Dai et al. eq. 1), ρ for USAM (eq. 2)."""
        grads = list(grads)
        scale = self._ascent_scale(grads)
        if self._single:
            self._w[0].copy_(self.params[0])
            self.params[0].addcmul_(grads[0], scale[0])
        else:
            torch._foreach_copy_(self._w, self.params)
            torch._foreach_addcmul_(self.params, grads, scale)
        self._at_ascent_point = True

    @no_grad
    def descend(self, grads: Sequence[Tensor]) -> None:
        """w ← w − η·d from w (restored exactly after ``ascend``, not as w + e − e), where d is
        ``grads`` (+ weight decay · w), accumulated into the momentum buffer when momentum > 0."""
        if self._single and not (self.momentum or self.weight_decay):
            (d,) = grads
            self._descend_single(d)
            return
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

    def _descend_single(self, d: Tensor) -> None:
        """``descend`` for one parameter tensor on the CPU, without momentum or weight decay, bit for bit:
        w − η·d as w + (−1·d)·η (the same product, d·(−η), negated exactly), from the saved w in one op;
        a frozen slice keeps w (w + (0·(−η)) = w + (−0) is w, bit for bit)."""
        (p,), lr = self.params, self._views_of("lr")[0]
        frozen = None if self.frozen is None else self._views_of("frozen")[0]
        if self._at_ascent_point:
            (w,) = self._w
            torch.addcmul(w, d, lr, value=-1, out=p)
            if frozen is not None:
                torch.where(frozen, w, p, out=p)
            self._at_ascent_point = False
        else:
            p.addcmul_(d if frozen is None else torch.where(frozen, self._zero, d), lr, value=-1)

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
        scale = self.rho / (global_grad_norm(grads, self.config_dim) + self.eps)
        ascent_point = [p + s * g for p, s, g in zip(self.params, self.per_config_views(scale), grads)]
        grads_asc = torch.autograd.grad(loss_fn(ascent_point, True).sum(), [*self.params, *ascent_point],
                                        allow_unused=True)
        if all(g is None for g in grads_asc[len(self.params):]):
            raise ValueError("gd_ascent: loss_fn ignores the parameters it is passed, so its gradient would be "
                             "GD's; evaluate the model at them, e.g. torch.func.functional_call(model, "
                             "dict(zip(names, params)), x)")
        self.descend(grads_asc[:len(self.params)])
        return loss.detach()


class SAMOptimizer(torch.optim.Optimizer):
    """SAM/USAM around a ``torch.optim`` base optimizer, for one configuration (the davda54/sam pattern).

    With g = ∇L(w): ``first_step`` moves to w + ρ g/(‖g‖+ε) (``normalize=True``, SAM, Dai et al. eq. 1)
    or w + ρ g (``normalize=False``, USAM, eq. 2), ‖g‖ the global L2 norm over all parameters;
    ``second_step`` restores w and lets the base optimizer step with the gradient taken there.
    ``step(closure)`` does both; the closure zeroes the gradients, runs forward and backward and
    returns the loss. Param groups (own ``rho``/``normalize`` allowed) are shared with the base
    optimizer, so LR schedulers and per-group settings reach it.

    ``perturb_eps`` is the ε above (named as in pytorch-optimizer, so that ``eps`` reaches e.g. Adam).
    """

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, rho: float = 0.05,
                 normalize: bool = True, perturb_eps: float = 1e-12, **base_kwargs):
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            given = getattr(base_optimizer, "__name__", f"<a {type(base_optimizer).__name__} instance>")
            raise ValueError(f"base_optimizer={given}: must be a torch.optim.Optimizer class, "
                             "e.g. torch.optim.SGD (the class, not an instance)")
        super().__init__(params, dict(rho=rho, normalize=normalize, **base_kwargs))
        self.perturb_eps = perturb_eps
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        clash = {"rho", "normalize"} & set(self.base_optimizer.defaults)
        if clash:
            raise ValueError(f"base_optimizer={base_optimizer.__name__}: its own setting {clash.pop()!r} would "
                             "share SAMOptimizer's param-group key; use another base optimizer")
        self.param_groups = self.base_optimizer.param_groups  # one list of groups: schedulers reach both
        self.defaults.update(self.base_optimizer.defaults)

    def add_param_group(self, param_group: dict) -> None:
        rho = param_group.get("rho", self.defaults["rho"])
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho >= 0:
            raise ValueError(f"rho={rho!r}: must be a number >= 0")
        super().add_param_group(param_group)

    def _params_with_grad(self, group: dict) -> list[Tensor]:
        return [p for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w in the state and move to the ascent point w + s·g (s from ``ascent_scale``)."""
        grads = [p.grad for group in self.param_groups for p in self._params_with_grad(group)]
        if grads:
            grad_norm = global_grad_norm(grads)
            for group in self.param_groups:
                scale = ascent_scale(grad_norm, group["rho"], group["normalize"], self.perturb_eps)
                for p in self._params_with_grad(group):
                    self.state[p]["w"] = p.clone()
                    p.add_(p.grad * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w (exactly, not as w + e − e) and take the base optimizer's step with the current
        gradient, the one at the ascent point."""
        for group in self.param_groups:
            for p in group["params"]:
                if "w" in self.state[p]:
                    p.copy_(self.state[p].pop("w"))
        self.base_optimizer.step()
        self._opt_called = True  # what torch's LR schedulers check for "optimizer.step() was called"
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        """closure (loss and g at w), first_step, closure (g at the ascent point), second_step; returns
        the loss at w. Unlike davda54/sam, do not run the first backward yourself: step does."""
        if closure is None:
            raise ValueError("closure=None: step needs a closure that zeroes the gradients, runs forward and "
                             "backward and returns the loss; or call first_step and second_step yourself")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step()
        closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        """torch's layout (the shared param groups, and w between the two steps) plus the base
        optimizer's state (momentum buffers, Adam moments, …) under ``base_state``."""
        return {**super().state_dict(), "base_state": self.base_optimizer.state_dict()["state"]}

    def load_state_dict(self, state_dict: dict) -> None:
        own = {k: v for k, v in state_dict.items() if k != "base_state"}
        super().load_state_dict(own)
        self.base_optimizer.load_state_dict({"state": state_dict["base_state"], "param_groups": own["param_groups"]})
        self.base_optimizer.param_groups = self.param_groups  # loading replaced the groups: share them again


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def disable_running_stats(model: torch.nn.Module) -> None:
    """Before the ascent-point pass: BatchNorm layers still normalize with the batch statistics but
    leave running_mean/var and num_batches_tracked as they are (even if the pass is non-finite).
    Each layer's own setting is saved; momentum is not touched."""
    for m in _batch_norms(model):
        if not hasattr(m, "backup_track_running_stats"):
            m.backup_track_running_stats = m.track_running_stats
        m.track_running_stats = False


def enable_running_stats(model: torch.nn.Module) -> None:
    """Undo ``disable_running_stats``: each BatchNorm layer gets back its own setting."""
    for m in _batch_norms(model):
        if hasattr(m, "backup_track_running_stats"):
            m.track_running_stats = m.backup_track_running_stats
            del m.backup_track_running_stats
