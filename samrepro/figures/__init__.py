"""The figure registry: figure id → its experiment sweep, its drawing and its claims.

Each module of this package that defines ``FIGURE`` registers one figure. Its sweep is
``conf/experiment/<id>.yaml`` (run with ``samrepro -m experiment=<id>``); ``draw`` turns the
collected runs into ``results/figures/<id>.png|pdf`` and ``claims`` checks the paper's claims on
the same DataFrame (the CSV committed as ``results/<id>.csv``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from samrepro.records import write_atomic


@dataclass
class Claim:
    """One quantitative claim: what the paper predicts, what we measured, and the verdict."""

    claim: str
    prediction: str
    measured: str
    tolerance: str
    passed: bool | None  # None: not run
    note: str = ""  # why a claim fails, or what limits the check

    @property
    def verdict(self) -> str:
        return "not run" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class Figure:
    id: str
    title: str
    draw: Callable[[pd.DataFrame, Path], None]
    claims: Callable[[pd.DataFrame], list[Claim]]
    gpu: bool = False  # needs CUDA and real data: drawn from committed CSVs by `make figs`
    notes: str = ""  # calibration choices, stated in CLAIMS.md
    compute: Callable[[], pd.DataFrame] | None = None  # a measurement that is not a sweep: its own DataFrame


def save(fig, stem: Path) -> None:
    """Writes ``<stem>.png`` and ``<stem>.pdf`` (each atomically) and closes the figure."""
    import matplotlib.pyplot as plt

    for ax in fig.axes:  # log axes: label the decades only, so labels never overlap
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_minor_formatter(plt.NullFormatter())
    for suffix, options in ((".png", {"dpi": 130}), (".pdf", {"metadata": {"CreationDate": None}})):
        path = stem.with_name(stem.name + suffix)  # not with_suffix: a stem may hold a dot (lr=0.1)
        write_atomic(path, lambda tmp: fig.savefig(tmp, format=suffix[1:], bbox_inches="tight", **options))
    plt.close(fig)


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last logged row of every run (the row of ``steps_done`` or of the step before divergence)."""
    return df.loc[df.groupby("run", sort=False)["step"].idxmax()]


def registry() -> dict[str, Figure]:
    """Every registered figure (a module's ``FIGURE``, or each of its ``FIGURES``), by id, sorted."""
    figures = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for fig in [getattr(module, "FIGURE", None), *getattr(module, "FIGURES", [])]:
            if fig is not None:
                figures[fig.id] = fig
    return dict(sorted(figures.items()))
