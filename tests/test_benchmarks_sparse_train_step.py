"""benchmarks/sparse_train_step.py: the quick run end to end (tiny MLP)."""

import json

import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks import sparse_train_step as sts  # noqa: E402


def test_quick_run_times_every_form_against_dense(tmp_path):
    result = sts.main(["--quick", "--sparsities", "0.95", "--out-dir", str(tmp_path)])
    (row,) = result["rows"]
    assert row["sparsity"] == 0.95 and row["dense_ms"] > 0
    for name in sts.FORMS:
        form = row[name]
        assert form["ms"] > 0
        assert form["dense_over_form"] == pytest.approx(row["dense_ms"] / form["ms"])
    # The compact files store fewer bytes than the dense-storage file.
    assert row["compact"]["bytes"] < row["masked"]["bytes"]
    saved = json.loads((tmp_path / "sparse_train_step_quick.json").read_text())
    assert saved["rows"][0]["sparsity"] == 0.95
    md = (tmp_path / "sparse_train_step_quick.md").read_text()
    assert "| 0.95 |" in md and "sparse_matmul" in md
