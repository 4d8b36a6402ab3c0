"""`export_inference` never silently writes the slower (or, on request, larger) encoding."""

import json
import os

import pytest

import tflite_export
from tflite_export import inference, inspect_flatbuffer
from tflite_export import verify as _verify

from tflite_helpers import mlp, zero_out


def _model():
    # 90% zeros in 1x4 blocks: the sparse file is the smaller one.
    return zero_out(mlp((64, 128, 64, 10)), 0.1, block=4)


def _fake_latencies(monkeypatch, sparse_us, dense_us):
    calls = []

    def fake(files, num_invokes=200, **kwargs):
        calls.append(len(files))
        return [sparse_us, dense_us]

    monkeypatch.setattr(_verify, "compare_latency", fake)
    return calls


def _has_sparse_tensors(path):
    return bool(inspect_flatbuffer(path).sparse_tensors)


def test_dense_is_written_when_it_is_faster(tmp_path, monkeypatch):
    calls = _fake_latencies(monkeypatch, sparse_us=200.0, dense_us=100.0)
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path)
    choice = report.encoding_choice
    assert calls == [2]
    assert choice["chosen"] == "dense" and choice["optimize"] == "latency"
    assert (choice["sparse_latency_us"], choice["dense_latency_us"]) == (200.0, 100.0)
    assert choice["sparse_bytes"] < choice["dense_bytes"]  # faster wins over smaller
    assert not _has_sparse_tensors(path) and not report.sparse_encoding
    assert report.latency_us == 100.0
    assert any("200.0 us sparse vs 100.0 us dense" in n for n in report.notes)


def test_sparse_is_written_when_it_is_faster(tmp_path, monkeypatch):
    _fake_latencies(monkeypatch, sparse_us=100.0, dense_us=200.0)
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path)
    assert report.encoding_choice["chosen"] == "sparse"
    assert _has_sparse_tensors(path) and report.sparse_encoding
    assert report.latency_us == 100.0


def test_a_latency_tie_keeps_the_smaller_file(tmp_path, monkeypatch):
    _fake_latencies(monkeypatch, sparse_us=101.0, dense_us=100.0)  # within 3%
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path)
    choice = report.encoding_choice
    assert choice["chosen"] == "sparse" and choice["sparse_bytes"] < choice["dense_bytes"]
    assert "tie" in choice["reason"]
    assert _has_sparse_tensors(path)


def test_measured_choice_is_consistent_with_its_own_measurement(tmp_path):
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path, latency_invokes=60)
    c = report.encoding_choice
    t = {"sparse": c["sparse_latency_us"], "dense": c["dense_latency_us"]}
    size = {"sparse": c["sparse_bytes"], "dense": c["dense_bytes"]}
    other = "dense" if c["chosen"] == "sparse" else "sparse"
    tie = abs(t["sparse"] - t["dense"]) <= max(
        inference.TIE_TOLERANCE * t["dense"], inference.TIE_FLOOR_US)
    if tie:
        assert size[c["chosen"]] <= size[other]
    else:
        assert t[c["chosen"]] < t[other]
    assert _has_sparse_tensors(path) == (c["chosen"] == "sparse")


def test_size_keeps_the_smaller_file_without_timing(tmp_path, monkeypatch):
    calls = _fake_latencies(monkeypatch, 1.0, 1.0)
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path, optimize="size",
                                            measure_latency=False)
    c = report.encoding_choice
    assert calls == []
    assert c["chosen"] == min(("sparse", "dense"), key=lambda k: c[f"{k}_bytes"])
    assert c["sparse_latency_us"] is None and report.latency_us is None


def test_sparse_keeps_the_sparse_encoding(tmp_path, monkeypatch):
    calls = _fake_latencies(monkeypatch, 200.0, 100.0)
    path = str(tmp_path / "m.tflite")
    report = tflite_export.export_inference(_model(), path, optimize="sparse",
                                            measure_latency=False)
    assert calls == []
    assert report.encoding_choice["chosen"] == "sparse" and _has_sparse_tensors(path)


def test_choice_is_in_the_json_report(tmp_path, monkeypatch):
    _fake_latencies(monkeypatch, 200.0, 100.0)
    path = str(tmp_path / "m.tflite")
    tflite_export.export_inference(_model(), path)
    with open(path + ".json") as f:
        saved = json.load(f)
    assert saved["encoding_choice"]["chosen"] == "dense"
    assert saved["encoding_choice"]["dense_latency_us"] == 100.0


@pytest.mark.parametrize("bad", ["fast", None, 1])
def test_unknown_optimize_is_refused_before_writing(tmp_path, bad):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"`optimize` must be one of \['latency', 'size', 'sparse'\]"):
        tflite_export.export_inference(_model(), str(path), optimize=bad)
    assert not os.path.exists(path) and os.listdir(tmp_path) == []
