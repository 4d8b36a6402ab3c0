import math

import pytest

from keras_sparse import schedules as sc


def test_cosine_values():
    s = sc.CosineDecay(0.3)
    assert s(0, 0, 100) == pytest.approx(0.3)
    assert s(50, 0, 100) == pytest.approx(0.15)
    assert s(100, 0, 100) == pytest.approx(0.0)
    assert s(25, 0, 100) == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_cubic_values():
    s = sc.CubicSparsity(0.0, 0.9)
    assert s(0, 0, 1000) == 0.0
    assert s(500, 0, 1000) == pytest.approx(0.9 - 0.9 * 0.125)
    assert s(1000, 0, 1000) == pytest.approx(0.9)
    assert s(2000, 0, 1000) == pytest.approx(0.9)


def test_stagewise_values():
    s = sc.StagewiseDecay(0.4, (0.5, 0.75), 0.5)
    assert s(10, 0, 100) == 0.4
    assert s(50, 0, 100) == 0.2
    assert s(80, 0, 100) == 0.1


def test_update_schedule_rigl_defaults():
    s = sc.UpdateSchedule()
    assert (s.interval, s.stop) == (100, 0.75)
    assert s.bounds(1000) == (0, 750)
    assert s.is_update_step(100, 1000) and s.is_update_step(700, 1000)
    assert not s.is_update_step(0, 1000) and not s.is_update_step(150, 1000)
    assert not s.is_update_step(800, 1000)


def test_last_update_in_window_for_steps_per_execution():
    s = sc.UpdateSchedule(4, stop=20)
    assert s.last_update_in(0, 3) is None
    assert s.last_update_in(3, 6) == 4
    assert s.last_update_in(6, 9) == 8
    assert s.last_update_in(18, 24) == 20
    assert s.last_update_in(20, 28) is None


@pytest.mark.parametrize("interval", [0, -5, 1.5, True, "100"])
def test_bad_interval(interval):
    with pytest.raises(ValueError, match="update_interval"):
        sc.UpdateSchedule(interval)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_drop_fraction(fraction):
    with pytest.raises(ValueError, match=r"drop_fraction.*\(0, 1\)"):
        sc.CosineDecay(fraction)


def test_stop_beyond_training():
    with pytest.raises(ValueError, match="beyond the end of training"):
        sc.UpdateSchedule(10, stop=5000).bounds(1000)


def test_config_round_trip():
    for s in [sc.UpdateSchedule(7, 3, 0.5), sc.CosineDecay(0.2, 0.1), sc.StagewiseDecay(), sc.CubicSparsity(0.1, 0.8), sc.ConstantFraction(0.3)]:
        assert type(s).from_config(s.get_config()).get_config() == s.get_config()


@pytest.mark.parametrize("start, stop", [(0.9, 0.5), (0.5, 0.5), (50, 20), (0, 0), (30, 30)])
def test_start_not_before_stop_of_the_same_kind_is_refused_at_construction(start, stop):
    with pytest.raises(ValueError, match="`stop_step` must be after `start_step`") as e:
        sc.UpdateSchedule(10, start, stop)
    assert f"start_step={start!r}, stop_step={stop!r}" in str(e.value)


def test_start_not_before_stop_of_mixed_kinds_is_refused_once_total_is_known():
    s = sc.UpdateSchedule(10, start=60, stop=0.5)  # fine for 200 steps, not for 100
    assert s.bounds(200) == (60, 100)
    with pytest.raises(ValueError, match=r"stop_step=50 \(from 0.5\) <= start_step=60"):
        s.bounds(100)


def test_count_updates_matches_is_update_step():
    s = sc.UpdateSchedule(3, start=4, stop=0.75)
    total = 40
    for previous, step in [(0, 40), (0, 6), (6, 7), (5, 30), (29, 30), (31, 40), (12, 12)]:
        expected = sum(s.is_update_step(t, total) for t in range(previous + 1, step + 1))
        assert s.count_updates(previous, step, total) == expected, (previous, step)
