"""Stages: a fixed sequence of trainer calls that produces a checkpoint (``samrepro … stage=<name>``).

A stage (``conf/stage/<name>.yaml``) lists phases; each phase is a set of config overrides (task keys,
``opt``, ``lr``, ``steps``, ``until``, ``checkpoint_every``, …) merged into the run's config. Phase k
runs in ``<run dir>/<phase name>/`` (its own metrics.csv and summary.json) and starts from the model
phase k−1 ended with (``task.init`` = that phase's final checkpoint). Each phase must end by reaching
its ``until`` thresholds; the final model is then saved to ``stage.save_to`` with the recipe (the
whole config) and each phase's final metrics. An interrupted stage resumes: finished phases are
skipped, the running one continues from its last checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from samrepro.cli import execute
from samrepro.config import ConfigError, run_values, validate
from samrepro.records import is_finished, read_summary, write_json_atomic
from samrepro.train import CHECKPOINT


def phase_config(cfg: DictConfig, overrides: DictConfig, init: Path | None) -> DictConfig:
    """The run config of one phase: ``cfg`` without its stage, with the phase's overrides."""
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "stage"])
    OmegaConf.set_struct(base, False)
    merged = OmegaConf.merge(base, overrides)
    if init is not None:
        merged.task.init = str(init)
    return merged


def run_stage(cfg: DictConfig, run_dir: Path) -> dict:
    """Runs the phases of ``cfg.stage`` in order (skipping finished ones) and saves the final model."""
    init, phases, steps_done = None, {}, 0
    for name, overrides in cfg.stage.phases.items():
        phase_cfg = phase_config(cfg, overrides, init)
        validate(phase_cfg)
        phase_dir = Path(run_dir) / name
        if is_finished(phase_dir):
            summary = read_summary(phase_dir)
        else:
            summary = execute(phase_cfg, [run_values(phase_cfg)], [phase_dir], progress=cfg.progress)[0]
        if not summary.get("until_reached"):
            raise ConfigError(
                f"stage.phases.{name}: ended ({summary['status']} after {summary['steps_done']} steps, "
                f"{summary['final']}) without reaching until={dict(phase_cfg.get('until') or {})}; "
                f"raise stage.phases.{name}.steps and run again to continue it"
            )
        phases[name] = summary
        steps_done += summary["steps_done"]
        init = phase_dir / CHECKPOINT
    final = phases[name]["final"]
    save_to = Path(cfg.stage.save_to)
    save_to.parent.mkdir(parents=True, exist_ok=True)
    state = torch.load(init, map_location="cpu", weights_only=True)["task"]["model"]
    tmp = save_to.with_name(save_to.name + ".tmp")
    torch.save(
        {
            "model": state,
            "recipe": OmegaConf.to_container(cfg, resolve=True),
            "metrics": final,
            "phases": {k: v["final"] for k, v in phases.items()},
        },
        tmp,
    )
    os.replace(tmp, save_to)
    summary = {
        "status": "completed",
        "steps_done": steps_done,
        "final": final,
        "checkpoint": str(save_to),
        "phases": phases,
    }
    write_json_atomic(Path(run_dir) / "summary.json", summary)
    return summary
