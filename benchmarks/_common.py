"""Helpers shared by the benchmark scripts: machine info and result writing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any
from collections.abc import Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_fingerprint() -> str:
    """What identifies the machine a time was measured on.

    The project's machines are virtual and change between sessions: the
    same dense on-device train step of the small CNN took 54 ms on one and
    30 ms on the next. Times are only compared between runs with equal
    fingerprints (platform string, which names the kernel build, CPU model
    and CPU count).
    """
    return f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} CPUs"


def machine_info() -> dict[str, Any]:
    """Machine, versions and date, recorded next to every result."""
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


UNRECORDED_MACHINE = "not recorded"


def machine_of(row: dict[str, Any]) -> str:
    """The machine a timed row was measured on (`machine_fingerprint`), or "not recorded"."""
    return row.get("machine") or UNRECORDED_MACHINE


# ------------------------------------------------------------------ load
# Absolute times drift on the shared 2-core machines: every timed part
# records how busy the machine was while it ran, in one format, read by
# `load_note`.


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages from /proc/loadavg (None if unreadable)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        try:
            return list(os.getloadavg())
        except (AttributeError, OSError):
            return None


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat), None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and its finished children (e.g. the TF-MOT peer)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadProbe:
    """What else ran while a timed part was measured.

    Start one when a part begins and call `record()` when it ends. Besides
    the 1-min load averages (which lag by a minute and count the benchmark's
    own threads), it measures `other_cores`: the CPU time every other
    process used during the part, divided by its wall time, from /proc/stat
    minus this process's own CPU time. 0 means the part had the machine to
    itself.
    """

    def __init__(self):
        self.load = load_average()
        self.busy, self.own, self.wall = _busy_seconds(), _own_seconds(), time.monotonic()

    def other_cores(self) -> float | None:
        busy, wall = _busy_seconds(), time.monotonic() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            return None
        return max(0.0, (busy - self.busy) - (_own_seconds() - self.own)) / wall

    def record(self) -> dict[str, Any]:
        """`{"before", "after", "other_cores"}`: what `load_note` reads."""
        return {"before": self.load, "after": load_average(), "other_cores": self.other_cores()}


LOADED_ABOVE_CORES = 0.25
"""Other processes using more cores than this on average mark a part as loaded."""


def load_note(load: dict[str, Any] | None, cpus: int | None) -> str:
    """Plain words on how busy the machine was while a part was measured.

    Args:
        load: a `LoadProbe.record()` (older results may lack `other_cores`).
        cpus: the machine's CPU count.

    Returns:
        `""` without load figures; a sentence, starting with "**The machine
        was loaded by other work**" when it was.
    """
    load, cpus = load or {}, cpus or 0
    before, after = load.get("before"), load.get("after")
    if not before or not after:
        return ""
    note = f"1-min load average {before[0]:.1f} before, {after[0]:.1f} after, on {cpus} CPUs"
    other = load.get("other_cores")
    if other is not None:
        # Measured directly: CPU time of every other process during the part.
        note += f"; other processes used {other:.2f} cores on average while it ran"
        loaded = other > LOADED_ABOVE_CORES
    else:
        # Older results: before the first timed step the benchmark is idle,
        # so load then is other work.
        loaded = bool(cpus) and (before[0] >= 1.0 or after[0] > cpus)
    if loaded:
        note = ("**The machine was loaded by other work** (" + note +
                "): absolute times are inflated and ratios noisier than on an idle machine")
    return note + "."


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Renders a GitHub Markdown table; floats are pre-formatted by the caller."""
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(
                f"Row has {len(row)} cells, expected {len(headers)}: {row!r}"
            )
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def machine_markdown(info: dict[str, Any]) -> str:
    return (
        f"Measured {info['date']} on `{info['platform']}` "
        f"({info['processor']}, {info['cpu_count']} CPUs"
        f"{', GPUs: ' + ', '.join(info['gpus']) if info['gpus'] else ', no GPU'}); "
        f"Python {info['python']}, TensorFlow {info['tensorflow']}, "
        f"Keras {info['keras']} ({info['keras_backend']} backend), NumPy {info['numpy']}."
    )


def reestimate_batchnorm(model, batchnorms: Sequence[Any], x) -> int:
    """Sets each of `batchnorms`' moving statistics to those of `x`; returns their count.

    One training-mode pass of `model` over `x` with momentum 0 (the "BN
    re-estimation" of SWA's `bn_update`); weights are untouched and the
    layers' momentum is restored. Works for Keras 3 and tf_keras layers alike,
    so our rows and the TF-MOT peer's get the same step.
    """
    saved = [layer.momentum for layer in batchnorms]
    try:
        for layer in batchnorms:
            layer.momentum = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in zip(batchnorms, saved):
            layer.momentum = momentum
    return len(batchnorms)


class PieceCheckpoint:
    """Finished pieces of one benchmark run, on disk, so a killed run continues.

    A long benchmark (the cost table, the TFLite table) is a list of pieces,
    each measured side by side on its own (one row's sparse and dense timings
    alternate inside that piece). After each piece its result is written to
    `path` at once (atomically); a rerun with the same `settings` reuses the
    finished pieces and measures only the rest. A checkpoint left by a run
    with other settings is set aside, never mixed in. `finish()` removes the
    file once the whole run has been written out.

        ckpt = PieceCheckpoint(out_dir / "cost.partial.json", {"quick": False})
        row = ckpt.run("dst/rigl", lambda: measure("rigl"))  # cached after the first run

    Pieces must return JSON-serializable values. `path=None` keeps the
    pieces in memory only (nothing to resume).
    """

    def __init__(self, path: Path | None, settings: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.settings = json.loads(json.dumps(settings))  # what a reread compares against
        self.pieces: dict[str, Any] = {}
        self.resumed: list[str] = []
        if self.path is not None and self.path.exists():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("settings") == self.settings:
                self.pieces = dict(saved.get("pieces", {}))

    def run(self, name: str, measure):
        """The saved result of piece `name`, or `measure()`'s, saved at once."""
        if name in self.pieces:
            self.resumed.append(name)
            return self.pieces[name]
        value = measure()
        self.pieces[name] = value
        if self.path is not None:
            write_json(self.path, {"settings": self.settings, "pieces": self.pieces})
        return value

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
