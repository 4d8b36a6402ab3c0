"""Helpers shared by the benchmark scripts: machine info and result writing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
