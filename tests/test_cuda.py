"""The CIFAR-10 task's CUDA path (bf16 autocast, channels_last, cudnn.benchmark, torch.compile) on the
generated CIFAR-10 copy: skipped without a CUDA GPU (``pytest -m cuda`` on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
from test_cifar10 import sam_step, task_cfg

from samrepro import tasks
from samrepro.optim import SAM

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("model", ["resnet18", "cnn_tanh", "fcn_relu"])
def test_a_sam_step_on_cuda_equals_the_cpu_step(cifar_root, model):
    """In float64, the logits too: in float32 the devices' convolution algorithms round differently (on an H200,
    ResNet-18's parameters after one step differed by up to 3.2e-5), and with the logits rounded to float32
    the float64 steps still differed by up to 1.4e-10."""
    cfg = task_cfg(cifar_root, model=model, width=8, subset=64, batch_size=64, bf16=False)  # one full batch
    cpu, cuda = (sam_step(tasks.build(cfg, 1, device), float64=True) for device in (CPU, CUDA))
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_batchnorm_statistics_come_from_the_first_pass_only_under_bf16(cifar_root):
    task = tasks.build(task_cfg(cifar_root, norm="batchnorm", width=8, subset=32, batch_size=32), 1, CUDA)
    assert task.autocast and task.train_x.is_contiguous(memory_format=torch.channels_last)
    batch = next(task.batches([0]))
    task.init_params([0])
    task.loss(task.params, batch)
    after_forward = {k: v.clone() for k, v in task.model.named_buffers()}
    sam_step(task, rho=0.5)  # re-initializes the model, then one forward + one perturbed forward
    after_sam = dict(task.model.named_buffers())
    assert all(torch.equal(after_forward[k], after_sam[k]) for k in after_sam)


def test_a_training_step_does_not_sync_with_the_host(cifar_root):
    task = tasks.build(task_cfg(cifar_root, width=8, subset=64, batch_size=32, augment=True), 1, CUDA)
    optimizer = SAM(task.init_params([0]), "sam", 0.1, 0.05)
    batches = task.batches([0])

    def step():
        batch = next(batches)
        return optimizer.step(lambda p, pert: task.loss(p, batch, pert),
                              lambda p, pert: task.loss_and_grad(p, batch, pert))

    step()  # warm-up: cudnn.benchmark picks its kernels, the allocator and the generator set up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("norm", ["groupnorm", "batchnorm"])
def test_compiled_sam_step_matches_the_eager_one(cifar_root, norm):
    """In float64 (test_cifar10 checks BatchNorm's on the CPU): in float32 the compiled BatchNorm rounds ~10³×
    worse than the eager one (README, "On CUDA")."""
    cfg = task_cfg(cifar_root, norm=norm, width=8, subset=32, batch_size=32, bf16=False)
    eager = sam_step(tasks.build(cfg, 1, CUDA), float64=True)
    cfg.compile = True
    compiled = sam_step(tasks.build(cfg, 1, CUDA), float64=True)
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
