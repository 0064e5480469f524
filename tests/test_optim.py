"""The update rules against hand computations, finite differences and each other."""

import copy
import io
import math

import numpy as np
import pytest
import torch

from samrepro.optim import (
    SAM,
    SAMOptimizer,
    ascent_scale,
    autograd_loss_and_grad,
    disable_running_stats,
    enable_running_stats,
    global_grad_norm,
)
from samrepro.tasks.quadratic import Quadratic
from samrepro.tasks.single_neuron import LOSSES, SingleNeuron

CPU = torch.device("cpu")
LAM = np.array([3.0, 1.0, 0.5])
W0 = np.array([0.7, -1.2, 2.0])


def quadratic(n=1):
    return Quadratic(LAM.tolist(), W0.tolist(), n, CPU)


def one_step(rule, lr, rho, task=None, **kw):
    task = task or quadratic()
    opt = SAM(task.init_params([0]), rule, lr, rho, config_dim=True, **kw)
    opt.step(lambda p, pert: task.loss(p, None, pert), lambda p, pert: task.loss_and_grad(p, None, pert))
    return opt.params[0].detach().numpy()[0]


def test_gd_step_is_w_minus_lr_grad():
    assert np.allclose(one_step("gd", 0.1, 0.5), W0 - 0.1 * LAM * W0, rtol=0, atol=1e-13)


def test_sam_step_matches_hand_computation():
    g = LAM * W0
    ascent = W0 + 0.3 * g / np.linalg.norm(g)
    assert np.allclose(one_step("sam", 0.1, 0.3), W0 - 0.1 * LAM * ascent, rtol=0, atol=1e-13)


def test_usam_step_is_unnormalized_and_not_projected():
    g = LAM * W0
    ascent = W0 + 0.3 * g  # ‖0.3 g‖ ≈ 1.4 > ρ: no projection onto the ρ-ball
    assert np.linalg.norm(0.3 * g) > 0.3
    assert np.allclose(one_step("usam", 0.1, 0.3), W0 - 0.1 * LAM * ascent, rtol=0, atol=1e-13)


def test_sam_with_rho_zero_equals_gd_bit_for_bit_even_batched_with_rho_positive():
    task = quadratic(3)
    opt = SAM(task.init_params([0] * 3), ["gd", "sam", "sam"], 0.1, [0.0, 0.0, 0.2], config_dim=True)
    for _ in range(50):
        opt.step(lambda p, pert: task.loss(p, None, pert))
    w = opt.params[0].detach()
    assert torch.equal(w[0], w[1])
    assert not torch.equal(w[0], w[2])


def test_batched_configurations_equal_separate_runs():
    rules, lrs, rhos = ["gd", "sam", "usam"], [0.1, 0.2, 0.05], [0.0, 0.1, 0.3]
    batched = quadratic(3)
    opt = SAM(batched.init_params([0] * 3), rules, lrs, rhos, config_dim=True)
    for _ in range(20):
        opt.step(lambda p, pert: batched.loss(p, None, pert))
    for c in range(3):
        single = quadratic(1)
        o = SAM(single.init_params([0]), rules[c], lrs[c], rhos[c], config_dim=True)
        for _ in range(20):
            o.step(lambda p, pert: single.loss(p, None, pert))
        assert torch.allclose(o.params[0][0], opt.params[0][c], rtol=0, atol=1e-13)


def ascent_loss(w, rho):
    """L^asc(w) = L(w + ρ ∇L/‖∇L‖) for L(x, y) = ℓ(xy), symmetrized logistic ℓ, in numpy."""
    x, y = w
    g = np.tanh(x * y) * np.array([y, x])
    xa, ya = w + rho * g / np.linalg.norm(g)
    s = xa * ya
    return 0.5 * (np.logaddexp(0, -2 * s) + np.logaddexp(0, 2 * s))


def test_gd_ascent_follows_central_finite_differences_of_the_ascent_loss():
    w0, lr, rho, h = np.array([0.8, 1.3]), 0.1, 0.2, 1e-6
    fd = np.array([(ascent_loss(w0 + h * e, rho) - ascent_loss(w0 - h * e, rho)) / (2 * h) for e in np.eye(2)])
    task = SingleNeuron("logistic", w0.tolist(), 1, CPU)
    w1 = one_step("gd_ascent", lr, rho, task)
    assert np.allclose(w1, w0 - lr * fd, rtol=0, atol=1e-8)
    # the term through the normalized gradient matters: the step differs from SAM's
    assert not np.allclose(w1, one_step("sam", lr, rho, SingleNeuron("logistic", w0.tolist(), 1, CPU)), atol=1e-6)


def test_momentum_and_weight_decay_enter_the_base_step_only():
    lr, rho, mu, wd = 0.1, 0.3, 0.9, 0.01
    task = quadratic()
    opt = SAM(task.init_params([0]), "sam", lr, rho, config_dim=True, momentum=mu, weight_decay=wd)
    w, buf = W0.copy(), np.zeros(3)
    for _ in range(2):
        opt.step(lambda p, pert: task.loss(p, None, pert))
        g = LAM * w
        d = LAM * (w + rho * g / np.linalg.norm(g)) + wd * w  # no weight decay in the perturbation
        buf = mu * buf + d
        w = w - lr * buf
    assert np.allclose(opt.params[0].detach().numpy()[0], w, rtol=0, atol=1e-13)


def test_ascend_descend_split_equals_step():
    task = quadratic()
    ref = SAM(task.init_params([0]), "sam", 0.1, 0.3, config_dim=True)
    ref.step(lambda p, pert: task.loss(p, None, pert))
    split = SAM(task.init_params([0]), "sam", 0.1, 0.3, config_dim=True)
    _, g = autograd_loss_and_grad(lambda p, pert: task.loss(p), split.params, False)
    split.ascend(g)
    _, g2 = autograd_loss_and_grad(lambda p, pert: task.loss(p), split.params, True)
    split.descend(g2)
    assert torch.equal(ref.params[0], split.params[0])


def test_unbatched_parameters_use_the_global_norm():
    lam = torch.tensor([3.0, 1.0], dtype=torch.float64)
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    opt = SAM([a, b], "sam", 0.1, 0.2)
    opt.step(lambda p, pert: 0.5 * (lam * p[0] ** 2).sum() + p[1] ** 2)
    g = np.array([3.0, 2.0, 1.0])  # ∇ = (Λa, 2b)
    w = np.array([1.0, 2.0, 0.5]) + 0.2 * g / np.linalg.norm(g)
    expected = np.array([1.0, 2.0, 0.5]) - 0.1 * np.array([3 * w[0], w[1], 2 * w[2]])
    assert np.allclose([*a.detach().numpy(), b.item()], expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_single_neuron_closed_form_gradient_matches_autograd(loss):
    task = SingleNeuron(loss, [0.9, -1.7], 1, CPU)
    params = [torch.tensor([[0.9, -1.7], [2.0, 0.3]], dtype=torch.float64, requires_grad=True)]
    loss_cf, (g_cf,) = task.loss_and_grad(params)
    loss_ad, (g_ad,) = autograd_loss_and_grad(lambda p, pert: task.loss(p), params, False)
    assert torch.allclose(loss_cf, loss_ad) and torch.allclose(g_cf, g_ad, rtol=1e-12, atol=1e-14)


def test_logistic_loss_satisfies_assumptions_of_app_e():
    ell, ell_prime = LOSSES["logistic"]
    s = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    (d,) = torch.autograd.grad(ell(s).sum(), s, create_graph=True)
    (dd,) = torch.autograd.grad(d.sum(), s)
    assert torch.allclose(d, ell_prime(s)) and d.abs().max() <= 1  # 1-Lipschitz
    assert torch.allclose(ell(s), ell(-s))  # even
    assert abs(dd[50].item() - 1) < 1e-12  # ℓ''(0) = 1


def test_quadratic_closed_form_gradient_matches_autograd():
    task = quadratic(2)
    params = [torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()]
    _, (g_cf,) = task.loss_and_grad(params)
    _, (g_ad,) = autograd_loss_and_grad(lambda p, pert: task.loss(p), params, False)
    assert torch.allclose(g_cf, g_ad, rtol=0, atol=1e-13)


def test_unknown_rule_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="opt=adam: unknown optimizer; allowed: gd, sam, usam, gd_ascent"):
        SAM(quadratic().init_params([0]), "adam", 0.1, 0.1, config_dim=True)


def test_batched_gd_ascent_agrees_with_unbatched_at_a_stationary_point():
    """At g = 0 the normalized gradient's derivative is taken as 0 (the norm's subgradient), batched too."""
    batched = Quadratic(LAM.tolist(), [0.0, 0.0, 0.0], 2, CPU)
    opt = SAM(batched.init_params([0, 1]), "gd_ascent", 0.1, 0.05, config_dim=True)
    opt.step(lambda p, pert: batched.loss(p, None, pert))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    alone = SAM([w], "gd_ascent", 0.1, 0.05)
    alone.step(lambda p, pert: (0.5 * (torch.tensor(LAM) * p[0] ** 2).sum()).reshape(1))
    assert torch.equal(opt.params[0].detach(), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(w.detach(), torch.zeros(3, dtype=torch.float64))


def test_gd_ascent_refuses_a_loss_that_ignores_the_parameters_it_is_passed():
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    opt = SAM(list(model.parameters()), "gd_ascent", 0.1, 0.05)
    with pytest.raises(ValueError, match="ignores the parameters it is passed"):
        opt.step(lambda params, perturbed: torch.nn.functional.mse_loss(model(x), y).reshape(1))
    names = [n for n, _ in model.named_parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(lambda params, perturbed: torch.nn.functional.mse_loss(
        torch.func.functional_call(model, dict(zip(names, params)), (x,)), y).reshape(1))
    assert not torch.equal(before[0], model.weight.detach())


def test_a_frozen_configuration_is_left_as_it_is_even_with_a_non_finite_gradient():
    task = quadratic(2)
    opt = SAM(task.init_params([0, 0]), "sam", 0.1, 0.1, config_dim=True)
    opt.frozen = torch.tensor([False, True])
    before = opt.params[0].detach().clone()
    def nan_for_the_second(p, pert):
        return task.loss(p, None, pert).detach(), [torch.stack([p[0][0] * 0 + 1, p[0][1] * float("nan")])]

    opt.step(lambda p, pert: task.loss(p, None, pert), nan_for_the_second)
    after = opt.params[0].detach()
    assert torch.equal(after[1], before[1]) and not torch.equal(after[0], before[0]) and after.isfinite().all()


@pytest.mark.parametrize("rules", [["gd", "sam", "usam"] * 4, ["sam"] * 8, ["usam"] * 8, ["gd"] * 8])
def test_one_cpu_tensor_takes_single_tensor_ops_with_the_foreach_paths_bits(rules):
    """``SAM._single`` (one parameter tensor on the CPU: single-tensor ops, w − η·d written from the saved w in
    one op) gives the bits of the foreach path: mixed rules, configurations that overflow to inf and NaN,
    frozen slices (as the trainer freezes them) and η rewritten in place by a schedule."""
    n = len(rules)
    lrs, rhos = np.geomspace(0.002, 0.5, n).tolist(), np.geomspace(0.01, 3.0, n).tolist()
    finals = []
    for single in (True, False):
        task = SingleNeuron("square", [5.0, 7.0], n, CPU)
        opt = SAM(task.init_params([0] * n), rules, lrs, rhos, config_dim=True)
        assert opt._single
        opt._single = single
        opt.frozen = torch.zeros(n, dtype=torch.bool)
        losses = []
        for t in range(60):
            torch.mul(opt.base_lr, 0.99**t, out=opt.lr)
            loss = opt.step(lambda p, pert: task.loss(p, None, pert), lambda p, pert: task.loss_and_grad(p, None, pert))
            if t >= 20:  # the first 20 steps unfrozen: some slices go non-finite and stay in the batch
                opt.frozen.logical_or_(~(loss <= 1e30))
            if t == 30:  # and a finite one is frozen (as by ``until``)
                opt.frozen[0] = True
            losses.append(loss)
        finals.append((torch.stack(losses).numpy().tobytes(), opt.params[0].detach().numpy().tobytes()))
        w = opt.params[0].detach()
        assert not torch.stack(losses).isfinite().all() and w[0].isfinite().all() and not opt.frozen.all()
    assert finals[0] == finals[1]


@pytest.mark.parametrize("rules", [["sam"] * 8, ["usam"] * 8, ["gd", "sam", "usam", "sam"] * 2])
@pytest.mark.parametrize("shapes", [[(8, 2)], [(8, 1, 2)], [(8, 2), (8, 3)]])
def test_the_perturbation_scale_is_ascent_scale_of_the_global_norm_bit_for_bit(rules, shapes):
    """``SAM._ascent_scale`` (no graph, fewer ops) against ``ascent_scale(global_grad_norm(g), ρ, normalize, ε)``,
    with gradients that are 0, tiny, huge, inf and NaN."""
    column = torch.tensor([3.0, 0.0, math.nan, math.inf, 1e-200, -0.0, 1e200, -2.5], dtype=torch.float64)
    grads = [column.reshape(8, *([1] * (len(s) - 1))) * torch.linspace(0.5, 2, math.prod(s[1:]), dtype=torch.float64
                                                                        ).reshape(1, *s[1:]) for s in shapes]
    opt = SAM([torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes], rules, 0.1,
              np.geomspace(0.01, 2, 8).tolist(), config_dim=True)
    want = opt.per_config_views(ascent_scale(global_grad_norm(grads, True), opt.rho, opt.normalize, opt.eps))
    assert [g.numpy().tobytes() for g in opt._ascent_scale(grads)] == [w.numpy().tobytes() for w in want]
    alone = SAM([torch.zeros(3, dtype=torch.float64, requires_grad=True)], rules[2], 0.1, 0.3)  # unbatched
    g = [torch.tensor([3.0, 4.0, 1e-3], dtype=torch.float64)]
    want = ascent_scale(global_grad_norm(g), alone.rho, alone.normalize, alone.eps)
    assert torch.equal(alone._ascent_scale(g)[0], want)


def test_the_readme_own_loop_example_keeps_gd_ascent_and_batchnorm_right():
    """README's closure: the model at the given parameters, BatchNorm statistics from the first pass only,
    each layer's own momentum kept."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def train_step(rule):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=0.3), torch.nn.Linear(4, 1))
        names, params = zip(*model.named_parameters())
        opt = SAM(params, rule, lr=0.1, rho=0.05)
        def loss_fn(params, perturbed):
            (disable_running_stats if perturbed else enable_running_stats)(model)
            out = torch.func.functional_call(model, dict(zip(names, params)), (x,))
            return torch.nn.functional.mse_loss(out, y).reshape(1)

        opt.step(loss_fn)
        enable_running_stats(model)
        assert model[1].momentum == 0.3 and model[1].track_running_stats
        return model

    gd, sam, ascent = train_step("gd"), train_step("sam"), train_step("gd_ascent")
    assert not torch.equal(gd[0].weight, ascent[0].weight) and not torch.equal(sam[0].weight, ascent[0].weight)
    for model in (sam, ascent):  # statistics of the unperturbed batch only: the same as GD's single pass
        assert torch.equal(model[1].running_mean, gd[1].running_mean)
        assert torch.equal(model[1].running_var, gd[1].running_var)


# ---------------------------------------------------------------- SAMOptimizer (one configuration)

def quadratic_params():
    """Two parameter tensors of L = ½ Σ λ w² (LAM over [a, b]), so that ‖g‖ must be the global norm."""
    return [torch.tensor(W0[:2], requires_grad=True), torch.tensor(W0[2:], requires_grad=True)]


def quadratic_closure(opt, params):
    lam = torch.tensor(LAM)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (lam * torch.cat(params) ** 2).sum()
        loss.backward()
        return loss
    return closure


def sam_step_by_hand(w, lr, rho, normalize):
    g = LAM * w
    ascent = w + rho * (g / np.linalg.norm(g) if normalize else g)
    return w - lr * LAM * ascent


def tiny_mlp_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    return model, torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)


@pytest.mark.parametrize("normalize", [True, False])
def test_sam_optimizer_step_matches_hand_computation(normalize):
    params = quadratic_params()
    opt = SAMOptimizer(params, rho=0.3, normalize=normalize, lr=0.1)
    loss = opt.step(quadratic_closure(opt, params))
    assert loss.item() == pytest.approx(0.5 * (LAM * W0**2).sum(), abs=1e-14)  # the loss at w, not at w + e
    expected = sam_step_by_hand(W0, 0.1, 0.3, normalize)
    assert np.allclose(torch.cat(params).detach().numpy(), expected, rtol=0, atol=1e-13)


def test_param_groups_have_their_own_rho_and_normalize_with_one_global_norm():
    a, b = quadratic_params()
    opt = SAMOptimizer([{"params": [a]}, {"params": [b], "rho": 0.2, "normalize": False}], rho=0.3, lr=0.1)
    opt.step(quadratic_closure(opt, [a, b]))
    g = LAM * W0
    ascent = np.concatenate([W0[:2] + 0.3 * g[:2] / np.linalg.norm(g), W0[2:] + 0.2 * g[2:]])
    assert np.allclose(torch.cat([a, b]).detach().numpy(), W0 - 0.1 * LAM * ascent, rtol=0, atol=1e-13)


def test_a_param_group_added_later_reaches_the_base_optimizer_with_its_defaults():
    a, b = quadratic_params()
    opt = SAMOptimizer([a], rho=0.3, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [b], "rho": 0.2})
    with pytest.raises(ValueError, match=r"^rho=-1: must be a number >= 0$"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "rho": -1})
    assert len(opt.param_groups) == 2
    assert opt.base_optimizer.param_groups[1]["momentum"] == 0.9
    opt.step(quadratic_closure(opt, [a, b]))
    g = LAM * W0
    ascent = W0 + np.array([0.3, 0.3, 0.2]) * g / np.linalg.norm(g)
    assert np.allclose(torch.cat([a, b]).detach().numpy(), W0 - 0.1 * LAM * ascent, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rule, base_kwargs", [("sam", {}), ("usam", {}),
                                               ("sam", {"momentum": 0.9, "weight_decay": 0.01})])
def test_sam_optimizer_with_sgd_equals_the_batched_sam_class(rule, base_kwargs):
    """Same convention: torch SGD's buf ← μ·buf + d (buf = d at the first step), w ← w − η·buf, d = g + λw,
    and the batched SAM's buf ← μ·buf + d from buf = 0: equal, over several steps on a tiny MLP."""
    model, x, y = tiny_mlp_and_data()
    twin = copy.deepcopy(model)
    names, params = zip(*twin.named_parameters())
    batched = SAM(params, rule, lr=0.05, rho=0.1, **base_kwargs)
    opt = SAMOptimizer(model.parameters(), rho=0.1, normalize=rule == "sam", lr=0.05, **base_kwargs)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(5):
        loss = opt.step(closure)
        loss_batched = batched.step(lambda p, pert: torch.nn.functional.mse_loss(
            torch.func.functional_call(twin, dict(zip(names, p)), (x,)), y))
        assert loss.item() == pytest.approx(loss_batched.item(), abs=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-12)
    assert not torch.allclose(next(model.parameters()), next(tiny_mlp_and_data()[0].parameters()))


def test_sam_optimizer_with_adam_is_adam_on_the_gradient_at_the_ascent_point():
    params = quadratic_params()
    opt = SAMOptimizer(params, torch.optim.Adam, rho=0.3, lr=0.05, eps=0.1)  # eps goes to Adam
    w = torch.tensor(W0, requires_grad=True)
    adam = torch.optim.Adam([w], lr=0.05, eps=0.1)
    lam = torch.tensor(LAM)
    for _ in range(3):
        opt.step(quadratic_closure(opt, params))
        with torch.no_grad():
            g = lam * w
            w.grad = lam * (w + 0.3 * g / g.norm())
        adam.step()
        assert torch.allclose(torch.cat(params), w, rtol=0, atol=1e-13)


@pytest.mark.filterwarnings("error::UserWarning")  # no "lr_scheduler.step() before optimizer.step()"
@pytest.mark.parametrize("two_steps", [False, True])
def test_a_step_lr_scheduler_halves_the_step_the_base_optimizer_takes(two_steps):
    params = quadratic_params()
    opt = SAMOptimizer(params, rho=0.3, lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    closure = quadratic_closure(opt, params)
    if two_steps:
        closure()
        opt.first_step()
        closure()
        opt.second_step()
    else:
        opt.step(closure)
    w1 = torch.cat(params).detach().numpy().copy()
    assert np.allclose(w1, sam_step_by_hand(W0, 0.1, 0.3, True), rtol=0, atol=1e-13)
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.05
    opt.step(closure)
    assert np.allclose(torch.cat(params).detach().numpy(), sam_step_by_hand(w1, 0.05, 0.3, True), rtol=0, atol=1e-13)


def test_sam_optimizer_state_dict_round_trip_continues_identically():
    """Adam moments, the shared groups (lr, per-group rho) survive torch.save/load; the loaded groups
    are the base optimizer's (an lr set after loading reaches it)."""
    def make(lr, rho):
        a, b = quadratic_params()
        opt = SAMOptimizer([{"params": [a]}, {"params": [b], "rho": rho}], torch.optim.Adam, rho=rho, lr=lr)
        return opt, [a, b]

    opt, params = make(0.05, 0.3)
    for _ in range(3):
        opt.step(quadratic_closure(opt, params))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    saved = [p.detach().clone() for p in params]
    for _ in range(3):
        opt.step(quadratic_closure(opt, params))
    opt.param_groups[0]["lr"] = 0.01
    opt.step(quadratic_closure(opt, params))

    resumed, params2 = make(1.0, 0.0)
    with torch.no_grad():
        torch._foreach_copy_(params2, saved)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(3):
        resumed.step(quadratic_closure(resumed, params2))
    resumed.param_groups[0]["lr"] = 0.01
    resumed.step(quadratic_closure(resumed, params2))
    assert all(torch.equal(p, q) for p, q in zip(params, params2))
    assert resumed.base_optimizer.param_groups is resumed.param_groups


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": -0.1}, r"^rho=-0.1: must be a number >= 0$"),
    ({"base_optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)},
     r"^base_optimizer=<a SGD instance>: must be a torch.optim.Optimizer class"),
    ({"base_optimizer": torch.optim.Adadelta}, r"^base_optimizer=Adadelta: its own setting 'rho'"),
])
def test_sam_optimizer_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAMOptimizer(quadratic_params(), **{"lr": 0.1, **kwargs})


def test_sam_optimizer_step_without_a_closure_says_what_to_do():
    with pytest.raises(ValueError, match="closure=None: step needs a closure"):
        SAMOptimizer(quadratic_params(), lr=0.1).step()


def bn_model(momentum):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=momentum), torch.nn.Linear(4, 1))


def test_running_stats_helpers_freeze_batchnorm_and_give_back_its_own_momentum():
    model, x = bn_model(momentum=0.3), torch.randn(16, 3)
    bn, plain = model[1], copy.deepcopy(model)
    stats = [t.clone() for t in bn.buffers()]  # running_mean, running_var, num_batches_tracked
    disable_running_stats(model)
    disable_running_stats(model)  # twice: still restores the layer's own setting
    assert torch.equal(model(x), plain(x))  # still normalized by the batch statistics
    model(x * float("nan"))  # a non-finite ascent pass leaves no trace either
    assert all(torch.equal(a, b) for a, b in zip(bn.buffers(), stats))
    enable_running_stats(model)
    assert bn.momentum == 0.3 and bn.track_running_stats
    model(x)
    assert torch.allclose(bn.running_mean, 0.3 * model[0](x).mean(0)) and bn.num_batches_tracked == 1


def test_the_readme_sam_optimizer_examples_agree_and_the_two_step_one_keeps_batchnorm_right():
    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)), torch.randn(16, 1)

    def closure_form():
        model = bn_model(momentum=0.3)
        opt = SAMOptimizer(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        return model

    def two_step_form():
        model = bn_model(momentum=0.3)
        opt = SAMOptimizer(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        enable_running_stats(model)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.first_step(zero_grad=True)
        disable_running_stats(model)  # the ascent-point pass must not move BatchNorm statistics
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.second_step(zero_grad=True)
        return model

    once, a, b = bn_model(momentum=0.3), closure_form(), two_step_form()
    once(x)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, once[0].weight)
    assert torch.equal(b[1].running_mean, once[1].running_mean)  # one pass's statistics only
    assert not torch.equal(a[1].running_mean, once[1].running_mean)  # the closure form updates them twice


def test_a_narrowed_batch_steps_as_the_same_configurations_alone():
    """``SAM.narrow`` decides its branches again: once the SAM configuration has left, the GD one is stepped with
    one gradient (as alone), and its next step is bit for bit the one it takes alone."""
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    batch = SAM([w.clone().requires_grad_()], ["gd", "sam"], [0.1, 0.1], [0.0, 0.5], config_dim=True)
    batch.narrow(torch.tensor([0]))
    alone = SAM([w[:1].clone().requires_grad_()], ["gd"], [0.1], [0.0], config_dim=True)
    assert batch.perturbs is alone.perturbs is False
    calls = []

    def loss(p, perturbed):
        calls.append(perturbed)
        return (p[0] ** 2).sum(1)

    batch.step(loss)
    alone.step(loss)
    assert calls == [False, False] and torch.equal(batch.params[0], alone.params[0])
