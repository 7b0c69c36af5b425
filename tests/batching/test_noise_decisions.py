"""batching/noise_decisions.py alone: the robust estimate, the step bound, the margin."""
import pytest

from batchtrain.batching.noise_decisions import (LOW_CONFIDENCE_STEP, MAX_STEP, MIN_GOODPUT_GAIN,
                                                 ROBUST_WINDOW, NoiseDecisions, rule_size)


def test_the_robust_estimate_is_the_median_of_the_latest_window():
    decisions = NoiseDecisions(margin=0.2, min_confidence=0.5)
    readings = [100.0, 110.0, 90.0, 9_000.0, 105.0, 95.0, 1.0]  # two wild ones among them
    robust = [decisions.robust(phi) for phi in readings]
    assert robust[:3] == [100.0, 105.0, 100.0]
    assert robust[3] == 105.0  # one wild estimate moves the median by a neighbour, not to it
    assert robust[-1] == 95.0 and len(decisions.recent_phi) == ROBUST_WINDOW  # 1, 90, 95, 105, 9000
    assert decisions.recent_phi == readings[-ROBUST_WINDOW:]


def test_the_step_bound_is_smaller_below_the_confidence_asked_for():
    decisions = NoiseDecisions(margin=0.2, min_confidence=0.5)
    assert decisions.step(0.9) == decisions.step(0.5) == MAX_STEP
    assert decisions.step(0.49) == decisions.step(0.0) == LOW_CONFIDENCE_STEP


@pytest.mark.parametrize("current, target, details, expected", [
    (128, 150, {}, (False, "within margin")),  # 17 % away: inside the 20 % margin
    (128, 256, {}, (True, "changed")),
    (128, 256, {"goodput": {128: 100.0, 256: 100.0 * (1 + MIN_GOODPUT_GAIN)}},
     (False, "gain too small")),  # exactly the minimum gain is not more than it
    (128, 256, {"goodput": {128: 100.0, 256: 110.0}}, (True, "changed")),
    (128, 256, {"exploring": True}, (True, "exploring")),
    (128, 64, {}, (True, "changed"))])  # down as well as up
def test_a_move_needs_the_margin_and_for_goodput_the_gain(current, target, details, expected):
    assert NoiseDecisions(margin=0.2, min_confidence=0.5).worth_moving(
        current, target, details) == expected


def test_the_rules_sizes_and_the_state_round_trip():
    assert rule_size("noise-scale", 300.0, noise_multiplier=2.0, theta=0.5) == 600.0
    assert rule_size("norm-test", 300.0, noise_multiplier=2.0, theta=0.5) == 1200.0
    decisions = NoiseDecisions(margin=0.2, min_confidence=0.5)
    for phi in (10.0, 30.0, 20.0):
        decisions.robust(phi)
    restored = NoiseDecisions(margin=0.2, min_confidence=0.5)
    restored.load_state_dict(decisions.state_dict())
    assert restored.recent_phi == [10.0, 30.0, 20.0]
    assert restored.robust(40.0) == decisions.robust(40.0) == 25.0
    older = NoiseDecisions(margin=0.2, min_confidence=0.5)
    older.load_state_dict({})  # a checkpoint from before the estimates were kept
    assert older.recent_phi == []
