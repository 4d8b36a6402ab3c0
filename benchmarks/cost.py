"""Cost table (docs/benchmark_protocol.md, "Cost table"): one command, four parts.

    python -m benchmarks.cost                  # everything (make bench-cost)
    python -m benchmarks.cost --quick          # smaller step-time runs
    python -m benchmarks.cost --only step peer # refresh those parts, keep the rest
    python -m benchmarks.cost --from-results   # re-render cost.md/.png from cost.json

Parts (`--only` names):

- `step`: training step-time ratio sparse vs dense, same model and batches,
  alternated in one process, medians. Static masks on Model A (small CNN) and
  Model B (ResNet-20, 28x28) with `benchmarks.step_time.bench_model`
  (`train_on_batch` rounds); every DST algorithm at its default update
  interval (100 steps) on Model A with `benchmarks.dst_overhead.step_times`
  (alternated `fit` runs with the `DynamicSparseTraining` callback).
- `peer`: the same ratio for TF-MOT `prune_low_magnitude` vs tf_keras dense
  (Model A, dst_overhead's protocol), run by `benchmarks/peer_tfmot_step.py`
  in the TF-MOT venv (`make tfmot-venv`; `$KERAS_SPARSE_TFMOT_PYTHON`
  overrides the interpreter). Without that venv the row says so.
- `latency`: mask-update latency per algorithm for ResNet-20 conv shapes and a
  25M-weight stack, read from `results/dst_overhead.json`; `--run-latency`
  measures it here with `benchmarks.dst_overhead.update_latency`.
- `tflite`: file bytes and batch-1 latency vs dense float32, and the
  on-device train step vs Keras, read from `results/tflite_bench.json`
  (`make bench-tflite`).

Resumable: every finished row (one model's static masks, one DST method,
the peer, one latency cell) is written to results/cost.partial.json at once;
a killed run, started again with the same arguments, keeps those rows and
measures only the rest (each row's sparse and dense timings alternate inside
that row, so a resumed table is still side by side row by row; the part
records which rows were `resumed_pieces`). The file is removed when cost.json
is written.

Writes benchmarks/results/cost.json, cost.md and cost.png, each part with the
machine, versions, date and 1-min load average it was measured (or read)
with. A benchmark, not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import _common  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_DIR, LoadProbe, PieceCheckpoint, machine_info, machine_markdown, markdown_table, write_json)

SECTIONS = ("step", "peer", "latency", "tflite")
SPARSITY = 0.9
DISTRIBUTION = "erk"
STATIC_MODELS = ("small_cnn", "resnet20")
MODEL_LABELS = {"small_cnn": "Model A (small CNN)", "resnet20": "Model B (ResNet-20)"}
DST_STEPS = 200  # two default update intervals per timed fit
QUICK = {"static_rounds": 4, "static_steps": 5, "static_warmup": 3, "dst_repeats": 1,
         "peer_repeats": 2, "latency_repeats": 2}
FULL = {"static_rounds": 30, "static_steps": 10, "static_warmup": 10, "dst_repeats": 5,
        "peer_repeats": 3, "latency_repeats": 3}


# ------------------------------------------------------------------ machine


def load_note(section: dict[str, Any]) -> str:
    """Plain words on how busy the machine was while a part was measured."""
    return _common.load_note(section.get("load_average"), (section.get("machine") or {}).get("cpu_count"))


def _stamp(section: dict[str, Any], before: LoadProbe,
           checkpoint: PieceCheckpoint | None = None, part: str = "") -> dict[str, Any]:
    section["machine"] = machine_info()
    section["load_average"] = before.record()
    resumed = [n for n in (checkpoint.resumed if checkpoint else []) if n.startswith(part + "/")]
    if resumed:
        # Measured by an earlier, killed run of the same command: its load is not in this record.
        section["resumed_pieces"] = resumed
    return section


# --------------------------------------------------------------------- step


def run_step(settings: dict[str, int], progress, methods: list[str], models: list[str],
             checkpoint: PieceCheckpoint | None = None) -> dict[str, Any]:
    """Static-mask and DST step-time ratios (the library's own benchmark functions).

    Each row (one model's static masks, one DST method) is one resumable
    piece of `checkpoint`: its sparse and dense timings alternate inside it.
    """
    from benchmarks import dst_overhead, step_time

    checkpoint = checkpoint or PieceCheckpoint(None, {})
    before = LoadProbe()
    args = step_time.parse_args([
        "--rounds", str(settings["static_rounds"]), "--steps", str(settings["static_steps"]),
        "--warmup", str(settings["static_warmup"]), "--sparsity", str(SPARSITY),
        "--distribution", DISTRIBUTION, "--models", *models])
    xs, ys, source = step_time.fixed_batches(max(args.steps, args.warmup, 1), args.batch_size, args.seed)

    def static_row(name):
        row = step_time.bench_model(name, args, xs, ys, progress)
        return {k: v for k, v in row.items() if not k.endswith("_per_step")}

    static = []
    for name in models:
        resumed = f"step/static/{name}" in checkpoint.pieces
        static.append(checkpoint.run(f"step/static/{name}", lambda name=name: static_row(name)))
        if resumed:
            progress.update(2 * args.rounds)

    def dst_row(method):
        progress.set_postfix_str(f"DST {method}")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):  # keep the progress bar on one line
            res = dst_overhead.step_times([method], DST_STEPS, settings["dst_repeats"])[method]
        progress.write(buffer.getvalue().rstrip())
        return {"method": method, "update_interval": default_interval(method),
                "dense_median_ms": 1e3 * res["dense_step_s"],
                "sparse_median_ms": 1e3 * res["step_s"], "ratio": res["ratio"],
                "cpu_ratio": res.get("cpu_ratio")}

    dst = []
    for method in methods:
        dst.append(checkpoint.run(f"step/dst/{method}", lambda method=method: dst_row(method)))
        progress.update(1)
    return _stamp({
        "config": {"sparsity": SPARSITY, "distribution": DISTRIBUTION, "batch_size": args.batch_size,
                   "static_rounds": args.rounds, "static_steps": args.steps,
                   "static_warmup": args.warmup, "static_data": source,
                   "dst_steps": DST_STEPS, "dst_repeats": settings["dst_repeats"], "dst_data": "random"},
        "static": static, "dst": dst,
    }, before, checkpoint, "step")


def default_interval(method: str) -> int | None:
    from keras_sparse import algorithms

    from benchmarks import dst_overhead

    algo = algorithms.get({"class_name": method, "config": dst_overhead.config(method)})
    return getattr(algo, "update_interval", None)


# --------------------------------------------------------------------- peer


def run_peer(settings: dict[str, int], progress) -> dict[str, Any]:
    """TF-MOT vs tf_keras dense, in the TF-MOT venv; 'unavailable' (no number) without it."""
    from benchmarks import accuracy

    before = LoadProbe()
    python = accuracy.tfmot_python()
    section: dict[str, Any] = {"python": str(python), "model": "small_cnn",
                               "config": {"steps": DST_STEPS, "repeats": settings["peer_repeats"],
                                          "batch_size": 128, "frequency": 100, "seed": 0,
                                          "sparsity": SPARSITY, "distribution": DISTRIBUTION}}
    reason = accuracy._tfmot_available()
    if reason is not None:
        progress.update(1)
        return _stamp({**section, "status": "unavailable", "reason": reason}, before)
    from keras_sparse.models import small_cnn

    layer_sparsity = accuracy.tfmot_layer_sparsity(small_cnn(), SPARSITY, DISTRIBUTION, seed=0)
    progress.set_postfix_str("TF-MOT peer (own venv)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "result.json"
        cfg.write_text(json.dumps({**section["config"], "model": section["model"],
                                   "layer_sparsity": layer_sparsity}))
        proc = subprocess.run(
            [str(python), str(Path(__file__).with_name("peer_tfmot_step.py")),
             "--config", str(cfg), "--out", str(out)],
            capture_output=True, text=True, env=accuracy.tfmot_env(), timeout=3600)
        progress.update(1)
        if proc.returncode != 0 or not out.exists():
            return _stamp({**section, "status": "failed",
                           "reason": f"peer_tfmot_step.py exited {proc.returncode}: "
                                     f"{proc.stderr.strip().splitlines()[-1:] or ''}"}, before)
        result = json.loads(out.read_text())
    section.update(status="measured", layer_sparsity=layer_sparsity,
                   result={k: v for k, v in result.items() if not k.endswith("_per_step")})
    return _stamp(section, before)


# ------------------------------------------------------------------ latency


def read_latency(path: Path) -> dict[str, Any]:
    """Mask-update latencies from dst_overhead.json, with where they came from."""
    if not path.exists():
        return {"status": "unavailable", "reason": f"{path.name} not found (run benchmarks/dst_overhead.py)"}
    data = json.loads(path.read_text())
    parts = {"resnet20": data.get("update_latency_resnet20_s"), "25m": data.get("update_latency_25m_s")}
    if not any(parts.values()):
        return {"status": "unavailable", "reason": f"{path.name} has no update_latency_* entries"}
    return {"status": "read", "source": _rel(path), "source_date": data.get("date"),
            "source_machine": data.get("machine"), "repeats": data.get("repeats"),
            "seconds": {k: v or {} for k, v in parts.items()}}


def run_latency(settings: dict[str, int], progress, methods: list[str],
                checkpoint: PieceCheckpoint | None = None) -> dict[str, Any]:
    from benchmarks import dst_overhead

    checkpoint = checkpoint or PieceCheckpoint(None, {})
    before = LoadProbe()
    seconds = {}
    for key, shapes in (("resnet20", dst_overhead.resnet20_shapes()), ("25m", [(1000, 1000)] * 25)):
        seconds[key] = {}
        for method in methods:
            progress.set_postfix_str(f"update latency {key} {method}")

            def measure(method=method, shapes=shapes):
                with contextlib.redirect_stdout(io.StringIO()):
                    return dst_overhead.update_latency([method], shapes, settings["latency_repeats"])

            seconds[key].update(checkpoint.run(f"latency/{key}/{method}", measure))
            progress.update(1)
    return _stamp({"status": "measured", "repeats": settings["latency_repeats"], "seconds": seconds},
                  before, checkpoint, "latency")


# ------------------------------------------------------------------- tflite


def read_tflite(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"status": "unavailable", "reason": f"{path.name} not found (run `make bench-tflite`)"}
    data = json.loads(path.read_text())
    keep = ("model", "pattern", "precision", "bytes", "dense_float32_bytes", "size_ratio",
            "runtime_path", "latency_us", "dense_float32_latency_us", "speedup_vs_dense_f32")
    return {"status": "read", "source": _rel(path), "source_date": data.get("date"),
            "source_machine": data.get("machine"), "invokes": data.get("invokes"),
            "quick": data.get("quick"),
            "inference": [{k: r.get(k) for k in keep} for r in data.get("inference", [])],
            "training": data.get("training", [])}


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(RESULTS_DIR.parents[1]))
    except ValueError:
        return str(path)


# --------------------------------------------------------- merge and render


def merge(previous: dict[str, Any] | None, new_sections: dict[str, Any], command: str) -> dict[str, Any]:
    """cost.json after a run: the parts just gathered replace their old copies;
    parts not gathered this time are kept as they were (with their own dates)."""
    sections = dict((previous or {}).get("sections", {}))
    sections.update(new_sections)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"Unknown cost-table parts {unknown}; known: {list(SECTIONS)}")
    return {"benchmark": "cost", "command": command,
            "sections": {k: sections[k] for k in SECTIONS if k in sections}}


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _x(v: float | None, bold: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"**{v:.3f}x**" if bold else f"{v:.3f}x"


def _provenance(section: dict[str, Any], short: bool = False) -> str:
    """Where a part's numbers come from; `short` drops the machine/versions line
    (when the table already shows it for another part of the same run)."""
    if section.get("status") == "read":
        machine = section.get("source_machine")
        if isinstance(machine, dict):
            machine = ", ".join(f"{k} {v}" for k, v in machine.items() if k in ("cpu", "cores", "tensorflow", "keras", "ai_edge_litert"))
        return f"Read from `{section['source']}` (measured {section.get('source_date')}; {machine})."
    if "machine" not in section:
        return ""
    if short:
        return f"Measured {section['machine']['date']}; " + load_note(section)
    return machine_markdown(section["machine"]) + " " + load_note(section)


def render_step(step: dict[str, Any] | None, peer: dict[str, Any] | None) -> list[str]:
    headers = ["model", "method", "masks change", "timing", "dense ms/step", "sparse ms/step",
               "ratio", "CPU-time ratio"]
    rows, notes = [], []
    if step:
        c = step["config"]
        for r in step.get("static", []):
            rows.append([MODEL_LABELS.get(r["model"], r["model"]), "static masks (`sparsify`)", "never",
                         f"train_on_batch, {c['static_rounds']} rounds x {c['static_steps']}",
                         _ms(r["dense_median_ms"]), _ms(r["sparse_median_ms"]), _x(r["ratio"], True),
                         _x(r.get("cpu_ratio"))])
        for r in step.get("dst", []):
            rows.append([MODEL_LABELS["small_cnn"], r["method"], f"every {r['update_interval']} steps",
                         f"fit, {c['dst_repeats']} x {c['dst_steps']} steps",
                         _ms(r["dense_median_ms"]), _ms(r["sparse_median_ms"]), _x(r["ratio"], True),
                         _x(r.get("cpu_ratio"))])
        notes.append(
            f"Keras 3 rows: {c['distribution'].upper()} {c['sparsity']:.0%}, batch {c['batch_size']}, "
            f"SGD momentum 0.9, sparse and dense alternated in one process, medians. Static rows: "
            f"`benchmarks.step_time` ({c['static_warmup']} warm-up steps, data: {c['static_data']}). "
            f"DST rows: `benchmarks.dst_overhead.step_times` (random batches; each timed `fit` of "
            f"{c['dst_steps']} steps has its own callback whose schedule spans all repeats, so every "
            f"timed fit contains {c['dst_steps']} // interval mask updates). "
            f"GMP/GraNet start dense (GraNet-ST at 50%) and prune towards 90%.")
        notes.append(_provenance(step))
    if peer:
        status = peer.get("status")
        if status == "measured":
            r = peer["result"]
            rows.append([MODEL_LABELS["small_cnn"] + ", tf_keras", "TF-MOT `prune_low_magnitude` (peer)",
                         f"every {r['frequency']} steps (PolynomialDecay)",
                         f"fit, {r['repeats']} x {r['steps']} steps",
                         _ms(r["dense_median_ms"]), _ms(r["sparse_median_ms"]), _x(r["ratio"], True),
                         _x(r.get("cpu_ratio"))])
            v = r.get("peer_versions", {})
            notes.append(
                f"Peer row: `benchmarks/peer_tfmot_step.py` in its own venv (`{peer['python']}`; "
                f"TensorFlow {v.get('tensorflow')}, tf_keras {v.get('tf_keras')}, TF-MOT {v.get('tfmot')}), "
                f"vs the same tf_keras model dense; per-layer targets = `sparsify`'s ERK 90% budgets; "
                f"PolynomialDecay 0 -> target over the warm-up and timed steps (sparsity of the pruned "
                f"layers at the end: {r.get('pruned_layers_sparsity_after') or 0:.3f}). "
                + _provenance(peer, short=step is not None))
        else:
            rows.append([MODEL_LABELS["small_cnn"] + ", tf_keras", "TF-MOT `prune_low_magnitude` (peer)",
                         "-", "-", "-", "-", f"not measured: {peer.get('reason')}", "-"])
    if not rows:
        return []
    return ["## Training step time, sparse vs dense", "", markdown_table(headers, rows), "",
            "Ratio = median sparse ms/step / median dense ms/step (target for static masks: <= 1.05x). "
            + " ".join(n for n in notes if n), ""]


def render_latency(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    out = ["## Mask-update latency per update", ""]
    if lat.get("status") not in ("read", "measured"):
        return out + [f"Not available: {lat.get('reason')}.", ""]
    sec = lat["seconds"]
    methods = sorted(set(sec.get("resnet20", {})) | set(sec.get("25m", {})))
    rows = [[m, _sec(sec.get("resnet20", {}).get(m)), _sec(sec.get("25m", {}).get(m))] for m in methods]
    out += [markdown_table(["method", "ResNet-20 conv shapes, 0.27M weights (s)", "25M weights, 25 x 1000x1000 (s)"], rows), "",
            "One `algorithm.update` on synthetic masked weights at 90% sparsity (GMP/GraNet from their "
            "start sparsity), dense gradients given, median of "
            f"{lat.get('repeats')} repeats (`benchmarks.dst_overhead.update_latency`). " + _provenance(lat), ""]
    return out


def _sec(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render_tflite(tfl: dict[str, Any] | None) -> list[str]:
    if not tfl:
        return []
    out = ["## TFLite: bytes, batch-1 latency, on-device training", ""]
    if tfl.get("status") != "read":
        return out + [f"Not available: {tfl.get('reason')}.", ""]
    rows = [[r["model"], r["pattern"], r["precision"], f"{r['bytes']:,}", f"{r['size_ratio']:.3f}x",
             r["runtime_path"], f"{r['latency_us']:.1f} / {r['dense_float32_latency_us']:.1f}",
             f"{r['speedup_vs_dense_f32']:.2f}x"] for r in tfl["inference"]]
    out += [markdown_table(["model", "pattern", "precision", "bytes", "vs dense float32",
                            "runtime path", "batch-1 us (sparse / dense f32)", "speed-up"], rows), "",
            f"90% sparsity; single-thread batch-1 `invoke` in LiteRT, alternated with the dense float32 "
            f"model, median of {tfl.get('invokes')} invokes (`benchmarks.tflite_bench`). "
            + _provenance(tfl), ""]
    train = tfl.get("training", [])
    if train:
        trows = [[r["model"], r.get("batch"), _ms(r.get("keras_step_ms")), _ms(r.get("litert_step_ms")),
                  _x(r.get("litert_over_keras"), True), _ms(r.get("litert_sparse_storage_step_ms")),
                  _x(r.get("litert_sparse_storage_over_keras"), True),
                  _bytes(r, "trainable_bytes_dense_storage"), _bytes(r, "trainable_bytes_sparse_storage"),
                  _bytes(r, "dense_inference_float32_bytes"), _parity(r)] for r in train]
        out += ["On-device training: one `train`-signature step in LiteRT vs one Keras "
                "`train_on_batch` on the same batch, alternated, medians; trainable files with dense "
                "weight storage and with sparse storage (non-zeros + indices).", "",
                markdown_table(["model", "batch", "Keras ms/step", "LiteRT ms/step (dense storage)",
                                "LiteRT / Keras", "LiteRT ms/step (sparse storage)", "LiteRT / Keras",
                                "trainable bytes (dense storage)", "(sparse storage)",
                                "dense f32 inference bytes", "loss parity over 20 steps"], trows), ""]
    return out


def _bytes(row: dict[str, Any], key: str) -> str:
    return "n/a" if row.get(key) is None else f"{row[key]:,}"


def _parity(row: dict[str, Any]) -> str:
    for key in ("loss_parity_max_abs_diff", "loss_max_abs_diff"):
        if row.get(key) is not None:
            return f"max abs diff {row[key]:.2e}"
    return "not in tflite_bench.json (checked by test_20_steps_match_keras_and_keep_zeros)"


def render_markdown(result: dict[str, Any]) -> str:
    s = result.get("sections", {})
    lines = ["# Cost table", "",
             f"Written by `{result.get('command', 'python -m benchmarks.cost')}` "
             "(protocol: `docs/benchmark_protocol.md`, \"Cost table\"). Each part says when, on what "
             "machine and under what load it was measured; parts read from another benchmark's "
             "JSON say which file.", ""]
    if any(load_note(sec).startswith("**") for sec in s.values() if isinstance(sec, dict)):
        lines += ["> Measured while other work shared this 2-core machine (see the load averages "
                  "below): treat the step-time ratios as indicative, not final.", ""]
    if result.get("quick"):
        lines += ["Quick run (`--quick`): static rows are 4 rounds x 5 steps, DST rows a single 200-step "
                  "`fit` per model, the peer 2. Single wall-clock samples on a shared machine can be off "
                  "by tens of percent either way: quote the full run (`make bench-cost`) on an idle "
                  "machine, and prefer the CPU-time ratio where there is one.", ""]
    lines += render_step(s.get("step"), s.get("peer"))
    lines += render_latency(s.get("latency"))
    lines += render_tflite(s.get("tflite"))
    if result.get("plot"):
        lines += [f"![cost plots]({result['plot']})", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Step-time ratios, update latencies and TFLite size ratios, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.get("sections", {})
    panels = []
    step, peer = s.get("step") or {}, s.get("peer") or {}
    ratios = [(f"static {r['model']}", r["ratio"]) for r in step.get("static", [])]
    ratios += [(r["method"], r["ratio"]) for r in step.get("dst", [])]
    if peer.get("status") == "measured":
        ratios.append(("TF-MOT (tf_keras)", peer["result"]["ratio"]))
    if ratios:
        panels.append("step")
    lat = s.get("latency") or {}
    if lat.get("status") in ("read", "measured"):
        panels.append("latency")
    tfl = s.get("tflite") or {}
    if tfl.get("status") == "read" and tfl.get("inference"):
        panels.append("tflite")
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "step":
            names, values = zip(*ratios)
            ax.barh(range(len(values)), values, color=["tab:gray" if "TF-MOT" in n else "tab:blue" for n in names])
            ax.set_yticks(range(len(values)), names)
            ax.axvline(1.0, color="k", lw=0.8)
            ax.axvline(1.05, color="tab:red", ls="--", lw=0.8, label="1.05x target (static)")
            ax.invert_yaxis()
            ax.set_xlabel("step time, sparse / dense")
            ax.legend(loc="lower right", fontsize=8)
        elif panel == "latency":
            methods = sorted(set(lat["seconds"].get("resnet20", {})) | set(lat["seconds"].get("25m", {})))
            for j, (key, label) in enumerate((("resnet20", "ResNet-20 (0.27M)"), ("25m", "25M weights"))):
                vals = [lat["seconds"].get(key, {}).get(m, float("nan")) for m in methods]
                ax.bar([i + 0.4 * j for i in range(len(methods))], vals, width=0.4, label=label)
            ax.set_xticks([i + 0.2 for i in range(len(methods))], methods, rotation=45, ha="right")
            ax.set_yscale("log")
            ax.set_ylabel("seconds per mask update")
            ax.legend(fontsize=8)
        else:
            rows = tfl["inference"]
            labels = [f"{r['model']} {r['pattern']} {r['precision']}" for r in rows]
            ax.barh(range(len(rows)), [r["size_ratio"] for r in rows], color="tab:green")
            ax.set_yticks(range(len(rows)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("TFLite bytes / dense float32 bytes")
    flags = (["quick run"] if result.get("quick") else []) + (
        ["machine loaded by other work"] if any(load_note(v).startswith("**") for v in s.values()
                                                 if isinstance(v, dict)) else [])
    fig.suptitle("keras_sparse cost table" + (f" ({'; '.join(flags)})" if flags else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="static: 4 rounds x 5 steps; DST: 1 x 200 steps; peer: 2 x 200 steps")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                   help="gather only these parts; the others are kept from the existing cost.json")
    p.add_argument("--from-results", action="store_true", help="re-render cost.md/.png from cost.json only")
    p.add_argument("--run-latency", action="store_true",
                   help="measure mask-update latency here instead of reading dst_overhead.json")
    p.add_argument("--methods", nargs="+", default=None, help="DST algorithms (default: all registered)")
    p.add_argument("--models", nargs="+", default=list(STATIC_MODELS), choices=STATIC_MODELS,
                   help="models for the static-mask rows")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--dst-overhead-json", type=Path, default=None,
                   help="default: <out-dir>/dst_overhead.json")
    p.add_argument("--tflite-json", type=Path, default=None,
                   help="default: <out-dir>/tflite_bench.json, else tflite_bench_quick.json")
    args = p.parse_args(argv)
    if args.from_results and args.only:
        p.error("--from-results re-renders only; it cannot be combined with --only")
    return args


def _tflite_json(args) -> Path:
    if args.tflite_json is not None:
        return args.tflite_json
    full = args.out_dir / "tflite_bench.json"
    return full if full.exists() else args.out_dir / "tflite_bench_quick.json"


def gather(args, parts: list[str], checkpoint: PieceCheckpoint | None = None) -> dict[str, Any]:
    """Measures (or reads) `parts`; each finished piece is kept in `checkpoint` at once."""
    from tqdm.auto import tqdm

    checkpoint = checkpoint or PieceCheckpoint(None, {})
    settings = QUICK if args.quick else FULL
    methods = args.methods
    if methods is None and ({"step", "latency"} & set(parts)):
        from keras_sparse import algorithms

        methods = list(algorithms.registered_names())
    total = 0
    if "step" in parts:
        total += len(args.models) * settings["static_rounds"] * 2 + len(methods)
    total += 1 if "peer" in parts else 0
    total += 2 * len(methods) if ("latency" in parts and args.run_latency) else 0
    total += 1 if "tflite" in parts else 0
    total += 1 if ("latency" in parts and not args.run_latency) else 0
    out: dict[str, Any] = {}
    with tqdm(total=total, unit="task", file=sys.stdout, desc="cost table") as progress:
        if checkpoint.pieces:
            progress.write(f"Resuming from {checkpoint.path}: {len(checkpoint.pieces)} finished piece(s) kept.")
        if "step" in parts:
            out["step"] = run_step(settings, progress, methods, args.models, checkpoint)
        if "peer" in parts:
            resumed = "peer/small_cnn" in checkpoint.pieces
            out["peer"] = checkpoint.run("peer/small_cnn", lambda: run_peer(settings, progress))
            if resumed:
                out["peer"]["resumed_pieces"] = ["peer/small_cnn"]
                progress.update(1)
        if "latency" in parts:
            if args.run_latency:
                out["latency"] = run_latency(settings, progress, methods, checkpoint)
            else:
                out["latency"] = read_latency(args.dst_overhead_json or args.out_dir / "dst_overhead.json")
                progress.update(1)
        if "tflite" in parts:
            out["tflite"] = read_tflite(_tflite_json(args))
            progress.update(1)
    return out


def checkpoint_for(args, parts: list[str]) -> PieceCheckpoint:
    """cost.partial.json: the finished pieces of a killed run with these same arguments."""
    return PieceCheckpoint(args.out_dir / "cost.partial.json", {
        "quick": args.quick, "parts": parts, "methods": args.methods, "models": args.models,
        "run_latency": args.run_latency})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    json_path, md_path, png_path = (args.out_dir / f"cost.{ext}" for ext in ("json", "md", "png"))
    previous = json.loads(json_path.read_text()) if json_path.exists() else None
    if args.from_results:
        if previous is None:
            raise SystemExit(f"--from-results: {json_path} does not exist yet")
        result = previous
    else:
        parts = list(args.only or SECTIONS)
        command = "python -m benchmarks.cost" + (" --quick" if args.quick else "") + (
            f" --only {' '.join(args.only)}" if args.only else "") + (
            " --run-latency" if args.run_latency else "")
        checkpoint = checkpoint_for(args, parts)
        result = merge(previous if args.only else None, gather(args, parts, checkpoint), command)
        result["quick"] = args.quick
    result["plot"] = png_path.name if plot(result, png_path) else None
    write_json(json_path, result)
    markdown = render_markdown(result)
    md_path.write_text(markdown, encoding="utf-8")
    print("\n" + markdown)
    if not args.from_results:
        checkpoint.finish()  # everything is in cost.json now
    print(f"Wrote {json_path}, {md_path}" + (f" and {png_path}" if result["plot"] else ""))
    return result


if __name__ == "__main__":
    main()
