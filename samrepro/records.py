"""The run folder: ``config.yaml`` (samrepro's marker line, then the resolved config; written first),
``metrics.csv`` (a row per logged step, each float the shortest text that reads back as the same double),
``summary.json`` (written last), ``.hydra/`` (Hydra's record) and, for resumable runs, ``checkpoint.pt``, each
written atomically. :func:`claim` refuses a folder holding files samrepro did not write or another config's
result, and never deletes anything; a finished run whose metrics.csv lost its recorded checksum is recomputed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

import yaml

from samrepro.config import NON_RESULT_KEYS, ConfigError

log = logging.getLogger("samrepro")
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YamlDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

FINISHED = ("completed", "diverged")
MARKER = "# samrepro run record"  # config.yaml's first line: "<MARKER>, code <version>, fingerprint <hash>"
CONFIG, METRICS, SUMMARY = "config.yaml", "metrics.csv", "summary.json"
CHECKPOINT, HYDRA_DIR, LOCK = "checkpoint.pt", ".hydra", ".samrepro.lock"
RUN_FILES = frozenset({CONFIG, METRICS, SUMMARY, CHECKPOINT, HYDRA_DIR, LOCK})


HOST = socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_atomic(path: Path | str, data: str | bytes | dict | Callable[[Path], object], clean: bool = True) -> None:
    """The one way samrepro writes a file. ``data`` — text (UTF-8), bytes, a dict (as indented JSON) or a
    function that writes the path it is given — goes to a temp file beside ``path``, named for this host and
    process (``<name>.<host>.<pid>.tmp``: two writers never share one), then renamed onto ``path``, so a kill
    leaves the old file or the new one. With ``clean``, temp files of ``path`` left by a killed process of this
    host are removed first (a run folder's are removed once, when it is locked). Paths as strings: a large
    sweep writes six files a run."""
    path = os.fspath(path)
    if clean:
        folder, name = os.path.split(path)
        remove_stale_temps(folder or ".", f"{name}.")
    tmp = temp_path(path)
    try:
        if callable(data):
            data(Path(tmp))
        else:
            write_text(tmp, json.dumps(data, indent=2) + "\n" if isinstance(data, dict) else data)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def link_or_copy(source: Path, path: Path) -> None:
    """``source``'s bytes at ``path``: a hard link (samrepro replaces a file, never rewrites it in place; an edit
    in place of either shows in both runs' checksums), or a copy where there can be none (another device)."""
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)


def temp_path(path: Path | str) -> str:
    """This process's temp file for ``path``: ``<name>.<host>.<pid>.tmp`` (what :func:`remove_stale_temps` reads)."""
    return f"{os.fspath(path)}.{HOST}.{os.getpid()}.tmp"


def remove_stale_temps(folder: Path, prefix: str = "") -> None:
    """Removes the temp files (``<prefix>…<host>.<pid>.tmp``) in ``folder`` that killed processes of this host
    left."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            rest, _, pid = name[:-len(".tmp")].rpartition(".")
            if rest.endswith(f".{HOST}") and pid.isdigit() and not _alive(int(pid)):
                Path(folder, name).unlink(missing_ok=True)


def remove_run_temps(run_dir: Path) -> None:
    """A run folder's temp files left by killed writers, in it and in its .hydra/, removed once: its own writes,
    made while it is locked, skip that (``clean=False``)."""
    for folder in (run_dir, os.path.join(run_dir, HYDRA_DIR)):
        remove_stale_temps(folder)


@contextmanager
def locked(run_dirs: Iterable[Path]) -> Iterator[None]:
    """Holds the lock of each run folder (made if absent) while the block runs: one process at a time writes
    a folder. A dead holder's lock (this host) is taken over, a live one is a ConfigError naming it; killed
    writers' temp files go. The locks are released, and folders this call made and left empty removed."""
    made: list[str] = []
    held: list[str] = []
    existed: set[str] = set()  # folders seen to exist (a sweep's run folders share their parents)
    try:
        for run_dir in map(os.path.abspath, run_dirs):  # no '..': its parents are its folders
            folder = run_dir
            while folder not in existed and not os.path.exists(folder):  # deepest first, up to the first that exists
                made.append(folder)
                folder = os.path.dirname(folder)
            existed.add(folder)
            for attempt in range(3):
                os.makedirs(run_dir, exist_ok=True)
                try:
                    held.append(_take_lock(os.path.join(run_dir, LOCK)))
                    if run_dir in existed:  # a folder this call made holds no temp file
                        remove_run_temps(run_dir)
                    break
                except FileNotFoundError:  # another process removed the empty folder it had made: again
                    if attempt == 2:
                        raise
        yield
    finally:
        for path in held:
            with suppress(FileNotFoundError):
                os.unlink(path)
        for folder in sorted(set(made), key=lambda p: p.count(os.sep), reverse=True):
            with suppress(OSError):  # not empty, or gone: another process is using it
                os.rmdir(folder)


def lock_holder(path: Path | str) -> tuple[str, str, str] | None:
    """The host, pid and start time a lock file names (``?`` for what it lacks); None without the file."""
    try:
        with open(path) as f:
            return tuple((f.read().split(maxsplit=2) + ["?", "?", "?"])[:3])
    except FileNotFoundError:
        return None


def _dead(host: str, pid: str) -> bool:
    """Whether a lock's holder is a process of this host that is gone."""
    return host == HOST and pid.isdigit() and not _alive(int(pid))


def left_by_the_dead(run_dir: Path) -> bool:
    """Whether the folder holds the lock of a process of this host that is gone (a killed run's)."""
    holder = lock_holder(Path(run_dir) / LOCK)
    return holder is not None and _dead(*holder[:2])


def _take_lock(path: str) -> str:
    """Creates the lock ``path`` whole or not at all: its text is written to a temp file first, then hard-linked
    to ``path``, which fails if ``path`` exists (a kill between creating and writing the lock cannot leave it
    empty, without a holder to judge)."""
    tmp = temp_path(path)
    write_text(tmp, f"{HOST} {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                holder = lock_holder(path)
                if holder is None:  # its holder released it since: try again
                    continue
                host, pid, started = holder
                if _dead(host, pid):
                    with suppress(FileNotFoundError):
                        os.unlink(path)  # its process is gone: take it over
                    continue
                raise ConfigError(f"{Path(path).parent}: in use by process {pid} on {host} since {started.strip()}; "
                                  f"run it again once that one ends (or delete {path} if that process is "
                                  f"gone)") from None
        raise ConfigError(f"{Path(path).parent}: its lock {path} is being taken over by another process; run it again")
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: Path | str, text: str | bytes) -> None:
    """``text`` (UTF-8 when a str), in three system calls (open, write, close)."""
    view = memoryview(text.encode() if isinstance(text, str) else text)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


SWEPT = ("lr", "rho", "seed")  # the top-level numbers in which the runs of one sweep's compose differ


def yaml_text(payload: object) -> str:
    """``payload`` as YAML (key order kept). A config whose ``lr``, ``rho`` and ``seed`` are numbers is
    rendered once per sweep compose, with those three filled in per run: a whole dump per run would cost
    more than a small run's steps."""
    try:
        if isinstance(payload, Mapping) and all(type(payload.get(k)) in (int, float) for k in SWEPT):
            rest = json.dumps({k: v for k, v in payload.items() if k not in SWEPT})
            return _yaml_template(rest, tuple(payload)).format_map({k: _yaml_scalar(payload[k]) for k in SWEPT})
    except TypeError:  # not plain JSON data
        pass
    return yaml.dump(payload, Dumper=YamlDumper, sort_keys=False, allow_unicode=True)


@cache
def _yaml_template(rest: str, keys: tuple[str, ...]) -> str:
    payload = {k: f"__samrepro_{k}__" for k in keys} | json.loads(rest)  # key order kept, the swept ones held
    text = yaml.dump(payload, Dumper=YamlDumper, sort_keys=False, allow_unicode=True).replace("{", "{{")
    return re.sub(r"__samrepro_(\w+?)__", r"{\1}", text.replace("}", "}}"))


@cache
def _yaml_scalar(value: float) -> str:
    return yaml.dump({"k": value}, Dumper=YamlDumper)[3:-1]


def load_yaml(path: Path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=YamlLoader)


def read_summary(run_dir: Path) -> dict | None:
    """The folder's summary.json; None when it is absent or damaged (not JSON: a run without a summary)."""
    try:
        with open(os.path.join(run_dir, SUMMARY)) as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def write_config(run_dir: Path, config: Mapping, inputs: Mapping) -> str:
    """A run folder's config.yaml, its first file: samrepro's marker line (code version, fingerprint), then
    the resolved config; returns the fingerprint, which its summary repeats."""
    digest = fingerprint(config, inputs)
    marker = f"{MARKER}, code {inputs.get('code')}, fingerprint {digest}\n"
    write_atomic(os.path.join(run_dir, CONFIG), marker + yaml_text(dict(config)), clean=False)  # locked: cleaned
    return digest


def flatten(cfg: Mapping, prefix: str = "") -> dict:
    """``{"task": {"d": 3}}`` → ``{"task.d": 3}`` (lists are kept as lists)."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint(config: Mapping, inputs: Mapping | None = None) -> str:
    """A hash of the resolved config without the keys that cannot change results (NON_RESULT_KEYS), and of
    the run's ``inputs`` beyond its config (the code, the device, the content of its files:
    :func:`samrepro.runner.run_inputs`)."""
    kept = {k: v for k, v in flatten(config).items() if k not in NON_RESULT_KEYS}
    if inputs is not None:
        kept["inputs"] = inputs
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differing_keys(old: Mapping, new: Mapping) -> list[str]:
    """The result keys (flattened) in which two resolved configs differ, one of them lacking a key included."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if k not in NON_RESULT_KEYS and a.get(k, "—") != b.get(k, "—"))


def config_diff(old: Mapping, new: Mapping, most: int = 3) -> list[str]:
    """``key: old → new`` for the result keys in which two resolved configs differ (the first ``most``)."""
    a, b, keys = flatten(old), flatten(new), differing_keys(old, new)
    lines = [f"{k}: {a.get(k, '—')} → {b.get(k, '—')}" for k in keys[:most]]
    return lines + ([f"… {len(keys) - most} more"] if len(keys) > most else [])


def claim(run_dir: Path, config: Mapping, inputs: Mapping | None = None, own: Iterable[str] = ()) -> str:
    """Decides what a run may do with ``run_dir`` for ``config`` (resolved) and its ``inputs``, touching nothing:

    * ``"new"``: the folder is absent or empty, or holds no result (only Hydra's record), or holds the
      finished run of this config computed from other inputs (other code, device or file contents: it is
      samrepro's own, and is recomputed in place) — an older samrepro's run whose config lacks only keys
      this one added included —, or whose files are damaged, or ``rerun`` is set;
    * ``"done"``: it holds the finished run (completed or diverged) of this very config and inputs: skip it;
    * ``"resume"``: it holds an unfinished run of this config, or a run of this config that stopped at
      its step cap before ``until`` (only ``steps`` raised, its LR schedule constant or on a fixed
      ``lr_schedule.horizon``) and left a checkpoint: continue it.

    Anything else is a :class:`ConfigError` naming the folder, what differs and the fix: files that
    samrepro did not write (``own``: extra names samrepro writes there, e.g. a stage's phase folders),
    the finished result of another config, a summary that does not belong to the folder's config, or
    another config's checkpoint.
    """
    if not os.path.exists(run_dir):
        return "new"
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: is a file, not a run folder; it is left as it was — choose another "
                          f"folder (hydra.run.dir=… or name=…)")
    names = sorted(os.listdir(run_dir))
    foreign = [n for n in names if n not in RUN_FILES and n not in own and not n.endswith(".tmp")]
    if foreign:
        raise ConfigError(f"{run_dir}: holds files samrepro did not write ({', '.join(foreign[:3])}"
                          f"{', …' if len(foreign) > 3 else ''}); it is left as it was — choose an empty or new "
                          f"folder (hydra.run.dir=… or name=…)")
    ours = [n for n in names if n in RUN_FILES - {LOCK}]
    if not ours:
        return "new"
    summary = read_summary(run_dir)
    if not samrepros(run_dir, summary):
        raise ConfigError(f"{run_dir}: holds {', '.join(ours)} without samrepro's run record (config.yaml starting "
                          f"with '{MARKER}'): not samrepro's; it is left as it was — choose an empty or new folder")
    if summary is None and not (run_dir / METRICS).exists() and not (run_dir / CHECKPOINT).exists():
        return "new"  # no result
    try:
        old = load_yaml(run_dir / CONFIG)
    except yaml.YAMLError:
        return "new"  # samrepro's own, damaged: recomputed
    if summary is not None and summary.get("fingerprint") != fingerprint(old, summary.get("inputs")):
        raise ConfigError(f"{run_dir}: its summary.json does not belong to its config.yaml (another process or "
                          f"program wrote one of them); it is left as it was — delete that folder to redo the run")
    if fingerprint(old) == fingerprint(config):
        if config.get("rerun"):
            return "new"
        if summary is None or summary["status"] not in FINISHED:
            return "resume"
        return "done" if (inputs is None or summary.get("inputs") == inputs) and intact(run_dir, summary) else "new"
    if (summary is not None and summary["status"] in FINISHED and inputs is not None
            and summary.get("inputs", {}).get("code") != inputs["code"]
            and not set(differing_keys(old, config)) & flatten(old).keys()):
        return "new"  # an older samrepro's run, its config without the keys added since: recomputed
    diff = config_diff(old, config)
    fixed = old["lr_schedule"]["name"] == "constant" or old["lr_schedule"].get("horizon") is not None
    if (summary is not None and summary.get("until_reached") is False and fixed and (run_dir / CHECKPOINT).exists()
            and [d.split(":")[0] for d in diff] == ["steps"] and config["steps"] > old["steps"]):
        return "resume"  # a capped run with its steps raised, its LR schedule not on its steps
    if summary is None and not (run_dir / CHECKPOINT).exists():
        return "new"  # another config's unfinished run without a checkpoint holds no result worth keeping
    what = f"the {summary['status']} run" if summary else "the unfinished run (with a checkpoint)"
    raise ConfigError(f"{run_dir}: holds {what} of another config ({'; '.join(diff)}); it is left as it was — "
                      f"use another folder (name=… for a sweep, hydra.run.dir=… for one run) or delete that "
                      f"folder to redo it")


def samrepros(run_dir: Path, summary: Mapping | None) -> bool:
    """Whether samrepro wrote the folder's config.yaml: it starts with MARKER, or (an older samrepro's,
    written before the marker) it is the config of its summary's fingerprint."""
    try:
        with open(Path(run_dir) / CONFIG) as f:
            if f.readline().startswith(MARKER):
                return True
        return summary is not None and summary.get("fingerprint") == fingerprint(
            load_yaml(Path(run_dir) / CONFIG), summary.get("inputs"))
    except (OSError, ValueError, yaml.YAMLError):  # absent, not text, not YAML
        return False


def intact(run_dir: Path, summary: Mapping) -> bool:
    """Whether the folder's metrics.csv is the one its summary recorded (``metrics_sha256``)."""
    path = Path(run_dir) / METRICS
    return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest()[:16] == summary.get("metrics_sha256")


def csv_lines(steps: Sequence[int], values: Sequence[Sequence[float]]) -> bytes:
    """The CSV lines ``step,v₁,…,v_M`` of integer ``steps`` and float64 ``values`` ([rows, M] numpy arrays):
    each float the shortest decimal that reads back as the same double — Python's repr digits, formatted by
    orjson (1e-7 and 0.00001234 where repr writes 1e-07 and 1.234e-05), six times faster than repr —; a
    non-finite one as Python writes it (nan, inf, -inf)."""
    import numpy as np  # not at the top: `samrepro --help` and the config checks import this module
    import orjson

    if not len(steps):
        return b""
    values = np.ascontiguousarray(values, dtype=np.float64)
    rows = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")
    for i in np.flatnonzero(~np.isfinite(values).all(1)):  # orjson writes them as null
        rows[i] = b",".join(orjson.dumps(v) if math.isfinite(v) else repr(v).encode() for v in values[i].tolist())
    steps = orjson.dumps(np.asarray(steps, dtype=np.int64), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    return b"\n".join(map(b",".join, zip(steps, rows))) + b"\n"


class RunRecord:
    """Writes one run's folder as it goes: its config first, its rows, its summary (with ``identity``: task,
    opt, lr, rho, seed; its inputs and fingerprint) last. The trainer logs a whole batch's rows into one
    :class:`samrepro.train.MetricLog` that each run :meth:`follow`s at its column; they become CSV text
    (:func:`csv_lines`) only when metrics.csv is rewritten (atomically, the text on disk plus the new rows):
    when the trainer's log is full, before each checkpoint and at the end."""

    def __init__(self, run_dir: Path, identity: dict, metric_names: Sequence[str], config: Mapping,
                 inputs: Mapping, resume_step: int = 0):
        """``resume_step`` > 0 continues a run resumed from a checkpoint of that step: the rows logged up
        to it are kept (metrics.csv is cut back to them now), later ones dropped."""
        self.dir = Path(run_dir)  # made and locked by the runner (records.locked)
        self._metrics, self._summary = os.path.join(run_dir, METRICS), os.path.join(run_dir, SUMMARY)
        with suppress(FileNotFoundError):
            os.unlink(self._summary)
        self.identity = {**identity, "fingerprint": write_config(self.dir, config, inputs), "inputs": dict(inputs)}
        self._sha = hashlib.sha256()  # of metrics.csv as written so far
        self.columns = ("step", *metric_names)
        self._follows: list[tuple[object, int, int]] = []  # (log, column, its first row not written yet)
        self._written = False  # metrics.csv holds this run's rows so far (else it is absent or stale)
        self._last_written: tuple[int, dict[str, float]] = (0, {})  # the step and metrics of its last row
        if resume_step:
            with open(self._metrics, newline="") as f:
                rows = list(csv.reader(f))[1:]
            kept = [r for r in rows if len(r) == len(self.columns) and int(r[0]) <= resume_step]
            text = self._csv_text([self.columns, *kept])
            write_atomic(self._metrics, text, clean=False)
            self._sha.update(text)
            self._written = True
            if kept:
                self._last_written = (int(kept[-1][0]), dict(zip(self.columns[1:], map(float, kept[-1][1:]))))

    @staticmethod
    def _csv_text(rows: Iterable[Sequence[str]]) -> bytes:
        """Rows of strings as CSV (a field with a comma or a quote quoted)."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode()

    def follow(self, log: object, column: int) -> None:
        """From the next row on, this run's rows are those of ``column`` in ``log``, a
        :class:`samrepro.train.MetricLog` (``rows(column, start)`` → steps, values; ``last_row``)."""
        self._follows.append((log, column, log.size))

    def _last_row(self) -> tuple[int, dict[str, float]]:
        for log, column, start in reversed(self._follows):
            if (row := log.last_row(column, start)) is not None:
                return row[0], dict(zip(self.columns[1:], row[1].tolist()))
        return self._last_written

    @property
    def last(self) -> dict[str, float]:
        """The metrics of the last row logged (empty before the first)."""
        return self._last_row()[1]

    @property
    def steps_logged(self) -> int:
        """The step of the last row logged (0 before the first)."""
        return self._last_row()[0]

    def flush(self) -> None:
        """Writes the rows logged so far to metrics.csv (atomically): the file's text plus the new rows."""
        import numpy as np

        parts = [log.rows(column, start) for log, column, start in self._follows]
        steps, values = parts[0] if len(parts) == 1 else (np.concatenate(a) for a in zip(*parts)) if parts else ((), ())
        new = csv_lines(steps, values)
        if self._written and not new:
            return
        if self._written:
            with open(self._metrics, "rb") as f:
                old = f.read()
        else:
            old = self._csv_text([self.columns])
            self._sha.update(old)
        if len(steps):
            self._last_written = (int(steps[-1]), dict(zip(self.columns[1:], values[-1].tolist())))
        write_atomic(self._metrics, old + new, clean=False)
        self._sha.update(new)
        self._written = True
        self._follows = [(log, column, log.size) for log, column, _ in self._follows[-1:]]

    def finish(self, status: str, steps_done: int, wall_seconds: float, **extra: object) -> dict:
        self.flush()
        summary = {
            "status": status,
            "steps_done": steps_done,
            **extra,
            "final": self.last,
            "metrics_sha256": self._sha.hexdigest()[:16],
            "wall_seconds": round(wall_seconds, 3),
            **self.identity,
        }
        write_atomic(self._summary, summary, clean=False)
        return summary
