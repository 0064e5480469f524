"""Dai et al. Fig. 5 (§3.3): ResNet18 on CIFAR-10 from the "adversarial checkpoint" (Liu et al. 2020; a
global minimum with 100% train and poor test accuracy), η = 0.001, batch 128, SAM and USAM with several
ρ and GD (ρ = 0). Claims: GD stays stuck (test accuracy flat); SAM drifts along the minima (train
accuracy stays 100%, test accuracy rises) for every ρ; USAM with small ρ is stuck like GD, with large ρ
it leaves the manifold of minimizers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from samrepro import theory
from samrepro.figures import Claim, Figure, final_rows, save

MOVED = 0.02  # test accuracy change (absolute) that counts as drift; below it the run is "stuck"
ON_MANIFOLD = 0.99  # training accuracy that counts as staying on the manifold of minimizers
COVERED = 3.0  # a SAM run is judged when it lasts ≥ 3 drift time constants 1/(ηρ²) (as dai_thm2)
NOT_RUN = "needs a GPU, CIFAR-10 and the stage checkpoint: make figs-gpu (or figs-gpu-quick)"


def start_row(df: pd.DataFrame) -> pd.Series:
    """The step-0 row of the first run: the initialization or checkpoint every run starts from
    (train/test accuracy, λ_max measured there)."""
    return df[df.step == 0].iloc[0]


def usam_threshold(df: pd.DataFrame) -> tuple[float, float]:
    """(λ_max at step 0, USAM's threshold ρ* = (2/η − λ)/λ² there; Dai et al. Thm 1 / Thm 10)."""
    lam = float(start_row(df).lambda_max)
    return lam, float(theory.usam_min_rho(df.lr.iloc[0], lam))


def accuracy_changes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: opt, ρ, test-accuracy change, lowest training accuracy, status, SAM's drift
    coverage ηρ²T with T its optimizer steps (ρ = 0 is GD)."""
    first = df.loc[df.groupby("run")["step"].idxmin()].set_index("run")
    final = final_rows(df).set_index("run")
    return pd.DataFrame(
        {
            "opt": final["opt"].where(final.rho > 0, "gd"),
            "rho": final.rho,
            "test_change": final.test_acc - first.test_acc,
            "min_train_acc": df.groupby("run").train_acc.min(),
            "status": final.status,
            "coverage": final.lr * final.rho**2 * final.step,
        }
    )


def draw_accuracies(df: pd.DataFrame, stem: Path, title: str) -> None:
    n_train = df["task.subset"].fillna(50000).iloc[0] if "task.subset" in df else 50000
    epoch = df.step * df["task.batch_size"] / n_train
    rhos = sorted(r for r in df.rho.unique() if r > 0)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("train_acc", "test_acc"), strict=True):
        gd = df[(df.rho == 0) & (df["opt"] == "sam")]
        ax.plot(epoch[gd.index], gd[metric], color="k", lw=1.5, label="GD")
        for (opt, rho), run in df[df.rho > 0].groupby(["opt", "rho"]):
            ax.plot(
                epoch[run.index],
                run[metric],
                color=cmap(rhos.index(rho) / max(1, len(rhos) - 1)),
                ls="-" if opt == "sam" else "--",
                label=f"{opt.upper()} ρ={rho:g}",
            )
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "))
    axes[1].legend(fontsize=7, ncol=2)
    lam, rho_star = usam_threshold(df)
    fig.suptitle(f"{title}\nλ_max at the checkpoint = {lam:.3g}; USAM threshold ρ* = (2/η − λ)/λ² = {rho_star:.3g}")
    save(fig, stem)


def draw(df: pd.DataFrame, stem: Path) -> None:
    draw_accuracies(
        df,
        stem,
        r"Dai et al. Fig. 5: ResNet18 from the adversarial checkpoint, "
        rf"$\eta$ = {df.lr.iloc[0]:g}, batch {df['task.batch_size'].iloc[0]:g}",
    )


CITE = "Dai Fig. 5 (§3.2)"
CHECKPOINT = dict(kind="calibration", source="ours: train ≥ 99.99% reads 'a global minimum'; 10 points of test "
                  "accuracy for a regenerated checkpoint")
GRID = dict(kind="calibration", source="exact: our ρ grid (not given in the paper) must straddle ρ*")


def paper(cite: str) -> dict:
    """Class, citation and tolerance source of a claim read off Dai's CIFAR-10 figures."""
    return dict(kind="paper", cite=cite, source=f"ours: Dai give curves, no threshold; Δtest ≥ {MOVED} moves, "
                f"train acc ≥ {ON_MANIFOLD} stays on the manifold")


def checkpoint_claim(df: pd.DataFrame, name: str, paper_test: float | None) -> Claim:
    """The checkpoint's train and test accuracy (every run's step-0 row) next to the paper's."""
    row = start_row(df)
    ok = row.train_acc >= 0.9999 and (paper_test is None or abs(row.test_acc - paper_test) <= 0.10)
    return Claim(
        f"the {name} checkpoint is a global minimum" + (" with poor test accuracy" if paper_test else ""),
        "train acc 100 %" + (f", test acc {paper_test:.0%} (Dai et al.)" if paper_test else ""),
        f"train acc {row.train_acc:.4%}, test acc {row.test_acc:.2%}",
        "train ≥ 99.99 %" + (" and test within 10 points" if paper_test else ""),
        bool(ok),
        "" if ok else "the regenerated checkpoint differs from Damian et al.'s (see the stage's recipe)",
        **CHECKPOINT,
    )


def grid_claim(df: pd.DataFrame, usam: pd.DataFrame) -> Claim:
    """Whether the USAM ρ grid straddles the measured threshold ρ* (else the USAM claims say nothing)."""
    lam, rho_star = usam_threshold(df)
    below, above = usam[usam.rho < rho_star], usam[usam.rho > rho_star]
    return Claim(
        "USAM's ρ grid straddles its threshold ρ* = (2/η − λ)/λ²",
        "some ρ < ρ* and some ρ > ρ*",
        f"λ_max at step 0 = {lam:.4g} (2/η = {2 / df.lr.iloc[0]:g}), ρ* = {rho_star:.3g}; "
        f"grid {sorted(usam.rho)}",
        "exact",
        bool(len(below) and len(above)),
        "" if len(below) and len(above) else "rerun with a ρ grid around ρ*",
        **GRID,
    )


def sam_drifts(runs: pd.DataFrame, cite: str) -> Claim:
    sam = runs[runs.opt == "sam"]
    judged = sam[sam.coverage >= COVERED]
    ok = (judged.test_change >= MOVED) & (judged.min_train_acc >= ON_MANIFOLD) & (judged.status == "completed")
    short = sam[sam.coverage < COVERED]
    return Claim(
        "SAM drifts along the minima for every ρ",
        "train acc stays ≈100%, test acc rises",
        (f"{int(ok.sum())}/{len(judged)} judged SAM runs; test change ∈ [{judged.test_change.min():+.3f}, "
         f"{judged.test_change.max():+.3f}], min train acc {judged.min_train_acc.min():.4f}" if len(judged)
         else "no SAM run judged")
        + (f"; {len(short)} runs with ηρ²T < {COVERED:g} (ρ ≤ {short.rho.max():g}) drawn, not judged" if len(short)
           else ""),
        f"Δtest ≥ {MOVED}, train ≥ {ON_MANIFOLD}",
        bool(ok.all()) and len(judged) > 0,
        "" if len(judged) else "no SAM run lasts 3/(ηρ²) steps: raise steps or ρ",
        **paper(cite),
    )


def claims(df: pd.DataFrame) -> list[Claim]:
    if df.empty:
        return [
            Claim(c, p, "not run", "", None, NOT_RUN, **role)
            for c, p, role in (
                ("the adversarial checkpoint is a global minimum with poor test accuracy",
                 "train acc 100 %, test acc 48 % (Dai et al.)", CHECKPOINT),
                ("USAM's ρ grid straddles its threshold ρ* = (2/η − λ)/λ²", "some ρ < ρ* and some ρ > ρ*", GRID),
                ("GD stays stuck at the adversarial minimum", "test acc flat (48% in the paper)", paper(CITE)),
                ("SAM drifts along the minima for every ρ", "train acc stays ≈100%, test acc rises", paper(CITE)),
                ("USAM with ρ < ρ* is stuck like GD", "test acc flat", paper(CITE)),
                ("USAM with ρ > ρ* leaves the manifold", "train acc drops", paper(CITE)),
            )
        ]
    runs = accuracy_changes(df)
    gd = runs[runs.opt == "gd"]
    usam = runs[runs.opt == "usam"].sort_values("rho")
    rho_star = usam_threshold(df)[1]
    small, large = usam[usam.rho < rho_star], usam[usam.rho > rho_star]
    left = (large.min_train_acc < ON_MANIFOLD) | (large.status == "diverged")
    return [
        checkpoint_claim(df, "adversarial", 0.48),
        grid_claim(df, usam),
        Claim(
            "GD stays stuck at the adversarial minimum",
            "test acc flat (48% in the paper)",
            f"test change {gd.test_change.abs().max():+.3f}",
            f"|Δtest| < {MOVED}",
            bool((gd.test_change.abs() < MOVED).all()),
            **paper(CITE),
        ),
        sam_drifts(runs, CITE),
        Claim(
            "USAM with ρ < ρ* is stuck like GD",
            "test acc flat",
            f"ρ = {list(small.rho)}: test change {[round(v, 3) for v in small.test_change]}",
            f"|Δtest| < {MOVED}",
            bool(len(small)) and bool((small.test_change.abs() < MOVED).all()),
            "" if len(small) else "no USAM ρ below ρ*",
            **paper(CITE),
        ),
        Claim(
            "USAM with ρ > ρ* leaves the manifold",
            "train acc drops",
            f"ρ = {list(large.rho)}: min train acc {[round(v, 4) for v in large.min_train_acc]}, "
            f"{list(large.status)}",
            f"train acc < {ON_MANIFOLD} or diverged",
            bool(len(large)) and bool(left.all()),
            "" if len(large) else "no USAM ρ above ρ*",
            **paper(CITE),
        ),
    ]


NOTES = (
    "The adversarial checkpoint is regenerated (stage=adversarial_init: Liu et al.'s recipe — SGD lr 0.1, batch "
    "128, ×0.1 at 1/2 and 5/6 of each phase's cap — with Damian et al.'s 10 confusion copies; the quick profile: "
    "1 copy) since Damian et al.'s cannot be downloaded here. ρ grid and epochs are our choices (not given); "
    f"λ_max is measured at the checkpoint (2,048 training images) and gives USAM's threshold ρ*; SAM runs with "
    f"ηρ²T < {COVERED:g} are drawn but not judged. Stuck = |Δ test acc| < {MOVED}; on the manifold = train acc ≥ "
    f"{ON_MANIFOLD}."
)


def with_quick_profile(fig_id: str, title: str, draw, claims, notes: str, quick: str) -> tuple[Figure, list[Figure]]:
    """The figure of the paper-length profile and, as ``<id>_quick``, of the quick one (make figs-gpu-quick)."""
    cite = f"Dai Fig. {fig_id.removeprefix('dai_fig')}"
    return Figure(fig_id, title, draw, claims, gpu=True, notes=notes, cite=cite), [
        Figure(f"{fig_id}_quick", f"{fig_id}, quick profile", draw, claims, gpu=True, notes=quick, cite=cite)
    ]


FIGURE, FIGURES = with_quick_profile("dai_fig5", "ResNet18 on CIFAR-10 from the adversarial checkpoint", draw, claims,
                                     NOTES, "dai_fig5's claims on 20 epochs from the one-copy adversarial checkpoint.")
