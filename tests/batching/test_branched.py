"""Batch-size decisions from branches (batching/branched.py): pacing, candidates, moves, length."""
import json
import math

import numpy as np
import pytest

from batchtrain.batching.branched import (BRANCH_OVERHEAD, MAX_BACKOFF, MAX_LENGTH,
                                          MIN_BRANCH_GAIN, SIGNIFICANT_IMPROVEMENT,
                                          BranchDecisions, choice, first_choice,
                                          first_enough, predicted_overhead)
from batchtrain.training.branch import Branches

SAMPLES = 4096  # each branch's samples


def measured(improvement: dict, loss_before: float = 1.0, cost_s: float = 0.2) -> Branches:
    seconds = {size: 1.0 for size in improvement}  # unused where a throughput is known
    return Branches(sorted(improvement), loss_before, improvement, seconds, SAMPLES, cost_s)


def rising(size: int) -> float:
    """samples/s of a rising throughput curve: 1000 at 64, 1600 at 128, 2286 at 256."""
    return size / (0.032 + size / 4000)


def test_branches_are_due_once_training_took_ten_times_their_cost():
    decisions = BranchDecisions()
    assert decisions.due()  # nothing has cost anything yet
    decisions.started(0.5)
    decisions.observe(0.5 / BRANCH_OVERHEAD - 0.01)
    assert not decisions.due()
    decisions.observe(0.02)
    assert decisions.due()


def test_branches_are_paced_by_the_next_ones_predicted_cost_when_it_is_more():
    decisions = BranchDecisions()
    decisions.started(0.1)
    decisions.observe(0.1 / BRANCH_OVERHEAD)
    assert decisions.due() and decisions.due(predicted_s=0.05)  # the last cost paces
    assert not decisions.due(predicted_s=0.2)  # the next ones would cost twice that
    decisions.observe(0.1 / BRANCH_OVERHEAD)
    assert decisions.due(predicted_s=0.2)


def test_the_predicted_cost_is_the_other_sizes_samples_at_their_rates_and_the_evaluations():
    from batchtrain.batching.branched import BRANCH_STEPS, EVAL_COST, PROBE_SAMPLES
    rates = {64: 1000.0, 128: 2000.0, 256: 4000.0}.get
    samples = BRANCH_STEPS * 256  # 2,048: a probe set of half of it
    # 4 evaluations (one before, one per size) of 1,024 samples at a third of 128's rate
    evaluations = 4 * (samples // 2) * EVAL_COST / 2000
    assert predicted_overhead([64, 128, 256], 128, 1, rates) == pytest.approx(
        samples / 1000 + samples / 4000 + evaluations)  # the current size's branch is kept
    longer = 4 * samples  # 8,192: the probe set is capped
    assert predicted_overhead([64, 128, 256], 128, 4, rates) == pytest.approx(
        longer / 1000 + longer / 4000 + 4 * PROBE_SAMPLES * EVAL_COST / 2000)
    assert predicted_overhead([64, 128], 128, 1, lambda size: 0.0) == float("inf")
    assert predicted_overhead([64, 128], 128, 1, {64: 1000.0, 128: 0.0}.get) == float("inf")


def test_the_candidates_are_the_current_size_its_double_and_its_half_within_bounds():
    decisions = BranchDecisions()
    assert decisions.sizes(128, 32, 1024) == [64, 128, 256]
    assert decisions.sizes(128, 128, 1024) == [128, 256]  # not below the floor
    assert decisions.sizes(128, 32, 128) == [64, 128]  # not above the top (memory ceiling)
    assert decisions.sizes(128, 128, 128) == [128]


def test_a_clearly_faster_size_is_taken():
    # per second (improvement x samples/s / samples): 64: 0.10 x 1000, 128: 0.09 x 1600 = 1.44x
    size, record = BranchDecisions().decide(measured({64: 0.10, 128: 0.09}), 64, rising)
    assert size == 128 and record["reason"] == "branched"
    rates = dict(record["improvement_per_s"])
    assert rates[128] / rates[64] == pytest.approx(0.09 * rising(128) / (0.10 * rising(64)))


def test_a_size_within_the_margin_is_not_taken():
    # 128 is (1 + MIN_BRANCH_GAIN / 2) x as fast as 64 per second: not enough to move
    gain = 0.10 * rising(64) / rising(128) * (1 + MIN_BRANCH_GAIN / 2)
    size, record = BranchDecisions().decide(measured({64: 0.10, 128: gain}), 64, rising)
    assert size == 64 and record["reason"] == "branched: current is fastest"


def test_a_smaller_size_is_taken_when_it_is_faster():
    size, _ = BranchDecisions().decide(measured({64: 0.10, 128: 0.03, 256: 0.01}), 128, rising)
    assert size == 64


def test_the_branch_clock_is_used_where_there_is_no_throughput():
    branches = Branches([64, 128], 1.0, {64: 0.1, 128: 0.1}, {64: 2.0, 128: 1.0}, SAMPLES, 0.2)
    assert BranchDecisions().decide(branches, 64, lambda size: 0.0)[0] == 128


def test_insignificant_improvements_move_nothing_and_lengthen_the_next_branches():
    decisions = BranchDecisions()
    tiny = SIGNIFICANT_IMPROVEMENT * 0.5  # of a probe loss of 1
    size, record = decisions.decide(measured({64: tiny / 10, 128: tiny}), 64, rising)
    assert size == 64 and "longer next" in record["reason"] and decisions.length == 2
    for _ in range(20):
        decisions.decide(measured({64: tiny / 10, 128: tiny}), 64, rising)
    assert decisions.length == MAX_LENGTH  # bounded
    decisions.decide(measured({64: 0.1, 128: 0.05}), 64, rising)
    assert decisions.length == MAX_LENGTH  # a significant result keeps the length


def test_no_branch_improved_keeps_the_size():
    size, record = BranchDecisions().decide(measured({64: -0.1, 128: -0.2}), 64, rising)
    assert size == 64 and record["improvement_per_s"] == []


def test_noisy_branches_of_equal_sizes_do_not_flap_and_a_real_gain_is_always_found():
    """Two sizes whose true rates are equal, measured with 4 % noise: the size never moves. The
    double truly 1.5x faster, measured with the same noise: it is taken every time."""
    rng = np.random.default_rng(0)
    decisions, moves, size = BranchDecisions(), 0, 64
    for _ in range(200):
        true = {64: 0.10, 128: 0.10 * rising(64) / rising(128)}
        noisy = {s: gain * (1 + 0.04 * rng.uniform(-1, 1)) for s, gain in true.items()}
        chosen, _ = decisions.decide(measured(noisy), size, rising)
        moves += chosen != size
    assert moves == 0
    for _ in range(200):
        true = {64: 0.10, 128: 0.15 * rising(64) / rising(128)}
        noisy = {s: gain * (1 + 0.04 * rng.uniform(-1, 1)) for s, gain in true.items()}
        assert decisions.decide(measured(noisy), 64, rising)[0] == 128


def test_decisions_state_round_trips_through_json():
    decisions = BranchDecisions()
    decisions.started(0.3)
    decisions.observe(1.25)
    decisions.decide(measured({64: 1e-5, 128: 1e-5}), 64, rising)  # insignificant: length 2
    decisions.decide(measured({64: 0.1, 128: 0.01}), 64, rising)  # 64 fastest: kept once
    decisions.observe(0.5)
    restored = BranchDecisions()
    restored.load_state_dict(json.loads(json.dumps(decisions.state_dict())))
    assert restored.state_dict() == decisions.state_dict() == {
        "trained_s": 0.5, "cost_s": 0.2, "length": 2, "kept": 1}
    older = BranchDecisions()  # a checkpoint from before the back-off has no "kept"
    older.load_state_dict({"trained_s": 0.5, "cost_s": 0.2, "length": 2})
    assert older.kept == 0


def trained_until_due(decisions: BranchDecisions, step_s: float = 0.01) -> float:
    """Training time observed until branches are due again."""
    trained = 0.0
    while not decisions.due():
        decisions.observe(step_s)
        trained += step_s
    return trained


def test_each_kept_size_halves_how_often_branches_run_and_a_move_restores_it():
    decisions, cost = BranchDecisions(), 0.2
    decisions.started(cost)
    first = trained_until_due(decisions)
    assert first == pytest.approx(cost / BRANCH_OVERHEAD, abs=0.011)
    waits = []
    for _ in range(MAX_BACKOFF + 2):  # the current size is fastest every time
        size, _ = decisions.decide(measured({64: 0.10, 128: 0.01}, cost_s=cost), 64, rising)
        assert size == 64
        waits.append(trained_until_due(decisions))
    expected = [first * 2 ** min(k, MAX_BACKOFF) for k in range(1, MAX_BACKOFF + 3)]
    assert waits == pytest.approx(expected, rel=0.01)  # 2x, 4x, 8x, then no rarer
    size, _ = decisions.decide(measured({64: 0.01, 128: 0.10}, cost_s=cost), 64, rising)
    assert size == 128 and trained_until_due(decisions) == pytest.approx(first, abs=0.011)


def test_insignificant_branches_confirm_nothing_and_do_not_back_off():
    decisions, cost = BranchDecisions(), 0.2
    tiny = SIGNIFICANT_IMPROVEMENT * 0.5  # of a probe loss of 1
    for _ in range(3):
        decisions.decide(measured({64: tiny, 128: tiny / 10}, cost_s=cost), 64, rising)
    assert decisions.kept == 0  # longer branches (the length doubles), paced as before
    assert trained_until_due(decisions) == pytest.approx(cost / BRANCH_OVERHEAD, abs=0.011)


def test_the_first_batch_is_the_smallest_size_no_larger_one_clearly_beats():
    decisions = BranchDecisions()
    clock = {32: 1.0, 64: 0.9, 128: 0.5}  # the branches' own seconds
    # per second: 32: 0.30, 64: 0.32 (within the margin of 32), 128: 0.50 (clearly faster)
    start = Branches([32, 64, 128], 1.0, {32: 0.30, 64: 0.288, 128: 0.25}, clock, SAMPLES, 0.4)
    assert decisions.first(start) == 128
    assert decisions.cost_s == 0.0  # the start's budget paid: the next ones' own cost paces
    close = Branches([32, 64], 1.0, {32: 0.30, 64: 0.288}, clock, SAMPLES, 0.4)
    assert close.fastest == 64 and decisions.first(close) == 32  # 7 % faster: not enough
    assert decisions.first(Branches([32, 64], 1.0, {32: -0.1, 64: 0.0}, clock, SAMPLES, 0.4)) is None


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("improvement", [
    {32: 0.30, 64: 0.288, 128: 0.25}, {32: 0.30, 64: 0.50, 128: 0.20}, {32: 0.1, 64: -0.2, 128: 0.3},
    {32: -0.1, 64: 0.0, 128: -0.3}, {32: 0.293, 64: 0.284, 128: 0.1615}])
def test_the_start_choice_read_branch_by_branch_names_the_branch_just_run_or_an_earlier_one(
        improvement, descending):
    """What training/branch.py branch relies on to keep the chosen branch: each answer is the
    branch just run or an earlier answer, so holding every branch it named is enough (the last
    case flips back when run from the largest down: 128, then 64, then 128 again)."""
    clock = {32: 1.0, 64: 0.9, 128: 0.5}
    sizes = sorted(improvement, reverse=descending)
    final = first_choice(Branches(sizes, 1.0, improvement, clock, SAMPLES, 0.4))
    named = []
    for index in range(len(sizes)):
        part = {size: improvement[size] for size in sizes[:index + 1]}
        named.append(first_choice(Branches(sizes[:index + 1], 1.0, part, clock, SAMPLES, 0.4)))
        assert named[-1] in (None, *named[:-1], sizes[index])
    assert named[-1] == final
    assert final is None or final in [size for size, name in zip(sizes, named) if name == size]


def rates_branches(sizes: list[int], per_second: dict[int, float]) -> Branches:
    """Branches run in the order of `sizes`, with these improvements per second (1 s each)."""
    return Branches(list(sizes), 1.0, {size: per_second[size] for size in sizes},
                    {size: 1.0 for size in sizes}, SAMPLES, 0.4)


def test_the_start_stops_going_down_once_the_smallest_size_clearly_loses():
    rates = {64: 20.0, 128: 30.0, 256: 40.0}  # each size clearly beats its half
    assert not first_enough(rates_branches([256], rates))  # one size: nothing to compare
    assert first_enough(rates_branches([256, 128], rates))  # 256 beats 128 by 33 %: 64 would lose
    close = {64: 20.0, 128: 30.0, 256: 32.0}  # 7 %: within the margin, 64 may still win
    assert not first_enough(rates_branches([256, 128], close))
    assert not first_enough(rates_branches([128, 256], rates))  # upwards: never stops the climb
    worsening = {128: -1.0, 256: -0.5}  # nothing improved: a smaller size may
    assert not first_enough(rates_branches([256, 128], worsening))
    diverged = {128: -1.0, 256: 5.0}
    assert first_enough(rates_branches([256, 128], diverged))
    # what it spares never changes the choice on a unimodal curve
    for peak in (64, 128, 256):
        unimodal = {size: 100.0 - 30.0 * abs(math.log2(size / peak)) for size in (32, 64, 128, 256)}
        order = sorted(unimodal, reverse=True)
        stop = next((k for k in range(1, len(order)) if first_enough(
            rates_branches(order[:k + 1], unimodal))), len(order) - 1)
        assert first_choice(rates_branches(order[:stop + 1], unimodal)) == first_choice(
            rates_branches(order, unimodal)) == peak


def test_during_training_the_choice_without_the_current_size_names_the_best_other():
    """Brancher runs the current size last: before it, the best other size counts as a move."""
    part = measured({64: 0.10, 256: 0.02})
    assert choice(part, 128, rising)[0] == 64
    assert choice(measured({64: 0.10, 256: 0.02, 128: 0.09}), 128, rising)[0] == 128
    assert choice(measured({64: 0.004, 256: 0.002}), 128, rising)[0] == 128  # insignificant
    decisions = BranchDecisions()
    full = measured({64: 0.10, 256: 0.02, 128: 0.03})
    assert decisions.decide(full, 128, rising)[0] == choice(full, 128, rising)[0] == 64


def test_a_kept_branch_paces_the_next_by_what_it_cost_beyond_training():
    decisions = BranchDecisions()
    kept = Branches([64, 128], 1.0, {64: 0.10, 128: 0.01}, {64: 0.15, 128: 0.05}, SAMPLES, 0.25,
                    kept=64)
    size, record = decisions.decide(kept, 64, rising)
    assert size == 64 and record["kept"] == 64
    assert decisions.cost_s == pytest.approx(0.10)  # 0.25 s, less the kept branch's 0.15 s
