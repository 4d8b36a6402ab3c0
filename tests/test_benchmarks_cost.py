"""benchmarks/cost.py: merging, reading other benchmarks' JSON and rendering,
on fake inputs (nothing is timed, nothing asserts on time)."""

import json

import pytest

from benchmarks import _common, cost

MACHINE = {"date": "2026-01-01T00:00:00+00:00", "platform": "Linux-x", "processor": "x86_64",
           "python": "3.11.7", "cpu_count": 2, "cpu_affinity": 2, "tensorflow": "2.21.0",
           "keras": "3.15.1", "keras_backend": "tensorflow", "numpy": "2.4.6", "gpus": []}


def _step(load_before=0.2, load_after=1.9):
    return {
        "config": {"sparsity": 0.9, "distribution": "erk", "batch_size": 128, "static_rounds": 4,
                   "static_steps": 5, "static_warmup": 3, "static_data": "fashion_mnist",
                   "dst_steps": 200, "dst_repeats": 1, "dst_data": "random"},
        "static": [{"model": "small_cnn", "dense_median_ms": 20.0, "sparse_median_ms": 21.0,
                    "ratio": 1.05, "cpu_ratio": 1.02}],
        "dst": [{"method": "rigl", "update_interval": 100, "dense_median_ms": 20.0,
                 "sparse_median_ms": 24.0, "ratio": 1.2}],
        "machine": MACHINE,
        "load_average": {"before": [load_before, 0, 0], "after": [load_after, 0, 0]},
    }


def _peer_measured():
    return {"status": "measured", "python": "/venv/bin/python", "model": "small_cnn",
            "result": {"dense_median_ms": 30.0, "sparse_median_ms": 45.0, "ratio": 1.5,
                       "cpu_ratio": 1.4, "steps": 200, "repeats": 2, "frequency": 100,
                       "pruned_layers_sparsity_after": 0.42,
                       "peer_versions": {"tensorflow": "2.21.0", "tf_keras": "2.21.0", "tfmot": "0.8.1"}},
            "machine": MACHINE, "load_average": {"before": [0.1, 0, 0], "after": [1.0, 0, 0]}}


def test_merge_only_replaces_the_parts_gathered():
    old = cost.merge(None, {"step": _step(), "tflite": {"status": "unavailable", "reason": "x"}}, "old")
    new = cost.merge(old, {"peer": _peer_measured()}, "python -m benchmarks.cost --only peer")
    assert list(new["sections"]) == ["step", "peer", "tflite"]  # protocol order
    assert new["sections"]["step"] == old["sections"]["step"]
    assert new["command"].endswith("--only peer")


def test_merge_rejects_unknown_parts():
    with pytest.raises(ValueError, match="Unknown cost-table parts"):
        cost.merge(None, {"accuracy": {}}, "cmd")


def test_step_rows_and_peer_row_render_side_by_side():
    md = cost.render_markdown(cost.merge(None, {"step": _step(), "peer": _peer_measured()}, "cmd"))
    assert "| Model A (small CNN) | static masks (`sparsify`) | never | train_on_batch, 4 rounds x 5 | " \
           "20.00 | 21.00 | **1.050x** | 1.020x |" in md
    assert "| Model A (small CNN) | rigl | every 100 steps | fit, 1 x 200 steps | 20.00 | 24.00 | **1.200x** | n/a |" in md
    assert "TF-MOT `prune_low_magnitude` (peer) | every 100 steps (PolynomialDecay) | fit, 2 x 200 steps | " \
           "30.00 | 45.00 | **1.500x** | 1.400x |" in md
    assert "TF-MOT 0.8.1" in md


def test_unavailable_peer_says_so_and_gives_no_number():
    peer = {"status": "unavailable", "reason": "no TF-MOT venv at /x (run `make tfmot-venv`)"}
    md = cost.render_markdown(cost.merge(None, {"peer": peer}, "cmd"))
    row = [line for line in md.splitlines() if "TF-MOT" in line][0]
    assert "not measured: no TF-MOT venv at /x" in row
    assert "x**" not in row


def test_run_peer_without_venv_records_the_reason(monkeypatch, tmp_path):
    class Bar:
        def update(self, n):
            pass

    monkeypatch.setenv("KERAS_SPARSE_TFMOT_PYTHON", str(tmp_path / "missing" / "python"))
    monkeypatch.setattr(cost, "machine_info", lambda: MACHINE)
    section = cost.run_peer(cost.QUICK, Bar())
    assert section["status"] == "unavailable"
    assert "no TF-MOT venv" in section["reason"] and "result" not in section


def test_load_note_flags_other_work():
    assert cost.load_note(_step(load_before=0.1, load_after=1.5)).startswith("1-min load average 0.1 before")
    loaded = cost.load_note(_step(load_before=9.5, load_after=11.0))
    assert loaded.startswith("**The machine was loaded by other work**")
    md = cost.render_markdown(cost.merge(None, {"step": _step(9.5, 11.0)}, "cmd"))
    assert "Measured while other work shared" in md
    assert "Measured while other work shared" not in cost.render_markdown(
        cost.merge(None, {"step": _step(0.1, 1.5)}, "cmd"))


def test_load_note_prefers_the_measured_other_work():
    # A high load average left by this benchmark's own previous part is not
    # other work; the measured CPU share of other processes decides.
    own = _step(load_before=1.9, load_after=1.7)
    own["load_average"]["other_cores"] = 0.03
    assert not cost.load_note(own).startswith("**")
    assert "other processes used 0.03 cores" in cost.load_note(own)
    busy = _step(load_before=0.2, load_after=0.4)
    busy["load_average"]["other_cores"] = 1.2
    assert cost.load_note(busy).startswith("**The machine was loaded by other work**")


def test_read_latency_and_tflite_from_fake_results(tmp_path):
    dst = tmp_path / "dst_overhead.json"
    dst.write_text(json.dumps({"machine": "x86_64 2 cores", "date": "2026-01-02", "repeats": 3,
                               "update_latency_resnet20_s": {"rigl": 0.0234, "set": 0.02},
                               "update_latency_25m_s": {"rigl": 0.75}}))
    tfl = tmp_path / "tflite_bench.json"
    tfl.write_text(json.dumps({
        "date": "2026-01-03", "invokes": 400, "quick": False, "machine": {"cpu": "Xeon", "cores": 2},
        "inference": [{"model": "mlp", "pattern": "block1x4", "precision": "float32", "bytes": 1000,
                       "dense_float32_bytes": 10000, "size_ratio": 0.1, "runtime_path": "sparse_fully_connected",
                       "latency_us": 40.0, "dense_float32_latency_us": 260.0, "speedup_vs_dense_f32": 6.5,
                       "notes": ["ignored"]}],
        "training": [{"model": "mlp", "batch": 32, "litert_step_ms": 30.0, "keras_step_ms": 15.0,
                      "litert_over_keras": 2.0, "trainable_bytes_dense_storage": 2000,
                      "trainable_bytes_sparse_storage": 1500}]}))
    lat, tf = cost.read_latency(dst), cost.read_tflite(tfl)
    assert lat["status"] == tf["status"] == "read"
    assert "notes" not in tf["inference"][0]
    md = cost.render_markdown(cost.merge(None, {"latency": lat, "tflite": tf}, "cmd"))
    assert "| rigl | 0.023 | 0.750 |" in md
    assert "| set | 0.020 | n/a |" in md
    assert "| mlp | block1x4 | float32 | 1,000 | 0.100x | sparse_fully_connected | 40.0 / 260.0 | 6.50x |" in md
    assert ("| mlp | 32 | 15.00 | 30.00 | **2.000x** | n/a | n/a | 2,000 | 1,500 | n/a | "
            "not in tflite_bench.json") in md
    assert "measured 2026-01-02" in md and "measured 2026-01-03" in md


def test_missing_inputs_render_as_unavailable(tmp_path):
    lat, tf = cost.read_latency(tmp_path / "nope.json"), cost.read_tflite(tmp_path / "nope2.json")
    md = cost.render_markdown(cost.merge(None, {"latency": lat, "tflite": tf}, "cmd"))
    assert "Not available: nope.json not found" in md
    assert "Not available: nope2.json not found (run `make bench-tflite`)" in md


def test_from_results_rerenders_without_measuring(tmp_path, monkeypatch):
    _common.write_json(tmp_path / "cost.json", cost.merge(None, {"step": _step()}, "cmd"))
    monkeypatch.setattr(cost, "gather", lambda *a, **k: pytest.fail("--from-results must not measure"))
    result = cost.main(["--from-results", "--out-dir", str(tmp_path)])
    assert (tmp_path / "cost.png").stat().st_size > 0
    assert result["plot"] == "cost.png"
    assert "![cost plots](cost.png)" in (tmp_path / "cost.md").read_text()


def test_parse_args():
    assert cost.parse_args(["--quick", "--only", "peer", "tflite"]).only == ["peer", "tflite"]
    with pytest.raises(SystemExit):
        cost.parse_args(["--only", "accuracy"])
    with pytest.raises(SystemExit):
        cost.parse_args(["--from-results", "--only", "step"])


class _Bar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def write(self, s):
        pass


def test_killed_step_part_resumes_with_the_rows_it_finished(monkeypatch, tmp_path):
    from benchmarks import dst_overhead, step_time

    measured = []

    def fake_static(name, args, xs, ys, progress):
        measured.append(f"static/{name}")
        return {"model": name, "ratio": 1.01}

    def fake_dst(methods, steps, repeats):
        (method,) = methods
        measured.append(f"dst/{method}")
        if method == "rigl" and kill["rigl"]:
            raise KeyboardInterrupt("killed during rigl")
        return {method: {"dense_step_s": 0.02, "step_s": 0.021, "ratio": 1.05}}

    kill = {"rigl": True}
    monkeypatch.setattr(step_time, "fixed_batches", lambda n, b, s: ([], [], "random"))
    monkeypatch.setattr(step_time, "bench_model", fake_static)
    monkeypatch.setattr(dst_overhead, "step_times", fake_dst)
    monkeypatch.setattr(cost, "default_interval", lambda m: 100)
    monkeypatch.setattr(cost, "machine_info", lambda: MACHINE)
    args = cost.parse_args(["--only", "step", "--methods", "set", "rigl", "--out-dir", str(tmp_path)])
    with pytest.raises(KeyboardInterrupt):
        cost.gather(args, ["step"], cost.checkpoint_for(args, ["step"]))
    assert measured == ["static/small_cnn", "static/resnet20", "dst/set", "dst/rigl"]

    kill["rigl"] = False
    measured.clear()
    section = cost.gather(args, ["step"], cost.checkpoint_for(args, ["step"]))["step"]
    assert measured == ["dst/rigl"]  # only the unfinished row is measured again
    assert [r["method"] for r in section["dst"]] == ["set", "rigl"]
    assert [r["model"] for r in section["static"]] == ["small_cnn", "resnet20"]
    assert section["resumed_pieces"] == ["step/static/small_cnn", "step/static/resnet20", "step/dst/set"]
    # Other arguments never reuse those rows.
    measured.clear()
    quick = cost.parse_args(["--quick", "--only", "step", "--methods", "set", "--out-dir", str(tmp_path)])
    cost.gather(quick, ["step"], cost.checkpoint_for(quick, ["step"]))
    assert measured == ["static/small_cnn", "static/resnet20", "dst/set"]
