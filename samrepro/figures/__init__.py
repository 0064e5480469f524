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
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import pandas as pd

from samrepro.records import write_atomic

KINDS = {
    "paper": "a statement of a paper (figure, theorem, lemma, equation or sentence), cited",
    "calibration": "a setting we calibrate, checked",
    "extension": "our own probe or extension, not a statement of the papers",
}
OUTSIDE = "outside the hypotheses"


@dataclass
class Claim:
    """One quantitative claim: what is predicted, what we measured, and the verdict.

    ``kind`` is one of ``KINDS``; a ``paper`` claim cites its statement (``cite``, e.g. "Dai Thm 1").
    ``source`` says where the tolerance comes from (the statement's O(·) terms and constants, or "ours"
    with the reason). ``in_hypotheses=False`` marks a setting outside the statement's hypotheses: run
    and shown, never scored."""

    claim: str
    prediction: str
    measured: str
    tolerance: str
    passed: bool | None  # None: not run
    note: str = ""  # why a claim fails, or what limits the check
    _: KW_ONLY
    kind: str
    source: str
    cite: str = ""
    in_hypotheses: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.claim!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "paper" and not self.cite:
            raise ValueError(f"claim {self.claim!r}: a paper claim needs its citation (cite=...)")

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "not run"
        if not self.in_hypotheses:
            return OUTSIDE
        return "PASS" if self.passed else "FAIL"


@dataclass
class Figure:
    id: str
    title: str
    draw: Callable[[pd.DataFrame, Path], None]
    claims: Callable[[pd.DataFrame], list[Claim]]
    gpu: bool = False  # needs CUDA and real data: drawn from committed CSVs by `make figs`
    notes: str = ""  # calibration choices, stated in CLAIMS.md
    cite: str = ""  # the paper figure it reproduces ("" for the project's own diagrams)
    compute: Callable[[], pd.DataFrame] | None = None  # a measurement that is not a sweep: its own DataFrame


def label_log_axis(axis) -> None:
    """At least two labelled ticks on a log axis: the decades when two fit in its range, else the
    1-2-5 (then every 1…9) multiples of each decade, labelled as plain numbers."""
    import matplotlib.ticker as ticker

    low, high = sorted(axis.get_view_interval())
    if low <= 0:
        return
    for subs in ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10))):
        locator = ticker.LogLocator(base=10, subs=subs)
        if sum(low <= t <= high for t in locator.tick_values(low, high)) >= 2:
            break
    if subs != (1.0,):
        axis.set_major_locator(locator)
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))


def save(fig, stem: Path) -> None:
    """Writes ``<stem>.png`` and ``<stem>.pdf`` (each atomically) and closes the figure."""
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                label_log_axis(axis)
                axis.set_minor_formatter(plt.NullFormatter())  # labels on the major ticks only: no overlap
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
