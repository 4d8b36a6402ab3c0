"""benchmarks/on_device_train.py on its --quick tiny config: the script
runs end to end and writes consistent JSON and Markdown. No timing
assertions."""

import json

import pytest

from benchmarks import on_device_train as bench


def test_quick_run_writes_json_and_markdown(tmp_path):
    pytest.importorskip("ai_edge_litert")
    res = bench.main(["--quick", "--models", "resnet20", "--out-dir",
                      str(tmp_path)])
    saved = json.loads((tmp_path / "on_device_train_quick.json").read_text())
    assert saved["quick"] and [r["model"] for r in saved["rows"]] == ["resnet20"]
    row = saved["rows"][0]
    for key in ("litert_full_ms", "keras_full_ms", "litert_head_ms",
                "keras_head_ms"):
        assert row[key] > 0
    # Head-only files hold a frozen backbone as constants: not smaller than
    # the trainable sparse file's dense-shaped parts, but present.
    assert row["trainable_bytes"] > 0 and row["head_only_trainable_bytes"] > 0
    assert row["bytes_over_dense"] == pytest.approx(
        row["trainable_bytes"] / row["dense_inference_float32_bytes"])
    assert row["peak_rss"]["full"]["peak_rss_mib"] > 0
    md = (tmp_path / "on_device_train_quick.md").read_text()
    assert "Quick smoke run" in md and "| resnet20 |" in md
    assert res["rows"][0]["model"] == "resnet20"


def test_unknown_model_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--models", "vgg", "--out-dir", str(tmp_path)])
