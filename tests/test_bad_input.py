"""The bad-input matrix: each bad input ends with exit code 2 and one line naming the key and
what is allowed — no traceback — and leaves every file outside runs/ as it was."""

import sys

import pytest
import torch
from conftest import write_cifar10
from hydra.core.global_hydra import GlobalHydra

from samrepro import cli
from samrepro.tasks.cifar10 import make_model

BAD = {  # name: (arguments, what the one line must say)
    "unknown task": (["task=nope"], "task=nope: unknown; allowed: "),
    "unknown optimizer": (["opt=adam"], "opt=adam: unknown; allowed: gd, gd_ascent, sam, usam"),
    "unknown experiment": (["experiment=nope"], "experiment=nope: unknown; allowed: ahn_eos, ahn_fig1"),
    "unknown stage": (["stage=nope"], "stage=nope: unknown; allowed: adversarial_init"),
    "unknown key": (["nonsense=3"], "Could not override 'nonsense'"),
    "malformed override": (["lr=(0.1"], "malformed override"),
    "negative rho": (["rho=-1"], "rho=-1: must be a finite number >= 0"),
    "zero lr": (["lr=0"], "lr=0: must be a finite number > 0"),
    "infinite lr": (["lr=inf"], "lr=inf: must be a finite number > 0"),
    "absurd thread count": (["threads=100000"], "threads=100000: must be null (torch's default) or an integer in"),
    "a name too long": (["hydra.run.dir=" + "x" * 300], "File name too long"),
    "bad lr in a sweep": (["-m", "lr=0.1,-0.2"], "lr=-0.2: must be a finite number > 0"),
    "bad opt in a sweep": (["-m", "opt=sam,adam"], "opt=adam: unknown"),
    "bad task key in a sweep's second group": (["-m", "task.init=[1,2],[1,2,3]"],
                                                "task.init=[1, 2, 3]: must have 2 entries"),
    "unknown until metric in a sweep's second group": (["-m", "task=quadratic,single_neuron", "+until.w_norm=1"],
                                                       "until=['w_norm']: unknown metric; allowed: loss, x, y"),
    "checkpoint_every in a sweep's second group": (["-m", "checkpoint_every=0,1"],
                                                   "checkpoint_every=1: needs a task that runs one configuration"),
    "max_batch_size": (["-m", "lr=0.1,0.2", "hydra.sweeper.max_batch_size=-1"],
                       "hydra.sweeper.max_batch_size=-1: must be null or an integer > 0"),
    "submitit cluster": (["-m", "hydra/launcher=batched_submitit_local", "hydra.launcher.cluster=foo"],
                         "hydra.launcher.cluster=foo: unknown; allowed: slurm, local, debug"),
    "zero steps": (["steps=0"], "steps=0: must be an integer > 0"),
    "steps_to_time of a zero lr": (["-m", "lr=0,0.1", "steps='${steps_to_time:0.5,${lr}}'"],
                                   "steps_to_time: lr=0: must be a finite number > 0"),
    "steps as a word": (["steps=ten"], "steps=ten: must be an integer > 0"),
    "fractional seed": (["seed=1.5"], "seed=1.5: must be an integer"),
    "fractional log_every": (["log_every=1.5"], "log_every=1.5: must be an integer > 0"),
    "zero loss ceiling": (["loss_ceiling=0"], "loss_ceiling=0: must be a finite number > 0"),
    "negative threads": (["threads=-2"], "threads=-2: must be null"),
    "unknown device": (["device=tpu"], "device=tpu: allowed: auto, cpu, cuda"),
    "unknown lr schedule": (["lr_schedule.name=cosine"], "lr_schedule.name=cosine: allowed: "),
    "lr schedule ratio as a word": (["lr_schedule.final_ratio=abc"], "lr_schedule.final_ratio=abc: must be"),
    "negative checkpoint_every": (["checkpoint_every=-1"], "checkpoint_every=-1: must be an integer >= 0"),
    "epoch_units not a bool": (["epoch_units=maybe"], "epoch_units=maybe: must be true or false"),
    "progress not a bool": (["progress=maybe"], "progress=maybe: must be true or false"),
    "empty name": (["name="], "name=: must be a folder name"),
    "negative momentum": (["opt.momentum=-1"], "opt.momentum=-1: must be a number in [0, 1)"),
    "zero eps": (["opt.eps=0"], "opt.eps=0: must be a number > 0"),
    "unknown until metric": (["+until.nope=1"], "until=['nope']: unknown metric; allowed: loss"),
    "until not a number": (["+until.loss=low"], "until.loss=low: must map metric names to numbers"),
    "unknown optimizer key": (["+opt.beta=0.9"], "opt.beta: unknown key in opt"),
    "unknown optimizer name": (["opt.name=adam"], "opt.name=adam: allowed: gd, sam, usam, gd_ascent"),
    "init of the wrong length": (["task=single_neuron", "task.init=[1.0]"], "task.init=[1.0]: must have 2 entries"),
    "init of words": (["task=single_neuron", "task.init=[a,b]"], "task.init="),
    "unknown loss": (["task=single_neuron", "task.loss=cubic"], "task.loss=cubic"),
    "quadratic init too long": (["task.init=[1,2,3]"], "task.init=[1, 2, 3]: must have 2 entries"),
    "toy4d batch size": (["task=toy4d", "task.batch_size=3"], "task.batch_size=3: allowed: 1"),
    "matrix sensing rank": (["task=matrix_sensing", "task.r=0"], "task.r=0: must be an integer > 0"),
    "sparse coding dimension": (["task=sparse_coding", "task.d=0"], "task.d=0: must be an integer > 0"),
    "cifar model": (["task=cifar10", "task.model=vgg"], "task.model=vgg: allowed: resnet18"),
    "cifar data missing": (["task=cifar10", "task.data_root=no_such_folder"],
                           "task.data_root=no_such_folder: no CIFAR"),
    "checkpoint missing": (["task=cifar10", "task.init=no_such.pt"], "task.init=no_such.pt"),
    "corrupt checkpoint": (["task=cifar10", "task.data_root=cifar", "task.init=garbage.pt"], "garbage.pt"),
    "checkpoint of another width": (["task=cifar10", "task.data_root=cifar", "task.model=fcn_relu",
                                     "task.width=8", "task.init=fcn16.pt"], "task.width"),
    "truncated data batch": (["task=cifar10", "task.data_root=truncated"], "data_batch_1"),
    "output folder under a file": (["hydra.run.dir=notes.txt/run"], "notes.txt is a file, not a folder"),
    "sweep folder is a file": (["-m", "hydra.sweep.dir=notes.txt", "lr=0.1,0.2"], "notes.txt is a file"),
    "folder holding other files": (["hydra.run.dir=."], "holds files samrepro did not write (cifar, fcn16.pt"),
    "a top-level key nothing reads": (["+bogus=1"], "bogus: unknown top-level key, read by no interpolation"),
    "a name escaping runs/": (["name=../../x"], "name=../../x: must be a folder name under runs/ (relative"),
    "a user's own config.yaml": (["hydra.run.dir=mine"], "mine: holds config.yaml without samrepro's run record"),
    "a user's own multirun.yaml": (["-m", "hydra.sweep.dir=sweep", "lr=0.1,0.2"],
                                   "hydra.sweep.dir=sweep: its multirun.yaml is not a sweep's record"),
    "folder of another config": (["task.eigenvalues=[3.0,1.0]", "hydra.run.dir=runs/taken"],
                                 "holds the completed run of another config (task.eigenvalues"),
}


def run_cli(monkeypatch, *args):
    GlobalHydra.instance().clear()
    flags = [a for a in args if a.startswith("-")]  # before the overrides, as on a command line
    overrides = [a for a in args if not a.startswith("-")]
    monkeypatch.setattr(sys, "argv", ["samrepro", *flags, "steps=3", "progress=false", "device=cpu", *overrides])
    cli.main()


def snapshot(folder):
    return {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*") if "taken" not in p.parts}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: their own file, a small CIFAR-10 copy, a truncated one, a corrupt checkpoint and a
    checkpoint of a 16-unit FCN."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "notes.txt").write_text("a user's own file")
    (folder / "mine").mkdir()  # a user's own files with samrepro's names
    (folder / "mine" / "config.yaml").write_text("lr: 3\n")
    (folder / "sweep").mkdir()
    (folder / "sweep" / "multirun.yaml").write_text("mine: true\n")
    write_cifar10(folder / "cifar", 20, 10)
    write_cifar10(folder / "truncated", 20, 10)
    batch = folder / "truncated" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])
    (folder / "garbage.pt").write_bytes(b"not a checkpoint" * 10)
    torch.save(make_model("fcn_relu", 16, "groupnorm").state_dict(), folder / "fcn16.pt")
    return folder


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_clear_line_and_touches_nothing(name, workdir, monkeypatch, capsys):
    args, message = BAD[name]
    monkeypatch.chdir(workdir)
    if name == "folder of another config":
        run_cli(monkeypatch, "hydra.run.dir=runs/taken")
        capsys.readouterr()
    before = snapshot(workdir)
    with pytest.raises(SystemExit) as exit_:
        run_cli(monkeypatch, *args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("samrepro: error: ") and message in err, err
    assert snapshot(workdir) == before
