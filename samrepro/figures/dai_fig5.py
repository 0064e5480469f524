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

from samrepro.figures import Claim, Figure, final_rows, save

MOVED = 0.02  # test accuracy change (absolute) that counts as drift; below it the run is "stuck"
ON_MANIFOLD = 0.99  # training accuracy that counts as staying on the manifold of minimizers
NOT_RUN = "needs a GPU, CIFAR-10 and the stage checkpoint: make figs-gpu"


def accuracy_changes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: opt, ρ, test-accuracy change, lowest training accuracy, status (ρ = 0 is GD)."""
    first = df.loc[df.groupby("run")["step"].idxmin()].set_index("run")
    final = final_rows(df).set_index("run")
    return pd.DataFrame(
        {
            "opt": final["opt.name"].where(final.rho > 0, "gd"),
            "rho": final.rho,
            "test_change": final.test_acc - first.test_acc,
            "min_train_acc": df.groupby("run").train_acc.min(),
            "status": final.status,
        }
    )


def draw_accuracies(df: pd.DataFrame, stem: Path, title: str) -> None:
    n_train = df["task.subset"].fillna(50000).iloc[0] if "task.subset" in df else 50000
    epoch = df.step * df["task.batch_size"] / n_train
    rhos = sorted(r for r in df.rho.unique() if r > 0)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("train_acc", "test_acc"), strict=True):
        gd = df[(df.rho == 0) & (df["opt.name"] == "sam")]
        ax.plot(epoch[gd.index], gd[metric], color="k", lw=1.5, label="GD")
        for (opt, rho), run in df[df.rho > 0].groupby(["opt.name", "rho"]):
            ax.plot(
                epoch[run.index],
                run[metric],
                color=cmap(rhos.index(rho) / max(1, len(rhos) - 1)),
                ls="-" if opt == "sam" else "--",
                label=f"{opt.upper()} ρ={rho:g}",
            )
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    save(fig, stem)


def draw(df: pd.DataFrame, stem: Path) -> None:
    draw_accuracies(
        df,
        stem,
        r"Dai et al. Fig. 5: ResNet18 from the adversarial checkpoint, "
        rf"$\eta$ = {df.lr.iloc[0]:g}, batch {df['task.batch_size'].iloc[0]:g}",
    )


def sam_drifts(runs: pd.DataFrame) -> Claim:
    sam = runs[runs.opt == "sam"]
    ok = (sam.test_change >= MOVED) & (sam.min_train_acc >= ON_MANIFOLD) & (sam.status == "completed")
    return Claim(
        "SAM drifts along the minima for every ρ",
        "train acc stays ≈100%, test acc rises",
        f"{int(ok.sum())}/{len(sam)} SAM runs; test change ∈ [{sam.test_change.min():+.3f}, "
        f"{sam.test_change.max():+.3f}], min train acc {sam.min_train_acc.min():.4f}",
        f"Δtest ≥ {MOVED}, train ≥ {ON_MANIFOLD}",
        bool(ok.all()) and len(sam) > 0,
    )


def claims(df: pd.DataFrame) -> list[Claim]:
    if df.empty:
        return [
            Claim(c, p, "not run", "", None, NOT_RUN)
            for c, p in (
                ("GD stays stuck at the adversarial minimum", "test acc flat (48% in the paper)"),
                ("SAM drifts along the minima for every ρ", "train acc stays ≈100%, test acc rises"),
                ("USAM with small ρ is stuck like GD", "test acc flat"),
                ("USAM with large ρ leaves the manifold", "train acc drops"),
            )
        ]
    runs = accuracy_changes(df)
    gd = runs[runs.opt == "gd"]
    usam = runs[runs.opt == "usam"].sort_values("rho")
    small, large = usam.iloc[0], usam.iloc[-1]
    return [
        Claim(
            "GD stays stuck at the adversarial minimum",
            "test acc flat (48% in the paper)",
            f"test change {gd.test_change.abs().max():+.3f}",
            f"|Δtest| < {MOVED}",
            bool((gd.test_change.abs() < MOVED).all()),
        ),
        sam_drifts(runs),
        Claim(
            "USAM with small ρ is stuck like GD",
            "test acc flat",
            f"ρ = {small.rho:g}: test change {small.test_change:+.3f}",
            f"|Δtest| < {MOVED}",
            bool(abs(small.test_change) < MOVED),
        ),
        Claim(
            "USAM with large ρ leaves the manifold",
            "train acc drops",
            f"ρ = {large.rho:g}: min train acc {large.min_train_acc:.4f}, {large.status}",
            f"train acc < {ON_MANIFOLD} or diverged",
            bool(large.min_train_acc < ON_MANIFOLD or large.status == "diverged"),
        ),
    ]


FIGURE = Figure(
    "dai_fig5",
    "ResNet18 on CIFAR-10 from the adversarial checkpoint",
    draw,
    claims,
    gpu=True,
    notes="The adversarial checkpoint is regenerated (samrepro task=cifar10 stage=adversarial_init: Liu et "
    "al.'s recipe with Damian et al.'s 10 confusion copies, SGD lr 0.1, batch 128) since Damian et al.'s "
    "cannot be downloaded here. ρ ∈ {0.01, 0.05, 0.1, 0.5} and 100 epochs are our choices (not given). "
    f"Stuck = |Δ test acc| < {MOVED}; on the manifold = train acc ≥ {ON_MANIFOLD}.",
)
