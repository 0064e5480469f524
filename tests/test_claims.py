"""What each row of CLAIMS.md says it is: the class of every claim of every registered figure (judged on
the committed CSVs), the per-class tally, rows outside a statement's hypotheses left unscored, and the
rows re-judged against the papers' own statements (issue 18)."""

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from samrepro.figures import (
    KINDS,
    OUTSIDE,
    Claim,
    Figure,
    dai_fig1,
    dai_table1,
    dai_thm1,
    dai_thm2,
    dai_thm3,
    label_log_axis,
    registry,
    sparse_coding,
    wen_fig1,
)
from samrepro.figures.make import claims_markdown, not_run, tally

matplotlib.use("Agg")
RESULTS = Path(__file__).resolve().parent.parent / "results"


def committed(fig_id: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / f"{fig_id}.csv")


def every_claim() -> list[tuple[str, Claim]]:
    """Every registered figure's claims: judged on its committed CSV, or (a GPU figure without one) on an
    empty frame, as `make figs` reports it."""
    out = []
    for fig_id, fig in registry().items():
        csv = RESULTS / f"{fig_id}.csv"
        if csv.exists() or fig.gpu:
            out += [(fig_id, c) for c in fig.claims(pd.read_csv(csv) if csv.exists() else pd.DataFrame())]
        else:  # a CPU figure whose CSV `make figs` has not made yet
            out += [(fig_id, c) for c in not_run(fig, "not made yet")]
    return out


def test_every_claim_of_every_figure_has_a_class_a_source_and_paper_claims_a_citation():
    claims = every_claim()
    assert len({fig_id for fig_id, _ in claims}) == len(registry())
    for fig_id, c in claims:
        assert c.kind in KINDS, (fig_id, c.claim)
        assert c.source, (fig_id, c.claim)
        assert c.kind != "paper" or c.cite, (fig_id, c.claim)
    kinds = {fig_id: {c.kind for f, c in claims if f == fig_id} for fig_id, _ in claims}
    assert kinds["dai_fig9_c1"] == {"extension"}  # the off-paper probe at c = 1
    assert kinds["stability_single_neuron"] == kinds["stability_matrix_sensing"] == {"extension"}
    assert kinds["stability_quadratic"] == {"paper"}  # Dai Thm 1/10 holds exactly on a quadratic


def test_a_claim_needs_a_known_class_and_a_paper_claim_its_citation():
    with pytest.raises(ValueError, match="kind 'theorem' is not one of paper, calibration, extension"):
        Claim("c", "p", "m", "t", True, kind="theorem", source="s")
    with pytest.raises(ValueError, match="needs its citation"):
        Claim("c", "p", "m", "t", True, kind="paper", source="s")
    with pytest.raises(TypeError, match="kind"):
        Claim("c", "p", "m", "t", True, source="s")  # no default class
    outside = Claim("c", "p", "m", "t", False, kind="paper", cite="Dai Thm 35", source="s", in_hypotheses=False)
    assert outside.verdict == OUTSIDE
    assert Claim("c", "p", "m", "t", None, kind="extension", source="s").verdict == "not run"


def test_claims_md_tallies_each_class_and_shows_class_citation_and_tolerance_source():
    fig = Figure("f", "title", lambda df, stem: None, lambda df: [])
    claims = [Claim("a", "p", "m", "±1", True, kind="paper", cite="Wen Thm 8", source="the O(ρ) term"),
              Claim("b", "p", "m", "±1", False, kind="paper", cite="Dai Thm 1", source="exact"),
              Claim("c", "p", "m", "±1", False, kind="paper", cite="Dai Thm 35", source="exact", in_hypotheses=False),
              Claim("d", "p", "m", "±1", False, kind="extension", source="ours: a probe"),
              Claim("e", "p", "m", "±1", True, kind="calibration", source="ours: bisection")]
    assert tally(claims) == {"paper": {"PASS": 1, "FAIL": 1, "not scored": 1},
                             "calibration": {"PASS": 1, "FAIL": 0, "not scored": 0},
                             "extension": {"PASS": 0, "FAIL": 1, "not scored": 0}}
    md = claims_markdown([(fig, claims)])
    assert "| paper | 1 | 1 | 1 |" in md and "| calibration | 1 | 0 | 0 |" in md and "| extension | 0 | 1 | 0 |" in md
    assert "| figure | class | cites | claim |" in md
    assert "| f | paper | Wen Thm 8 | a | p | m | ±1 (the O(ρ) term) | **PASS** |" in md
    assert "| f | paper | Dai Thm 35 | c | p | m | ±1 (exact) | **outside the hypotheses** |" in md
    assert "| f | extension | — | d | p | m | ±1 (ours: a probe) | **FAIL** |" in md
    gpu = Figure("g", "a GPU figure", lambda df, stem: None, lambda df: [], cite="Dai Fig. 3")
    assert [(c.kind, c.cite, c.verdict) for c in not_run(gpu, "needs a GPU")] == [("paper", "Dai Fig. 3", "not run")]


def test_dai_table1_at_eta_above_one_half_is_shown_not_scored_for_gd_sam_and_usam_alike():
    claims = dai_table1.claims(committed("dai_table1"))
    outside = [c for c in claims if c.verdict == OUTSIDE]
    assert [c.claim.split(":")[0] for c in outside] == ["GD", "SAM", "USAM"]
    assert all("η = 0.8" in c.claim and "Thm 35" in c.note for c in outside)
    assert [c.verdict for c in claims if c.in_hypotheses] == ["PASS"] * 3


def test_dai_thm1_eq3_fails_beyond_lemma_9s_proven_range_and_holds_within_it():
    eq3, proven = dai_thm1.claims(committed("dai_thm1"))[-2:]
    assert eq3.kind == "paper" and eq3.verdict == "FAIL" and "needs η ≤ 1/β = 0.5" in eq3.note
    assert "2β/(4+β²)" not in eq3.note
    assert proven.kind == "extension" and proven.verdict == "PASS" and "runs with η ≤ 0.5 inside" in proven.measured


def test_dai_fig1_counts_the_diverging_rho_and_reads_the_sam_gap_as_an_o_rho2_floor():
    claims = {c.claim: c for c in dai_fig1.claims(committed("dai_fig1"))}
    small = claims["USAM diverges already at small ρ (paper: ρ from 0.001 to 0.1)"]
    assert small.measured.startswith("2/8 values of ρ diverge: ρ = [0.07, 0.1]")
    floor = next(c for name, c in claims.items() if name.startswith("SAM's loss follows GD's down to an O(ρ²) floor"))
    assert floor.kind == "extension" and floor.verdict == "PASS" and "ρ=0.01: 25.6" in floor.measured


def test_usam_between_gd_and_sam_is_judged_on_the_order_dai_state_not_on_a_margin():
    def table(usam_acc: float) -> pd.DataFrame:
        rows = [("gd", 0.1, -0.3, 0.600), ("usam", 0.1, -0.5, usam_acc), ("sam", 0.1, -1.5, 0.700)]
        return pd.DataFrame([{"opt": o, "rho": r, "bias": b, "test_acc": a, "bias_half": b, "test_acc_half": a,
                              "diverged": 0, "dead": 0, "runs": 3} for o, r, b, a in rows]).set_index(["opt", "rho"])

    gd = table(0.61).loc[("gd", 0.1)]
    assert sparse_coding.usam_between(table(0.61), [0.1], gd, "Dai Fig. 9").passed  # 1 point above GD: the order holds
    assert not sparse_coding.usam_between(table(0.59), [0.1], gd, "Dai Fig. 9").passed


def test_wen_fig1_reports_the_full_iterate_and_fails_an_end_point_off_the_manifold():
    claims = wen_fig1.claims(committed("wen_fig1"))
    asc = next(c for c in claims if c.claim.startswith("GD on L^asc → argmin λ_min"))
    assert asc.verdict == "FAIL" and "x = (1.000, 0.993), ‖y‖ = 0.51, L = 0.26" in asc.measured
    batch1 = next(c for c in claims if c.claim.startswith("SAM batch size 1 → argmin F0+F1 (constant η"))
    assert batch1.verdict == OUTSIDE and batch1.cite == "Wen Thm 11" and "(η+ρ)·log(1/ηρ) = 3" in batch1.note


def test_dai_thm2_judges_a_sam_run_once_thm_26s_slowest_drift_reaches_5_rho():
    final = pd.DataFrame({"lr": 1 / 74, "rho": [1 / 74, 2 / 74]})
    needed = dai_thm2.steps_needed(final, [5.0, 7.0])
    assert needed.to_numpy() == pytest.approx(np.log(7 / (5 * final.rho)) / (0.5 * final.lr * final.rho**2))
    assert dai_thm2.judged(final, 1_000_000, [5.0, 7.0]).tolist() == [False, True]


def test_a_narrow_log_axis_gets_at_least_two_labelled_ticks():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([3, 8], [3, 8])
    ax.set(xscale="log", yscale="log", xlim=(3, 8), ylim=(0.5, 200))
    for axis in (ax.xaxis, ax.yaxis):
        label_log_axis(axis)
    fig.canvas.draw()
    xlabels = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and 3 <= t.get_position()[0] <= 8]
    assert len(xlabels) >= 2 and "5" in xlabels
    assert not isinstance(ax.yaxis.get_major_formatter(), matplotlib.ticker.FuncFormatter)  # ≥ 2 decades: as they are
    plt.close(fig)


def test_dai_thm3_scores_gds_limit_below_its_threshold_against_the_o_gamma_terms():
    def runs(offset: float) -> pd.DataFrame:  # y∞² = 36 + offset·γ, the final row of each run
        lrs = np.array([0.5, 1.0, 1.9]) / 36
        return pd.DataFrame({"run": range(3), "step": 5000, "lr": lrs, "x": 0.0, "y": np.sqrt(36 + offset * 36 * lrs),
                             "status": "completed", "task.init": "[2.0, 6.324555320336759]"})

    assert dai_thm3.claims(runs(-0.33))[0].passed  # as measured: y∞² ≈ 36 − γ/3
    assert not dai_thm3.claims(runs(-4.0))[0].passed  # beyond −3γ
    assert not dai_thm3.claims(runs(+0.5))[0].passed  # above γ/η by more than O(η/γ)
