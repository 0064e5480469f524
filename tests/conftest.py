"""Shared fixtures: a small generated CIFAR-10 copy in the standard on-disk layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samrepro.generated import write_cifar10  # noqa: F401 (the tests import it from here)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A generated CIFAR-10 copy with 300 training and 100 test images."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"), 300, 100)


@pytest.fixture
def samrepro_cli(tmp_path):
    """Runs the ``samrepro`` command in a scratch folder; returns the CompletedProcess."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "samrepro", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    return run
