"""GD's large-η failure on the sparse-coding network (dai_sparse_gd) and its edge of stability (ahn_eos): the
edge logic on hand-built runs, and tiny real sweeps whose verdicts must come out."""

from __future__ import annotations

import matplotlib
import pandas as pd

from samrepro.cli import multirun
from samrepro.collect import collect
from samrepro.figures import registry
from samrepro.figures.dai_sparse_gd import edge

matplotlib.use("Agg")


def finals(failed: dict[float, list[bool]]) -> pd.DataFrame:
    """Final rows: per η, one run per data seed, failed or not."""
    return pd.DataFrame([{"lr": lr, "task.data_seed": seed, "failed": f}
                         for lr, flags in failed.items() for seed, f in enumerate(flags)])


def test_an_edge_is_sharp_only_when_every_seed_fails_from_the_same_eta_on():
    assert edge(finals({0.01: [False, False], 0.02: [True, True], 0.1: [True, True]})) == (0.01, 0.02)
    low, high = edge(finals({0.01: [False, False], 0.02: [True, False], 0.1: [True, True]}))
    assert (low, high) == (0.01, 0.1)  # 0.02 lies between: seed-dependent, not sharp
    assert edge(finals({0.01: [False, False], 0.02: [True, True], 0.1: [False, True]})) == (0.01, None)  # recovers


def sweep(fig_id: str, *overrides: str) -> pd.DataFrame:
    return collect(multirun([f"experiment={fig_id}", *overrides])).drop(columns=["run_dir"])


def test_gd_dies_without_diverging_at_a_large_eta(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = sweep("dai_sparse_gd", "lr=0.0125,10", "task.data_seed=0", "steps=40", "task.n_test=500")
    fails, diverges = registry()["dai_sparse_gd"].claims(df)
    assert fails.passed and "works up to η = 0.0125" in fails.measured and "from η = 10" in fails.measured
    assert diverges.passed is False and "0/1 failing runs diverged; 1/1 are dead with the gradient exactly 0" \
        in diverges.measured
    registry()["dai_sparse_gd"].draw(df, tmp_path / "gd")
    assert (tmp_path / "gd.png").exists()


def test_gd_above_the_threshold_reaches_two_over_eta_and_then_leaves_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = sweep("ahn_eos", "lr=0.00625", "steps=1600", "task.n_test=500")  # 10 × 8π/d², T = 10/η
    reaches, stays = registry()["ahn_eos"].claims(df)
    assert reaches.passed and "peak 0.95" in reaches.measured
    assert stays.passed is False and "0.15 at ηt = 10" in stays.measured
