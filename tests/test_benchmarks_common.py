"""Unit tests for the benchmark harness helpers (no timing, no core API)."""

import json

import pytest

from benchmarks import _common
from benchmarks import step_time


def test_markdown_table_shape():
    out = _common.markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]])
    lines = out.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[1] == "|---|---|"
    assert lines[2:] == ["| 1 | x |", "| 2.5 | y |"]


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="Row has 1 cells, expected 2"):
        _common.markdown_table(["a", "b"], [[1]])


def test_write_json_is_atomic_and_readable(tmp_path):
    path = _common.write_json(tmp_path / "sub" / "r.json", {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_machine_info_fields():
    info = _common.machine_info()
    for key in ("date", "platform", "cpu_count", "tensorflow", "keras", "numpy"):
        assert info[key] not in (None, "")
    assert "TensorFlow" in _common.machine_markdown(info)


def test_step_time_markdown_from_fake_result():
    fake = {
        "config": {"rounds": 2, "steps": 3, "warmup": 1, "batch_size": 8, "data": "random"},
        "machine": _common.machine_info(),
        "results": [{
            "model": "toy", "params": 1234, "distribution": "erk",
            "target_sparsity": 0.9, "actual_sparsity": 0.9001,
            "dense_median_ms": 2.0, "sparse_median_ms": 2.1, "ratio": 1.05,
            "paired_ratio_median": 1.04, "paired_ratio_min": 1.0, "paired_ratio_max": 1.1,
            "cpu_ratio": 1.02,
        }],
    }
    md = step_time.render_markdown(fake)
    assert "| toy | 1,234 | ERK 90% (actual 0.9001) | 2.00 | 2.10 | **1.050x** |" in md
    assert md.splitlines()[4].endswith("| 1.020x |")
    assert "2 alternated rounds x 3" in md


def test_step_time_quick_args():
    args = step_time.parse_args(["--quick"])
    assert (args.rounds, args.steps, args.warmup) == (4, 5, 3)
    with pytest.raises(SystemExit):
        step_time.parse_args(["--steps", "0"])


def test_step_time_load_note_flags_contention():
    # Results written before the load probe: 1-min load averages only.
    result = {"machine": {"cpu_count": 2}, "load_average_1min": {"before": 4.5, "after": 1.0}}
    assert "loaded by other work" in step_time._load_note(result)
    result["load_average_1min"] = {"before": 0.5, "after": 1.0}
    note = step_time._load_note(result)
    assert "0.5 before" in note and "loaded" not in note
    # With the probe: other processes' CPU use decides.
    result = {"machine": {"cpu_count": 2},
              "load_average": {"before": [1.5, 0, 0], "after": [1.9, 0, 0], "other_cores": 0.02}}
    assert "loaded" not in step_time._load_note(result)
    result["load_average"]["other_cores"] = 1.1
    assert "loaded by other work" in step_time._load_note(result)


def test_load_note_without_figures_is_empty():
    assert _common.load_note(None, 2) == ""
    assert _common.load_note({"before": None, "after": [1.0]}, 2) == ""


@pytest.mark.full
def test_load_probe_counts_other_processes_not_its_own(monkeypatch):
    # Fake clocks: the machine's busy CPU seconds, this process's own CPU
    # seconds (with finished children) and the wall clock.
    clock = {"busy": 100.0, "own": 10.0, "wall": 50.0}
    monkeypatch.setattr(_common, "_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(_common, "_own_seconds", lambda: clock["own"])
    monkeypatch.setattr(_common.time, "monotonic", lambda: clock["wall"])
    probe = _common.LoadProbe()
    # 2 s wall: this process used 2 CPU s, the machine 2.5 → 0.25 other cores.
    clock.update(busy=102.5, own=12.0, wall=52.0)
    assert probe.other_cores() == pytest.approx(0.25)
    # Only own work since the start (or a finished child, like the TF-MOT
    # peer) is not "other".
    clock.update(busy=103.5, own=13.5)
    assert probe.other_cores() == pytest.approx(0.0)
    record = probe.record()
    assert set(record) == {"before", "after", "other_cores"}
    monkeypatch.setattr(_common, "_busy_seconds", lambda: None)
    assert probe.other_cores() is None


@pytest.mark.slow  # real processes: needs an otherwise idle machine (not under pytest-xdist)
def test_load_probe_sees_another_process_and_not_itself():
    import subprocess
    import sys
    import time

    if _common._busy_seconds() is None:
        pytest.skip("no /proc/stat on this platform")
    import os

    probe = _common.LoadProbe()
    time.sleep(0.5)
    baseline, cpus = probe.other_cores(), os.cpu_count() or 1
    if baseline > cpus - 1:  # e.g. a benchmark on every core: no room for the child to show
        pytest.skip(f"other processes already keep {baseline:.1f} of {cpus} cores busy")
    probe = _common.LoadProbe()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:  # this process's own work is not "other"
        pass
    mine = probe.other_cores()
    probe = _common.LoadProbe()
    subprocess.run([sys.executable, "-c",
                    "import time\nt = time.monotonic() + 0.8\nwhile time.monotonic() < t: pass"],
                   check=True)
    # A finished child counts as this process (the TF-MOT peer runs that way).
    child = probe.other_cores()
    other = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.monotonic() + 1.5\nwhile time.monotonic() < t: pass"])
    time.sleep(0.3)
    probe = _common.LoadProbe()
    time.sleep(0.8)
    busy = probe.other_cores()
    other.wait()
    assert busy > mine + 0.5 and busy > child + 0.5, (mine, child, busy)
    record = _common.LoadProbe().record()
    assert set(record) == {"before", "after", "other_cores"}


def test_piece_checkpoint_resumes_finished_pieces_only(tmp_path):
    path = tmp_path / "b.partial.json"
    calls = []

    def piece(name, fail=False):
        def measure():
            calls.append(name)
            if fail:
                raise KeyboardInterrupt("killed")
            return {"row": name}
        return measure

    first = _common.PieceCheckpoint(path, {"quick": True})
    assert first.run("a", piece("a")) == {"row": "a"}
    with pytest.raises(KeyboardInterrupt):
        first.run("b", piece("b", fail=True))
    assert json.loads(path.read_text())["pieces"] == {"a": {"row": "a"}}

    again = _common.PieceCheckpoint(path, {"quick": True})
    calls.clear()
    assert [again.run(n, piece(n)) for n in "abc"] == [{"row": n} for n in "abc"]
    assert calls == ["b", "c"] and again.resumed == ["a"]
    again.finish()
    assert not path.exists()


def test_piece_checkpoint_never_mixes_other_settings_or_a_torn_file(tmp_path):
    path = tmp_path / "b.partial.json"
    _common.PieceCheckpoint(path, {"quick": True}).run("a", lambda: 1)
    other = _common.PieceCheckpoint(path, {"quick": False})
    assert other.pieces == {} and other.run("a", lambda: 2) == 2
    path.write_text('{"settings": {"quick": false}, "pieces": {"a"')  # killed mid-write
    assert _common.PieceCheckpoint(path, {"quick": False}).pieces == {}
    memory = _common.PieceCheckpoint(None, {})
    assert memory.run("a", lambda: 3) == 3 and memory.run("a", lambda: 4) == 3
    memory.finish()


def test_tflite_bench_training_rows_resume(monkeypatch, tmp_path):
    from benchmarks import tflite_bench

    done = []

    def fake_row(quick, tmp, arch):
        done.append(arch)
        if arch == "cnn" and len(done) == 2:
            raise KeyboardInterrupt("killed during the cnn row")
        return {"model": arch, "keras_step_ms": 1.0}

    monkeypatch.setattr(tflite_bench, "_train_row", fake_row)
    path = tmp_path / "tflite_bench.partial.json"
    with pytest.raises(KeyboardInterrupt):
        tflite_bench.bench_training(True, str(tmp_path), [], _common.PieceCheckpoint(path, {"quick": True}))
    rows = []
    tflite_bench.bench_training(True, str(tmp_path), rows, _common.PieceCheckpoint(path, {"quick": True}))
    assert done == ["mlp", "cnn", "cnn"] and [r["model"] for r in rows] == ["mlp", "cnn"]
