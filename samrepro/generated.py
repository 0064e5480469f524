"""A generated CIFAR-10 copy in the standard on-disk layout, for the tests, the drills and any machine
without the dataset (``task=cifar10 task.data_root=<root>`` reads it like the real one)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Writes ``root/cifar-10-batches-py/`` as the real dataset lays it out (five training pickles,
    ``test_batch``, ``batches.meta``) with ``n_train`` + ``n_test`` images: each class a fixed random
    32×32×3 pattern plus noise, so that a model can learn it."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (10, 3072))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, label: str) -> dict:
        labels = rng.integers(0, 10, n)
        noise = rng.normal(0, 60, (n, 3072))
        data = np.clip(patterns[labels] * 0.5 + 64 + noise, 0, 255).astype(np.uint8)
        return {
            "batch_label": label,
            "labels": labels.tolist(),
            "data": data,
            "filenames": [f"img_{i}.png" for i in range(n)],
        }

    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for i, n in enumerate(sizes, 1):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps(batch(n, f"training batch {i} of 5"), protocol=2)
        )
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, "testing batch 1 of 1"), protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": names, "num_cases_per_batch": max(sizes), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
