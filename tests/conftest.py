import subprocess
import sys

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def samrepro_cli(tmp_path):
    """Runs the ``samrepro`` command in a scratch folder; returns the CompletedProcess."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "samrepro", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    return run
