"""Time one SGD step and one SAM step, ours and pytorch-optimizer's, in one run.

    python scripts/bench_step.py [--device auto|cpu|cuda] [--batch N] [--steps N] [--warmup 5]
                                 [--models resnet18 cnn_tanh fcn_relu] [--channels-last|--contiguous]
                                 [--bf16|--fp32] [--compile]
    python scripts/bench_step.py --models fcn_relu --batch 8 --steps 2 --repeats 1   # a smoke run: seconds

For each model (CIFAR-10 shapes, random data generated on the device: no dataset is read; the step does
not depend on the values) it reports ms per step and images/s of
  * our GD step (``samrepro.optim.SAM`` with opt=gd) and our SAM step (opt=sam, ρ = 0.05), both through
    the cifar10 task's ``loss_and_grad`` as the trainer calls them;
  * torch.optim.SGD and pytorch-optimizer's SAM (``first_step``/``second_step`` around two backward
    passes) on the same model, the same forward, when pytorch-optimizer is installed
    (``pip install -e ".[bench]"``; without it these rows are skipped, and the script says so);
and the ratio SAM / (2 × SGD) for both (the floor is 1.0: a SAM step is two forward-backward passes).
Defaults by device: on CUDA resnet18, cnn_tanh and fcn_relu at batch 128, 30 timed steps; on a CPU
fcn_relu and cnn_tanh at batch 32, 10 timed steps (resnet18 with ``--models resnet18``: seconds a step).
The forward: channels_last or contiguous memory format, bf16 autocast or float32 (CUDA; the CPU runs
float32 contiguous), optionally torch.compile'd (both SAM passes). Each row is printed as it is measured.
Timing: ``--warmup`` untimed steps, then ``--steps`` steps between two device synchronizations
(CUDA events on a GPU); the median of ``--repeats`` such blocks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and samrepro are imported after parsing: --help needs neither
    import torch

    from samrepro.tasks.cifar10 import CIFAR10Task

LR, RHO = 0.01, 0.05
MODELS = {"cuda": ["resnet18", "cnn_tanh", "fcn_relu"], "cpu": ["fcn_relu", "cnn_tanh"]}
BATCH = {"cuda": 128, "cpu": 32}
STEPS = {"cuda": 30, "cpu": 10}


def seconds_per_step(
    step: Callable[[], object], device: torch.device, steps: int, warmup: int, repeats: int
) -> float:
    import torch

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(steps):
                step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000 / steps)
        else:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def make_task(model: str, batch: int, device: torch.device, compile: bool, bf16: bool,
              channels_last: bool) -> CIFAR10Task:
    import torch

    from samrepro.tasks.cifar10 import CIFAR10Task, model_maker

    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    make, keys = model_maker(model, None, "groupnorm")
    return CIFAR10Task(
        x,
        y,
        x,
        y,
        model=make,
        model_keys=keys,
        loss="ce",
        batch_size=batch,
        chunk_size=batch,
        augment=False,
        init="scratch",
        bf16=bf16,
        compile=compile,
        lambda_max_batch=0,
        device=device,
        channels_last=channels_last,
    )


def ours(task: CIFAR10Task, rule: str) -> Callable[[], object]:
    from samrepro.optim import SAM

    optimizer = SAM(task.init_params([0]), rule, LR, RHO)
    batch = (task.train_x, task.train_y)
    return lambda: optimizer.step(
        lambda p, perturbed: task.loss(p, batch, perturbed),
        lambda p, perturbed: task.loss_and_grad(p, batch, perturbed),
    )


def peer(task: CIFAR10Task, peer_sam: type | None) -> Callable[[], object]:
    """torch.optim.SGD (``peer_sam`` None), or pytorch-optimizer's SAM with SGD as its base optimizer, on
    the task's model."""
    import torch

    params = task.init_params([0])
    x, y = task.train_x, task.train_y

    def backward() -> None:
        task.loss(params, (x, y)).sum().backward()

    if peer_sam is None:
        sgd = torch.optim.SGD(params, lr=LR)

        def sgd_step() -> None:
            backward()
            sgd.step()
            sgd.zero_grad()

        return sgd_step
    optimizer = peer_sam(params, torch.optim.SGD, rho=RHO, lr=LR)

    def sam_step() -> None:
        backward()
        optimizer.first_step(zero_grad=True)
        backward()
        optimizer.second_step(zero_grad=True)

    return sam_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch", type=int, help="images per step (default: 128 on CUDA, 32 on a CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per block (default: 30 on CUDA, 10 on a CPU)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; their median is reported")
    parser.add_argument("--models", nargs="+", choices=MODELS["cuda"],
                        help="default: all three on CUDA, fcn_relu cnn_tanh on a CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (both SAM passes)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--channels-last", dest="channels_last", action="store_true", default=True,
                     help="channels_last memory format on CUDA (default)")
    fmt.add_argument("--contiguous", dest="channels_last", action="store_false", help="contiguous memory format")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", dest="bf16", action="store_true", default=True,
                           help="bf16 autocast on CUDA (default)")
    precision.add_argument("--fp32", dest="bf16", action="store_false", help="float32")
    args = parser.parse_args()
    for key in ("batch", "steps", "repeats"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key} {getattr(args, key)}: must be an integer > 0")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: must be an integer >= 0")

    import torch

    from samrepro.config import ConfigError
    from samrepro.runner import resolve_device

    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        parser.error(str(err))
    cuda = device.type == "cuda"
    models, batch = args.models or MODELS[device.type], args.batch or BATCH[device.type]
    steps = args.steps or STEPS[device.type]
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    layout = "channels_last" if args.channels_last else "contiguous"
    setting = f"{'bf16 autocast' if args.bf16 else 'float32'}, {layout}" if cuda else "float32, contiguous"
    print(f"device: {name}; batch {batch}; {steps} timed steps × {args.repeats} after {args.warmup} "
          f"warm-up; {setting}{', torch.compile' if args.compile else ''}")
    pairs = [("samrepro", partial(ours, rule="gd"), partial(ours, rule="sam"))]
    try:
        from pytorch_optimizer import SAM as PeerSAM
        pairs.append(("pytorch-optimizer", partial(peer, peer_sam=None), partial(peer, peer_sam=PeerSAM)))
    except ImportError:
        print('pytorch-optimizer is not installed: its rows are skipped (pip install -e ".[bench]")')
    print(f"{'model':<9} {'optimizer':<34} {'ms/step':>9} {'images/s':>10} {'SAM/(2×SGD)':>12}", flush=True)
    for model in models:
        task = make_task(model, batch, device, args.compile, args.bf16, args.channels_last)
        # each step function gets a fresh model (built when it is timed), so that it runs on its own tensors
        for label, make_sgd, make_sam in pairs:
            t_sgd = seconds_per_step(make_sgd(task), device, steps, args.warmup, args.repeats)
            base = "GD step" if label == "samrepro" else "torch.optim.SGD"
            print(f"{model:<9} {label + ' ' + base:<34} {1e3 * t_sgd:9.2f} {batch / t_sgd:10.0f}", flush=True)
            t_sam = seconds_per_step(make_sam(task), device, steps, args.warmup, args.repeats)
            print(f"{model:<9} {label + ' SAM':<34} {1e3 * t_sam:9.2f} {batch / t_sam:10.0f} "
                  f"{t_sam / (2 * t_sgd):12.3f}", flush=True)

if __name__ == "__main__":
    main()
