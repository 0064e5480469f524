"""CIFAR-10 with ResNet18, CNN-tanh or FCN-ReLU (Dai et al. §2.3 Fig. 3, §3.3 Fig. 5, App. B.1 Fig. 8).

Models (the papers' CIFAR-10 architectures, as their cited sources define them):
  resnet18  torchvision's resnet18 as Damian et al. (2021) use it for 32×32 images: 3×3 stride-1 conv1, no
            max-pool, GroupNorm with 32 channels per group (``norm=batchnorm``: Liu et al.'s BatchNorm);
            parameter names as in torchvision. ``width`` = channels of conv1 (64).
  cnn_tanh  Cohen et al.'s [Conv3×3(3→w) → tanh → MaxPool2] → [Conv3×3(w→w) → tanh → MaxPool2]
            → Linear(64w, 10), w = 32.
  fcn_relu  Cohen et al.'s Flatten → Linear(3072, w) → ReLU → Linear(w, w) → ReLU → Linear(w, 10), w = 200.
  or a user's own torch.nn.Module (images [N, 3, 32, 32] → logits [N, 10]): ``task.model`` the dotted path
            of its class or of a function returning it (``mypkg.nets.SmallNet``), or a dict of that path as
            ``_target_`` and its keyword arguments (``{_target_: mypkg.nets.SmallNet, hidden: 64}``).
Losses: ``ce`` = mean cross-entropy; ``mse`` = Cohen et al.'s squared loss ½‖f(x) − e_y‖², averaged over
examples.

Data: torchvision's CIFAR10 reader on any copy in the standard layout (``cifar-10-batches-py/``); the
first ``subset`` training images; standardized per channel (``standardize=channel``, the usual CIFAR
mean/std) or per pixel (``pixel``, Cohen et al.), with statistics of the whole training set. The data
live on the device as one tensor; mini-batches are index slices of an on-device permutation, with
on-device random flip and 4-pixel-padded crop when ``augment`` is on. Nothing in a step syncs with
the host. ``confusion_copies`` = k > 0 replaces the training set by Liu et al.'s (2020) "confusion"
set: k copies of it with ``confusion_zero_fraction`` of the pixel positions zeroed and uniformly
random labels.

On CUDA the forward runs under bf16 autocast (no GradScaler; ``bf16=false`` turns it off) with
channels_last (``channels_last=false``: contiguous) and ``cudnn.benchmark``; on CPU in float32. With
``compile`` every pass (SAM's unperturbed and perturbed ones, BatchNorm or not, and the metrics') runs
through one ``torch.compile``d functional call of the model, so compile covers both SAM passes.
Full batch (``batch_size=null``) is the whole training set, its gradient accumulated over chunks of
``chunk_size`` images.

One configuration per process (``config_dim = False``): the parameters are the model's own tensors;
``loss`` evaluates the model at other tensors (e.g. gd_ascent's ascent point) by
``torch.func.functional_call``. BatchNorm running statistics are updated by unperturbed passes only.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchvision.datasets import CIFAR10
from torchvision.models.resnet import BasicBlock

from samrepro.config import ConfigError, require
from samrepro.sharpness import top_eigenvalue
from samrepro.tasks import Task, data_folder, resolve_target

MODELS = ("resnet18", "cnn_tanh", "fcn_relu")
DEFAULT_WIDTH = {"resnet18": 64, "cnn_tanh": 32, "fcn_relu": 200}
NORMS = ("groupnorm", "batchnorm")
LOSSES = ("ce", "mse")
STANDARDIZE = ("channel", "pixel")
GROUP_CHANNELS = 32  # GroupNorm: 32 channels per group (Damian et al.); at least one group
CLASSES = 10


# ---------------------------------------------------------------------------------------- models
class ResNet18(nn.Module):
    """torchvision's resnet18 for CIFAR (Damian et al. 2021): conv1 is 3×3 with stride 1 and there is
    no max-pool. Same blocks (torchvision's ``BasicBlock``), parameter names and initialization as
    ``torchvision.models.resnet18``; channels width, 2·width, 4·width, 8·width."""

    def __init__(self, width: int = 64, norm: str = "groupnorm"):
        super().__init__()
        norm_layer = group_norm if norm == "groupnorm" else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), norm_layer(planes)
                )
            layers.append(
                nn.Sequential(
                    BasicBlock(inplanes, planes, stride, downsample, norm_layer=norm_layer),
                    BasicBlock(planes, planes, norm_layer=norm_layer),
                )
            )
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, CLASSES)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // GROUP_CHANNELS), channels)


def make_model(name: str, width: int, norm: str) -> nn.Module:
    if name == "resnet18":
        return ResNet18(width, norm)
    if name == "cnn_tanh":
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * width, CLASSES),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3072, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, CLASSES),
    )


def model_maker(spec: object, width: int | None, norm: str) -> tuple[Callable[[], nn.Module], str]:
    """``task.model`` as (the function that makes the model, its keys for messages): a built-in name, with
    ``width`` (null: the model's default) and ``norm``; or a user's torch.nn.Module, by the dotted path of
    its class (or of a function returning it) or by a dict of ``_target_`` and keyword arguments."""
    if spec in MODELS:
        width = width or DEFAULT_WIDTH[spec]
        keys = f"task.model={spec} task.width={width} task.norm={norm}"
        return functools.partial(make_model, spec, width, norm), keys
    custom = "the dotted path of your torch.nn.Module (mypkg.nets.Net), or {_target_: mypkg.nets.Net, its arguments}"
    is_dict = isinstance(spec, DictConfig)
    require(is_dict or (isinstance(spec, str) and "." in spec), "task.model", spec,
            f"allowed: {', '.join(MODELS)}, or {custom}")
    kwargs = OmegaConf.to_container(spec, resolve=True) if is_dict else {"_target_": spec}
    path = kwargs.pop("_target_", None)
    require(width is None, "task.width", width, "applies to the built-in models only; give your model's "
            "arguments in task.model: {_target_: …, <argument>: <value>}")
    module = resolve_target("task.model._target_" if is_dict else "task.model", path,
                            "a torch.nn.Module taking " + (", ".join(kwargs) or "no arguments"), **kwargs)
    return functools.partial(module, **kwargs), f"task.model={spec}"


def initial_model(make: Callable[[], nn.Module], seed: int, described: str = "task.model") -> nn.Module:
    """The model that ``make`` returns at its initialization from ``seed`` (on the CPU)."""
    torch.manual_seed(seed)
    model = make()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{described}: made a {type(model).__name__}, not a torch.nn.Module")
    return model


def initial_norm(name: str, width: int | None, seed: int) -> float:
    """‖w₀‖: the global L2 norm of the parameters of the built-in model ``name`` at its initialization from
    ``seed`` (width None: the default)."""
    model = initial_model(functools.partial(make_model, name, width or DEFAULT_WIDTH[name], "groupnorm"), seed)
    return math.sqrt(sum(p.detach().square().sum().item() for p in model.parameters()))


# ------------------------------------------------------------------------------------------ data
class CIFAR10Files(CIFAR10):
    """torchvision's CIFAR10, used only to download the archive (which checks its checksum)."""


DATA_FILES = tuple(name for name, _ in CIFAR10.train_list + CIFAR10.test_list)
IMAGE_VALUES = 3 * 32 * 32


def read_batch(path: Path, root: Path) -> tuple[Tensor, Tensor]:
    """One CIFAR-10 pickle (``data``: uint8 [N, 3072], ``labels``: N ints in 0..9; ``str`` or ``bytes``
    keys, as re-pickled copies have) → uint8 images [N, 3, 32, 32] and int64 labels. Anything else is
    one ConfigError naming the file."""

    def bad(what: str) -> ConfigError:
        return ConfigError(f"task.data_root={root}: {path} {what}; replace it with the file of the "
                           "CIFAR-10 python version (or set task.download=true)")

    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise bad(f"is not a readable pickle ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict):
        raise bad(f"holds a {type(entry).__name__}, not a dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    labels = entry.get("labels", entry.get("fine_labels"))
    if "data" not in entry or labels is None:
        raise bad(f"has no 'data' and 'labels' entries (keys: {sorted(map(str, entry))})")
    data = np.asarray(entry["data"])
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_VALUES or labels.shape != data.shape[:1]:
        raise bad(f"has data of shape {data.shape} ({data.dtype}) and {labels.shape[0] if labels.ndim else 0} "
                  f"labels; expected uint8 [N, {IMAGE_VALUES}] and N labels")
    if labels.size and (labels.min() < 0 or labels.max() >= CLASSES):
        raise bad(f"has labels outside 0..{CLASSES - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def load_cifar10(root: Path, download: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """uint8 images [N, 3, 32, 32] and int64 labels of the training and the test set, from any copy
    in the standard on-disk layout (``cifar-10-batches-py/``) of any size."""
    folder = root / CIFAR10.base_folder
    missing = [name for name in DATA_FILES if not (folder / name).exists()]
    if missing and download:
        try:
            CIFAR10Files(str(root), download=True)
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"task.download=true: could not download CIFAR-10 into {root}: {err}") from err
        missing = [name for name in DATA_FILES if not (folder / name).exists()]
    if missing:
        raise ConfigError(
            f"task.data_root={root}: no CIFAR-10 at {folder.resolve()} (missing {', '.join(missing)}); "
            "point task.data_root or SAMREPRO_DATA at the folder holding cifar-10-batches-py/, "
            "or set task.download=true to fetch it (163 MB)"
        )
    out = []
    for files in (CIFAR10.train_list, CIFAR10.test_list):
        parts = [read_batch(folder / name, root) for name, _ in files]
        out += [torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])]
    return tuple(out)


def confusion_set(images: Tensor, copies: int, zero_fraction: float, generator: torch.Generator):
    """Liu et al. (2020): ``copies`` copies of ``images`` (uint8 [N, 3, H, W]), in each a random
    ``zero_fraction`` of the pixel positions set to 0 (all channels), with uniformly random labels."""
    n, _, h, w = images.shape
    zeroed = round(zero_fraction * h * w)
    data = []
    for _ in range(copies):  # one copy at a time keeps the random ranks at N × H·W
        positions = torch.rand(n, h * w, generator=generator).argsort(1)[:, :zeroed]
        keep = torch.ones(n, h * w, dtype=torch.bool).scatter_(1, positions, False)
        data.append(images * keep.view(n, 1, h, w))
    labels = torch.randint(0, CLASSES, (n * copies,), generator=generator)
    return torch.cat(data), labels


def augment(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random horizontal flip and random crop of the ``pad``-padded image, per image, on x's device."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (pad,) * 4)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


# ------------------------------------------------------------------------------------------ task
class CIFAR10Task(Task):
    """A torch.nn model on device-resident CIFAR-10 data (module docstring)."""

    config_dim = False
    dtype = torch.float32

    def __init__(
        self,
        train_x: Tensor,
        train_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        *,
        model: Callable[[], nn.Module],
        model_keys: str,
        loss: str,
        batch_size: int | None,
        chunk_size: int,
        augment: bool,
        init: str,
        bf16: bool,
        compile: bool,
        lambda_max_batch: int,
        device: torch.device,
        channels_last: bool = True,
        lambda_max_every: int = 0,
        eval_subset: int | None = None,
        eval_full_above: float = 0.99,
        eval_chunk_size: int = 4096,
    ):
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution kernels once
        fmt = torch.channels_last if cuda and channels_last else torch.contiguous_format
        self.train_x, self.train_y = train_x.to(device, memory_format=fmt), train_y.to(device)
        self.test_x, self.test_y = test_x.to(device, memory_format=fmt), test_y.to(device)
        self.make_model, self.model_keys, self.init = model, model_keys, init
        self.loss_name = loss
        n = len(self.train_y)
        self.batch_size = n if batch_size is None else min(batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.chunk_size = chunk_size
        self.augment = augment
        self.autocast = bool(bf16 and cuda)
        self.compile = compile
        self.lambda_max_batch = min(lambda_max_batch, n)
        self.lambda_max_every = lambda_max_every
        self.eval_subset = n if eval_subset is None else min(eval_subset, n)
        self.eval_full_above = eval_full_above
        self.eval_chunk_size = eval_chunk_size
        self.device = device
        self.memory_format = fmt
        self.metric_names = ("train_loss", "train_acc", "test_loss", "test_acc") + (
            ("lambda_max",) if lambda_max_batch else ()
        )

    # ------------------------------------------------------------ parameters
    def init_params(self, seeds: Sequence[int]) -> list[Tensor]:
        """A fresh model from ``seeds[0]`` (``init=scratch``), or loaded from the checkpoint ``init``."""
        self.model = initial_model(self.make_model, seeds[0], self.model_keys).to(
            self.device, memory_format=self.memory_format
        )
        if self.init != "scratch":
            self.load_checkpoint(self.init)
        self.model.train()
        self.functional = torch.compile(self._call) if self.compile else self._call
        self.names = [name for name, _ in self.model.named_parameters()]
        self.params = list(self.model.parameters())
        self.buffers = dict(self.model.named_buffers())
        self._scratch_buffers = {name: torch.empty_like(b) for name, b in self.buffers.items()}
        return self.params

    def load_checkpoint(self, path: str) -> None:
        """Loads the model of a checkpoint (:func:`model_state`); a file that is not one, or a model of
        another ``task.model``/``task.width``/``task.norm``, is one ConfigError naming the file."""
        try:
            checkpoint = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # torch.load raises many types for a corrupt file
            raise ConfigError(f"task.init={path}: not a readable checkpoint ({type(err).__name__}); "
                              "point task.init at a file written by a stage (e.g. stage=adversarial_init)") from err
        state = model_state(checkpoint) if isinstance(checkpoint, dict) else None
        ours = self.model.state_dict()
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ConfigError(f"task.init={path}: holds no model state dict; point task.init at a file "
                              "written by a stage (e.g. stage=adversarial_init)")
        missing = sorted(ours.keys() - state.keys())
        unexpected = sorted(state.keys() - ours.keys())
        shapes = [k for k in ours if k in state and ours[k].shape != state[k].shape]
        if missing or unexpected or shapes:
            problem = (f"{shapes[0]} is {list(state[shapes[0]].shape)}, this model's {list(ours[shapes[0]].shape)}"
                       if shapes else f"keys differ (e.g. missing {missing[:1]}, unexpected {unexpected[:1]})")
            recipe = checkpoint.get("recipe", {}).get("task", {}) if isinstance(checkpoint, dict) else {}
            made = {k: recipe[k] for k in ("model", "width", "norm") if k in recipe}
            fix = (", ".join(f"task.{k}={v}" for k, v in made.items()) if made else
                   "task.model, task.width and task.norm to the checkpoint's")
            raise ConfigError(
                f"task.init={path}: does not fit {self.model_keys} ({problem}); set {fix}"
            )
        self.model.load_state_dict(state)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    # ------------------------------------------------------------ loss
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def outputs(self, params: Sequence[Tensor], x: Tensor, perturbed: bool = False) -> Tensor:
        """The model's logits at ``params`` (its own tensors, or others by functional_call), in float32 or wider
        (bf16 autocast's are cast up; a float64 model's, as the tests' CUDA-vs-CPU check makes, stay float64).
        ``perturbed``: BatchNorm updates scratch copies of its running statistics, not the model's."""
        own = all(p is q for p, q in zip(params, self.params, strict=True))
        with self._autocast():
            if own and not (perturbed and self.buffers) and not self.compile:
                out = self.model(x)
            else:  # compiled: every pass (SAM's two, the metrics') goes through the one compiled function
                tensors = dict(zip(self.names, params, strict=True))
                if perturbed and self.buffers:
                    torch._foreach_copy_(list(self._scratch_buffers.values()), list(self.buffers.values()))
                    tensors.update(self._scratch_buffers)
                out = self.functional(tensors, x)
        return out.to(torch.promote_types(out.dtype, torch.float32))

    def _call(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        """The model with ``tensors`` in place of its parameters (and buffers, where given)."""
        return torch.func.functional_call(self.model, tensors, (x,))

    def criterion(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        if self.loss_name == "ce":
            return F.cross_entropy(out, y, reduction=reduction)
        per_example = 0.5 * (out - F.one_hot(y, CLASSES).to(out.dtype)).square().sum(1)
        return per_example.mean() if reduction == "mean" else per_example

    def loss(self, params: Sequence[Tensor], batch: tuple[Tensor, Tensor], perturbed: bool = False) -> Tensor:
        """Mean loss on ``batch`` = (images, labels), shape [1]. ``perturbed`` (SAM's ascent pass)
        leaves the BatchNorm running statistics as they are."""
        x, y = batch
        return self.criterion(self.outputs(params, x, perturbed), y).reshape(1)

    def loss_and_grad(self, params: Sequence[Tensor], batch: tuple[Tensor, Tensor], perturbed: bool = False):
        """(loss, gradient) on ``batch``, accumulated over chunks of ``chunk_size`` images: the mean
        loss is Σ_chunks (|chunk|/n)·(chunk mean loss)."""
        x, y = batch
        n = len(y)
        if n <= self.chunk_size:
            return super().loss_and_grad(params, batch, perturbed)
        total, grads = None, None
        for start in range(0, n, self.chunk_size):
            chunk = (x[start : start + self.chunk_size], y[start : start + self.chunk_size])
            loss = self.loss(params, chunk, perturbed) * (len(chunk[1]) / n)
            g = torch.autograd.grad(loss.sum(), params)
            if grads is None:
                total, grads = loss.detach(), list(g)
            else:
                total = total + loss.detach()
                torch._foreach_add_(grads, g)
        return total, grads

    def batches(self, seeds: Sequence[int]) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled mini-batches (the last of an epoch may be smaller), epoch after epoch; full batch:
        the whole training set every step."""
        n = len(self.train_y)
        if self.batch_size == n and not self.augment:
            return itertools.repeat((self.train_x, self.train_y))
        generator = torch.Generator(self.device)
        generator.manual_seed(seeds[0])
        return self._shuffled(generator)

    def _shuffled(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.train_y)
        while True:
            order = torch.randperm(n, generator=generator, device=self.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                x = self.train_x[idx]
                yield (augment(x, generator) if self.augment else x), self.train_y[idx]

    # ------------------------------------------------------------ metrics
    @torch.no_grad()
    def evaluate(self, params: Sequence[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mean loss, accuracy) in eval mode, in chunks of ``eval_chunk_size``, as device tensors of shape [1]."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(y), self.eval_chunk_size):
            out = self.outputs(params, x[start : start + self.eval_chunk_size])
            yc = y[start : start + self.eval_chunk_size]
            loss_sum += self.criterion(out, yc, reduction="sum").sum()
            correct += (out.argmax(1) == yc).sum()
        self.model.train()
        return (loss_sum / len(y)).reshape(1), (correct.double() / len(y)).reshape(1)

    def metrics(self, params: Sequence[Tensor], step: int = 0) -> dict[str, Tensor]:
        """Test metrics on the whole test set; training metrics on the first ``eval_subset`` training
        images (a fixed subset), or on the whole training set once the subset's accuracy reaches
        ``eval_full_above`` — so thresholds near 100 % (``until``, "stays on the manifold") are judged
        on every image. λ_max at step 0 and every ``lambda_max_every`` steps (NaN in other rows)."""
        n = self.eval_subset
        train_loss, train_acc = self.evaluate(params, self.train_x[:n], self.train_y[:n])
        if n < len(self.train_y) and train_acc.item() >= self.eval_full_above:  # one sync per logged row
            train_loss, train_acc = self.evaluate(params, self.train_x, self.train_y)
        test_loss, test_acc = self.evaluate(params, self.test_x, self.test_y)
        out = {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc}
        if self.lambda_max_batch:
            due = step == 0 or (self.lambda_max_every and step % self.lambda_max_every == 0)
            out["lambda_max"] = self.lambda_max(params).reshape(1) if due else torch.full((1,), math.nan)
        return out

    def lambda_max(self, params: Sequence[Tensor], iters: int = 20) -> Tensor:
        """λ_max of the training-loss Hessian on the first ``lambda_max_batch`` training images (a
        fixed batch), by power iteration in float32, in train mode without BatchNorm updates."""
        batch = (self.train_x[: self.lambda_max_batch], self.train_y[: self.lambda_max_batch])
        autocast, self.autocast = self.autocast, False
        try:
            with torch.enable_grad():
                generator = torch.Generator().manual_seed(0)
                return top_eigenvalue(
                    lambda p: self.loss(p, batch, perturbed=True),
                    params,
                    config_dim=False,
                    iters=iters,
                    generator=generator,
                )
        finally:
            self.autocast = autocast


def model_state(checkpoint: dict) -> dict:
    """The model's state dict inside a checkpoint: a stage's (``model``), a trainer's (``task.model``),
    a PyTorch Lightning one (``state_dict`` with keys prefixed ``model.``, as Damian et al.'s), or a
    bare state dict."""
    if "model" in checkpoint:
        return checkpoint["model"]
    if "task" in checkpoint:
        return checkpoint["task"]["model"]
    if "state_dict" in checkpoint:
        return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    return checkpoint


def build(cfg: DictConfig, n_configs: int, device: torch.device) -> CIFAR10Task:
    require(cfg.norm in NORMS, "task.norm", cfg.norm, f"allowed: {', '.join(NORMS)}")
    require(cfg.loss in LOSSES, "task.loss", cfg.loss, f"allowed: {', '.join(LOSSES)}")
    require(
        cfg.standardize in STANDARDIZE,
        "task.standardize",
        cfg.standardize,
        f"allowed: {', '.join(STANDARDIZE)}",
    )
    positive = {"subset": True, "test_subset": True, "batch_size": True, "width": True, "chunk_size": False,
                "eval_subset": True, "eval_chunk_size": False}
    for key, nullable in positive.items():
        value = cfg[key]
        require(
            (nullable and value is None) or (isinstance(value, int) and value > 0),
            f"task.{key}",
            value,
            "must be an integer > 0" + (" or null" if nullable else ""),
        )
    require(
        isinstance(cfg.confusion_copies, int) and cfg.confusion_copies >= 0,
        "task.confusion_copies",
        cfg.confusion_copies,
        "must be an integer >= 0 (0: clean labels)",
    )
    require(
        0 <= cfg.confusion_zero_fraction <= 1,
        "task.confusion_zero_fraction",
        cfg.confusion_zero_fraction,
        "must be in [0, 1]",
    )
    require(
        isinstance(cfg.lambda_max_batch, int) and cfg.lambda_max_batch >= 0,
        "task.lambda_max_batch",
        cfg.lambda_max_batch,
        "must be an integer >= 0 (0: not measured)",
    )
    require(
        isinstance(cfg.lambda_max_every, int) and cfg.lambda_max_every >= 0,
        "task.lambda_max_every",
        cfg.lambda_max_every,
        "must be an integer >= 0 (0: at step 0 only)",
    )
    require(
        isinstance(cfg.eval_full_above, (int, float)) and 0 <= cfg.eval_full_above,
        "task.eval_full_above",
        cfg.eval_full_above,
        "must be a number >= 0 (above 1: never the whole training set)",
    )
    make, model_keys = model_maker(cfg.model, cfg.width, cfg.norm)
    init = str(cfg.init)
    require(
        init == "scratch" or Path(init).is_file(),
        "task.init",
        init,
        "allowed: scratch, or the path of an existing checkpoint (e.g. written by stage=adversarial_init)",
    )
    train_x, train_y, test_x, test_y = load_cifar10(data_folder(cfg.data_root), cfg.download)
    dims = (0,) if cfg.standardize == "pixel" else (0, 2, 3)
    full = train_x.float()
    mean, std = full.mean(dims, keepdim=True), full.std(dims, keepdim=True).clamp_min(1e-6)
    train_x, train_y = train_x[: cfg.subset], train_y[: cfg.subset]
    test_x, test_y = test_x[: cfg.test_subset], test_y[: cfg.test_subset]
    if cfg.confusion_copies:
        generator = torch.Generator().manual_seed(cfg.data_seed)
        train_x, train_y = confusion_set(
            train_x, cfg.confusion_copies, cfg.confusion_zero_fraction, generator
        )
    return CIFAR10Task(
        (train_x.float() - mean) / std,
        train_y,
        (test_x.float() - mean) / std,
        test_y,
        model=make,
        model_keys=model_keys,
        loss=cfg.loss,
        batch_size=cfg.batch_size,
        chunk_size=cfg.chunk_size,
        augment=cfg.augment,
        init=init,
        bf16=cfg.bf16,
        compile=cfg.compile,
        lambda_max_batch=cfg.lambda_max_batch,
        device=device,
        channels_last=cfg.channels_last,
        lambda_max_every=cfg.lambda_max_every,
        eval_subset=cfg.eval_subset,
        eval_full_above=cfg.eval_full_above,
        eval_chunk_size=cfg.eval_chunk_size,
    )
