"""``samrepro-figs [ID …]``: run each figure's sweep (finished runs are skipped), write results/<id>.csv
and results/figures/<id>.png|pdf, and judge its claims. With no ids (``make figs``) it does every CPU
figure (the GPU ones from their committed CSVs) and rewrites results/CLAIMS.md; with ids it does only
those and leaves CLAIMS.md as it is, unless ``--claims`` (the other figures judged from their CSVs).
``--gpu`` (``make figs-gpu``) runs the sweeps of the GPU figures (CIFAR-10), which need CUDA and the
dataset, instead of the CPU ones. Figures are made in parallel, one worker process per core (``-j``).

Staleness is judged by content, never by file times (a fresh clone's are arbitrary): results/<id>.manifest.json
records what the CSV was made from (each run folder with its config's fingerprint, or for a figure with
its own ``compute`` the hash of that code), the CSV's sha256, and what the figure was last drawn from
(the CSV's sha256 and the drawing code's hash). A file is rewritten only when what it is made from changed."""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path

import matplotlib
import pandas as pd
import yaml

from samrepro.cli import CONF_MODULE, multirun, one_line_errors
from samrepro.collect import collect, write_csv_atomic
from samrepro.config import ConfigError
from samrepro.figures import KINDS, OUTSIDE, Claim, Figure, registry
from samrepro.records import read_summary, write_atomic
from samrepro.runner import code_version

matplotlib.use("Agg")


def file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def code_sources(func: Callable) -> dict[str, str]:
    """module name → source, for ``func``'s module and every samrepro module whose functions or classes it uses,
    or that it imports as a module, transitively (dai_thm1 draws with ``stability.draw_phase_diagram``,
    dai_thm3 with ``theory.gd_limit_y2``, dai_thm4 computes with ``theory``)."""
    sources, todo = {}, [func.__module__]
    while todo:
        name = todo.pop()
        if name in sources or name.partition(".")[0] != __package__.partition(".")[0]:
            continue
        module = sys.modules[name]
        sources[name] = Path(module.__file__).read_text()
        todo += [v.__module__ for v in vars(module).values() if inspect.isfunction(v) or inspect.isclass(v)]
        todo += [v.__name__ for key, v in vars(module).items()  # not a package's own submodules: not used by it
                 if inspect.ismodule(v) and v.__name__ != f"{name}.{key}"]
    return sources


def digest(sources: dict[str, str]) -> str:
    return hashlib.sha256("".join(sources[name] for name in sorted(sources)).encode()).hexdigest()


def code_hash(func: Callable) -> str:
    return digest(code_sources(func))


def compute_inputs(compute: Callable) -> dict:
    """What a figure's ``compute`` depends on: the code it uses (:func:`code_sources`) and, when it runs
    sweeps (it uses samrepro.cli's ``multirun``), the code that computes runs and the config files, read as
    files. A compute that runs no sweep is not made again for a change elsewhere (a calibration, cached)."""
    sources = code_sources(compute)
    inputs = {"compute_code": digest(sources)}
    if "samrepro.cli" in sources:
        inputs.update(samrepro_code=code_version("samrepro.tasks"), conf=conf_hash())
    return inputs


def conf_hash() -> str:
    """sha256 of every config file samrepro composes runs from (conf/**/*.yaml)."""
    conf = Path(str(resources.files(CONF_MODULE)))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(conf.rglob("*.yaml")))).hexdigest()


def read_manifest(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def make_csv(fig: Figure, csv: Path, manifest: dict) -> tuple[pd.DataFrame, dict]:
    """The figure's DataFrame and its manifest's ``inputs`` and ``csv_sha256``. A sweep runs (finished runs
    are skipped) and its inputs are its run folders, each with "<fingerprint> <metrics_sha256>": its config and
    what it computed (a CPU whose kernels round otherwise computes other last bits: its CSV is then its own, not
    the one committed from another machine); a ``compute``'s inputs are :func:`compute_inputs`, and it runs
    only when the CSV is stale. The CSV is rewritten only when its inputs differ from the manifest's or the
    file's sha256 does not match the one recorded (e.g. a truncated CSV)."""
    if fig.compute is not None:
        inputs = compute_inputs(fig.compute)
    else:
        run_dirs = multirun([f"experiment={fig.id}"])
        summaries = {Path(os.path.relpath(d)).as_posix(): read_summary(d) for d in run_dirs}
        inputs = {"runs": {d: f"{s.get('fingerprint')} {s.get('metrics_sha256')}" for d, s in summaries.items()}}
    made = {"inputs": inputs, "csv_sha256": manifest.get("csv_sha256")}
    if manifest.get("inputs") == inputs and made["csv_sha256"] == file_sha256(csv):
        return pd.read_csv(csv), made
    df = fig.compute() if fig.compute is not None else collect(run_dirs).drop(columns=["run_dir"])
    write_csv_atomic(df, csv)
    return df, {**made, "csv_sha256": file_sha256(csv)}


def draw_if_stale(fig: Figure, df: pd.DataFrame, stem: Path, csv_sha256: str | None, manifest: dict) -> dict:
    """Draws ``<stem>.png|pdf`` unless they are the files (their sha256) last drawn from this CSV with this
    drawing code — a PNG and a PDF are one unit: a missing, damaged or stale one redraws both; returns the
    manifest's ``drawn_from``."""
    source = {"csv_sha256": csv_sha256, "drawing_code": code_hash(fig.draw)}
    files = [stem.with_suffix(s) for s in (".png", ".pdf")]
    found = {**source, "files": {p.name: file_sha256(p) for p in files}}
    if manifest.get("drawn_from") == found:
        return found
    fig.draw(df, stem)
    return {**source, "files": {p.name: file_sha256(p) for p in files}}


def file_states(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """Each existing file of ``paths`` with its inode and mtime: writing a file changes one or both. Only
    used to report what a run wrote, never to judge staleness."""
    return {p: (s.st_ino, s.st_mtime_ns) for p in paths if p.is_file() for s in [p.stat()]}


def tally(claims: list[Claim]) -> dict[str, dict[str, int]]:
    """Per class of claim (``KINDS``): how many PASS, FAIL and are not scored (not run, or outside the
    hypotheses of the statement)."""
    counts = {kind: {"PASS": 0, "FAIL": 0, "not scored": 0} for kind in KINDS}
    for c in claims:
        counts[c.kind][c.verdict if c.verdict in ("PASS", "FAIL") else "not scored"] += 1
    return counts


def claims_markdown(rows: list[tuple[Figure, list[Claim]]]) -> str:
    counts = tally([c for _, claims in rows for c in claims])
    lines = [
        "# Claims of the papers, measured",
        "",
        "Regenerated by `make figs` from the CSVs in this folder. PASS/FAIL uses the tolerance given, whose",
        "source each row states; a FAIL is a measured result, reported with its reason, never tuned away.",
        "Each row is a **paper** claim (a statement of Wen et al. 2023 or Dai et al. 2023, or of Ahn et al.",
        "2023a as Dai use it, cited), a **calibration** (a setting we calibrate) or an **extension** (our own",
        "probe). Only paper claims in the regime the paper states are scored against the paper; a setting",
        f"outside the statement's hypotheses is run and shown as *{OUTSIDE}*, not scored.",
        "",
        "| class | PASS | FAIL | not scored |",
        "|---|---|---|---|",
        *(f"| {kind} | {n['PASS']} | {n['FAIL']} | {n['not scored']} |" for kind, n in counts.items()),
        "",
        "| figure | class | cites | claim | prediction | measured | tolerance (source) | verdict | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fig, claims in rows:
        for c in claims:
            cells = [fig.id, c.kind, c.cite or "—", c.claim, c.prediction, c.measured,
                     f"{c.tolerance} ({c.source})", f"**{c.verdict}**", c.note]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    notes = [(fig, fig.notes.strip()) for fig, _ in rows if fig.notes.strip()]
    if notes:
        lines += ["", "## Settings the papers leave open, and what we chose", ""]
        lines += [f"- **{fig.id}** — {note}" for fig, note in notes]
    return "\n".join(lines) + "\n"


def not_run(fig: Figure, note: str) -> list[Claim]:
    return [Claim(fig.title, "see the paper", "not run", "—", None, note=note, kind="paper" if fig.cite else
                  "extension", cite=fig.cite, source="—")]


def needs(fig: Figure) -> str:
    return "needs " + ("a GPU and CIFAR-10: `make figs-gpu`" if fig.gpu else f"`samrepro-figs {fig.id}`")


def produce(fig_id: str, results: Path, gpu: bool) -> tuple[str, list[Claim], bool]:
    """One figure (in a worker process of ``main``): its sweep, its CSV and manifest, its drawing when stale,
    its claims; returns what to print, the claims, and whether its sweep ran."""
    fig = registry()[fig_id]
    csv, manifest_path = results / f"{fig_id}.csv", results / f"{fig_id}.manifest.json"
    outputs = [csv, manifest_path, *(results / "figures" / f"{fig_id}{suffix}" for suffix in (".png", ".pdf"))]
    manifest, before, start = read_manifest(manifest_path), file_states(outputs), time.perf_counter()
    if fig.gpu == gpu:
        try:
            df, made = make_csv(fig, csv, manifest)
        except (ConfigError, SystemExit) as err:  # SystemExit: the sweep's one-line error, already printed
            if isinstance(err, ConfigError):
                print(f"samrepro-figs: error: {fig_id}: {err}", file=sys.stderr)
            if csv.exists():  # e.g. another process holds its runs: its claims as its CSV stands
                return f"{fig_id}: failed; its claims judged from {csv} as it is", fig.claims(pd.read_csv(csv)), False
            return f"{fig_id}: failed", not_run(fig, "its sweep failed: see the error printed by samrepro-figs"), False
    elif csv.exists():  # the other kind's figure: drawn and judged from its committed CSV
        df, made = pd.read_csv(csv), {k: manifest[k] for k in ("inputs", "csv_sha256") if k in manifest}
    else:
        return f"{fig_id}: not run ({needs(fig)})", not_run(fig, needs(fig)), True
    made["drawn_from"] = draw_if_stale(fig, df, results / "figures" / fig_id, file_sha256(csv), manifest)
    if made != manifest:
        write_atomic(manifest_path, json.dumps(made, indent=2, sort_keys=True) + "\n")
    written = [str(p) for p, state in file_states(outputs).items() if before.get(p) != state]
    return (f"{fig_id}: {len(df)} rows in {time.perf_counter() - start:.1f} s; "
            + (f"wrote {', '.join(written)}" if written else "up to date, nothing written")), fig.claims(df), True


def produce_group(fig_ids: list[str], results: Path, gpu: bool) -> list[tuple[str, list[Claim], bool]]:
    """Figures that share a sweep's runs, one after another in one worker (one writer per run folder)."""
    return [produce(fig_id, results, gpu) for fig_id in fig_ids]


INTERRUPTIONS = (signal.SIGINT, signal.SIGTERM)
_stop: multiprocessing.synchronize.Event | None = None  # in a worker: set by its parent once interrupted


def _start_worker(stop: multiprocessing.synchronize.Event) -> None:
    """A worker's initializer (it started ignoring Ctrl-C and SIGTERM: :func:`interruptions_ignored`)."""
    global _stop
    _stop = stop


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing (SIG_IGN set while a signal is pending would raise in its place)."""


def _interrupt_once(signum: int, frame: object) -> None:
    for sig in INTERRUPTIONS:  # a second signal (the group's, then the parent's) must not cut the first short
        signal.signal(sig, _ignore)
    raise KeyboardInterrupt


def work(fig_ids: list[str], results: Path, gpu: bool) -> list[tuple[str, list[Claim], bool]] | None:
    """:func:`produce_group` in a worker process, which ignores Ctrl-C and SIGTERM while it waits for work (so
    that no worker prints a traceback) and is interrupted by one while it works: the runs in progress say
    ``interrupted``, and it returns None, as it does for work that reaches it after its parent was interrupted."""
    for sig in INTERRUPTIONS:
        signal.signal(sig, _interrupt_once)
    try:
        return None if _stop.is_set() else produce_group(fig_ids, results, gpu)
    except KeyboardInterrupt:
        return None
    finally:
        for sig in INTERRUPTIONS:
            signal.signal(sig, _ignore)


@contextmanager
def interruptions_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored in the block; processes started in it inherit that."""
    saved = [signal.signal(sig, signal.SIG_IGN) for sig in INTERRUPTIONS]
    try:
        yield
    finally:
        for sig, handler in zip(INTERRUPTIONS, saved):
            signal.signal(sig, handler)


# The longest figures, longest first (each started as a worker is free, so that none is left with a long one at
# the end), in seconds on the 2-core reference machine, 2026-12-04: dai_thm2 74, ahn_fig1 39, dai_fig9 29,
# dai_fig2 28, dai_fig7 19, wen_fig1 18, wen_thm4 12, wen_table1 12, dai_fig6 11, stability_matrix_sensing 11.
LONGEST_FIRST = ("dai_thm2", "ahn_fig1", "dai_fig9", "dai_fig2", "dai_fig7", "wen_fig1", "wen_thm4", "wen_table1",
                 "dai_fig6", "stability_matrix_sensing")


def sweep_groups(fig_ids: list[str]) -> list[list[str]]:
    """``fig_ids`` grouped by the run folders they share (the ``name`` of their experiment's sweep), the
    groups of LONGEST_FIRST first."""
    groups: dict[str, list[str]] = {}
    for fig_id in sorted(fig_ids, key=lambda i: LONGEST_FIRST.index(i) if i in LONGEST_FIRST else len(LONGEST_FIRST)):
        experiment = resources.files(CONF_MODULE) / "experiment" / f"{fig_id}.yaml"
        name = yaml.safe_load(experiment.read_text()).get("name") if experiment.is_file() else None
        groups.setdefault(name or fig_id, []).append(fig_id)
    return list(groups.values())


def main(argv: list[str] | None = None) -> None:
    """``samrepro-figs`` (through :func:`samrepro.cli.figs`); an operational error (a full disk, a read-only
    results folder) is one line."""
    with one_line_errors():
        make_figures(argv)


def make_figures(argv: list[str] | None) -> None:
    figures = registry()
    parser = argparse.ArgumentParser(prog="samrepro-figs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help=f"figure ids (default: all): {', '.join(figures)}")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--gpu", action="store_true",
                        help="run the sweeps of the GPU figures (those named, default all), not the CPU ones")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="figures made at once, each in a worker process (default: one per core)")
    parser.add_argument("--claims", action="store_true",
                        help="with ids: rewrite CLAIMS.md too, judging the other figures from their CSVs")
    args = parser.parse_args(argv)
    unknown = [i for i in args.ids if i not in figures]
    if unknown:
        parser.exit(2, f"samrepro-figs: error: unknown figure id {unknown[0]}; allowed: {', '.join(figures)}\n")
    (args.results / "figures").mkdir(parents=True, exist_ok=True)
    rows, failed = {}, []
    groups = sweep_groups(args.ids or list(figures))
    jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(groups)))
    context = multiprocessing.get_context("spawn")
    stop = context.Event() if jobs > 1 else None  # set once this process is interrupted: see work()
    pool = ProcessPoolExecutor(jobs, context, _start_worker, (stop,)) if jobs > 1 else None
    with pool or nullcontext():  # the workers make the figures; this process assembles the claims
        if pool:
            with interruptions_ignored():  # the workers start now: see work()
                futures = {pool.submit(work, g, args.results, args.gpu): g for g in groups}
            done = ((futures[f], f.result()) for f in as_completed(futures))  # each group as it ends
        else:
            done = ((g, produce_group(g, args.results, args.gpu)) for g in groups)
        try:
            for group, result in done:
                if result is None:  # its worker was interrupted
                    raise KeyboardInterrupt
                for fig_id, (message, claims, ok) in zip(group, result):
                    print(message, flush=True)
                    rows[fig_id] = claims
                    failed += [] if ok else [fig_id]
        except KeyboardInterrupt:
            if pool:  # the figures in progress are interrupted (if the signal did not reach the workers too),
                stop.set()  # those not started dropped, and the workers waited for
                for worker in multiprocessing.active_children():
                    worker.terminate()
                pool.shutdown(cancel_futures=True)
            raise
    for fig_id in [i for i in figures if i in rows]:  # the claims in the registry's order
        for c in rows[fig_id]:
            print(f"  [{c.verdict}] {fig_id}: {c.claim} — measured {c.measured}")
    claims_md = args.results / "CLAIMS.md"
    if args.ids and not args.claims:
        print(f"{claims_md} left as it is: a full run (samrepro-figs with no ids, `make figs`) or --claims rewrites it")
    else:
        for fig_id, fig in figures.items():  # the figures not named: judged from their committed CSVs
            if fig_id not in rows:
                csv = args.results / f"{fig_id}.csv"
                rows[fig_id] = fig.claims(pd.read_csv(csv)) if csv.exists() else not_run(fig, needs(fig))
        write_atomic(claims_md, claims_markdown([(fig, rows[fig_id]) for fig_id, fig in figures.items()]))
        print(f"wrote {claims_md}")
    if failed:
        failed = [i for i in figures if i in failed]  # in the registry's order, whichever worker ended first
        parser.exit(2, f"samrepro-figs: error: {len(failed)} figure(s) failed: {', '.join(failed)}\n")
