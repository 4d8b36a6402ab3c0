"""On-device train step of a Dense-heavy net: sparse compute against dense.

The question (issue "on-device DST", optional item): can a sparse model's
on-device `train` step be faster than the same dense model's, with builtin
ops only? `export_trainable` offers three ways to train a pruned Dense
kernel on the device:

- `masked`: dense variables and a constant mask (`weight_storage="dense"`);
  the step does the full dense work plus the masking.
- `compact`: the non-zeros as `[nnz]` variables, scattered into the dense
  kernel for a dense matmul (`weight_storage="sparse"`).
- `sparse_matmul`: the non-zeros computed with gather + segment-sum
  products (`weight_storage="sparse", sparse_matmul="on"`,
  `tflite_export._sparse_matmul`): work proportional to the non-zeros.

Every file is the same MLP (784-1024-1024-10, ReLU; ERK) exported with
`export_trainable` (Adam, batch 32), and timed through its `train`
signature in LiteRT, one thread, side by side in one process: alternated
rounds, the median step of each file, ratios against the dense model's
file in the same run. Results: `sparse_train_step.{json,md}`.

Usage: `python -m benchmarks.sparse_train_step [--quick]` (`--quick`: a
small MLP and few steps, a smoke run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import keras_sparse  # noqa: E402
import tflite_export  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_DIR, LoadProbe, load_note, machine_info, machine_markdown,
    markdown_table, write_json)
from tflite_export.runner import make_interpreter  # noqa: E402
from tflite_export.verify import alternated_medians  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 32
FORMS = {  # name -> export_trainable arguments
    "masked": dict(weight_storage="dense"),
    "compact": dict(weight_storage="sparse"),
    "sparse_matmul": dict(weight_storage="sparse", sparse_matmul="on"),
}


def mlp(widths: tuple[int, ...]) -> keras.Model:
    """Dense ReLU layers `widths[1:-1]` on a `widths[0]` input, `widths[-1]` logits."""
    layers = [keras.Input((widths[0],))]
    layers += [keras.layers.Dense(w, activation="relu") for w in widths[1:-1]]
    layers.append(keras.layers.Dense(widths[-1]))
    return keras.Sequential(layers)


def export(model, path: str, **kw) -> dict[str, Any]:
    report = tflite_export.export_trainable(
        model, path, keras.optimizers.Adam(1e-3), LOSS, batch_size=BATCH,
        compare_dense=False, **kw)
    return {"bytes": report.num_bytes, "sparse_matmul": report.sparse_matmul}


def time_steps(paths: list[str], widths, rounds: int, steps: int) -> list[float]:
    """Median `train` step (ms) of each file, alternated rounds, one process."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], BATCH).astype(np.int32)
    trains = [make_interpreter(p).get_signature_runner("train") for p in paths]
    medians = alternated_medians([lambda t=t: t(x=x, y=y) for t in trains],
                                 rounds, steps, warmup=3)
    return [m * 1e3 for m in medians]


def run(widths, sparsities, rounds: int, steps: int) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        keras.utils.set_random_seed(0)
        dense_path = os.path.join(tmp, "dense.tflite")
        dense_info = export(mlp(widths), dense_path)
        for s in (bar := tqdm(sparsities, unit="sparsity")):
            bar.set_description(f"sparsity {s}")
            keras.utils.set_random_seed(0)
            model = keras_sparse.sparsify(mlp(widths), s, distribution="erk", seed=0)
            paths, infos = [dense_path], [dense_info]
            for name, kw in FORMS.items():
                paths.append(os.path.join(tmp, f"{name}_{s}.tflite"))
                infos.append(export(model, paths[-1], **kw))
            probe = LoadProbe()
            ms = time_steps(paths, widths, rounds, steps)
            load = probe.record()
            row = {"sparsity": s, "dense_ms": ms[0], "load": load,
                   "dense_bytes": infos[0]["bytes"]}
            for (name, _), t, info in zip(FORMS.items(), ms[1:], infos[1:]):
                row[name] = {"ms": t, "dense_over_form": ms[0] / t,
                             "bytes": info["bytes"]}
            rows.append(row)
    return {"model": f"MLP {'-'.join(map(str, widths))}, ReLU, ERK",
            "batch": BATCH, "rounds": rounds, "steps_per_round": steps, "rows": rows}


def render(result: dict[str, Any], info: dict[str, Any]) -> str:
    table = []
    for r in result["rows"]:
        cells = [r["sparsity"], f"{r['dense_ms']:.2f}"]
        for name in FORMS:
            f = r[name]
            cells.append(f"{f['ms']:.2f} ({f['dense_over_form']:.2f}x)")
        table.append(cells)
    notes = [load_note(r["load"], info.get("cpu_count")) for r in result["rows"]]
    loaded = sum(n.startswith("**The machine was loaded") for n in notes)
    lines = [
        "## On-device train step: sparse compute against dense (LiteRT)", "",
        machine_markdown(info), "",
        f"{result['model']}; `export_trainable` with Adam, batch {result['batch']}; "
        f"`train` signature, one thread, {result['rounds']} alternated rounds of "
        f"{result['steps_per_round']} steps per file, median step in ms; in brackets "
        "the dense file's step over this file's (above 1: faster than dense).", "",
        markdown_table(["sparsity", "dense model", "masked (dense storage)",
                        "compact (scatter + dense matmul)",
                        "sparse_matmul (gather + segment sum)"], table), "",
    ]
    if loaded:
        lines += [f"**{loaded} of {len(notes)} rows were timed on a machine loaded "
                  "by other work** (see the JSON).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small MLP, few steps (smoke run)")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    widths = (64, 128, 128, 10) if args.quick else (784, 1024, 1024, 10)
    rounds, steps = (2, 3) if args.quick else (10, 20)
    info = machine_info()
    result = run(widths, args.sparsities, rounds, steps)
    stem = "sparse_train_step_quick" if args.quick else "sparse_train_step"
    out = Path(args.out_dir)
    write_json(out / f"{stem}.json", {"machine": info, **result})
    (out / f"{stem}.md").write_text(render(result, info))
    return result


if __name__ == "__main__":
    main()
