"""Sample-keyed learning-rate schedules: known values, torch's schedulers as ground truth, batch-size
independence, and the --lr-schedule parser."""
import itertools
import math

import pytest
import torch

from batchtrain.errors import ConfigError
from batchtrain.optim.schedules import (
    Constant, Cosine, LRSchedule, OneCycle, SampleClock, Step, Warmup, lr_at, parse_schedule,
    to_samples,
)

SAMPLES_PER_EPOCH = 1000


def clock(samples_seen: int, total_samples: int = 4 * SAMPLES_PER_EPOCH,
          samples_per_epoch: int = SAMPLES_PER_EPOCH) -> SampleClock:
    return SampleClock(samples_seen, samples_per_epoch, total_samples)


def torch_lrs(make_scheduler, batch_sizes, base_lr: float = 0.1) -> dict[int, float]:
    """samples_seen -> lr of each step, with a torch scheduler stepped once per batch (step-keyed)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    lrs, samples_seen = {}, 0
    for batch_size in batch_sizes:
        lrs[samples_seen] = optimizer.param_groups[0]["lr"]
        optimizer.step()  # no gradient: a no-op that keeps torch's step-order check quiet
        scheduler.step()
        samples_seen += batch_size
    return lrs


def our_lrs(schedule, batch_sizes, total_samples, base_lr: float = 0.1,
            samples_per_epoch: int = SAMPLES_PER_EPOCH) -> dict[int, float]:
    """samples_seen -> lr of each step, with the clock a trainer would build from batch_sizes."""
    lrs, samples_seen = {}, 0
    for batch_size in batch_sizes:
        lrs[samples_seen] = lr_at(schedule, base_lr, SampleClock(samples_seen, samples_per_epoch,
                                                                  total_samples))
        samples_seen += batch_size
    return lrs


def assert_same_curve(ours: dict[int, float], theirs: dict[int, float]) -> None:
    assert ours.keys() == theirs.keys()
    keys = sorted(ours)
    torch.testing.assert_close(torch.tensor([ours[k] for k in keys], dtype=torch.float64),
                               torch.tensor([theirs[k] for k in keys], dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


# --- known values ------------------------------------------------------------------------------

def test_constant_is_one_everywhere():
    assert [Constant().factor(clock(s)) for s in (0, 1234, 4000, 9999)] == [1.0] * 4


@pytest.mark.parametrize("final", [0.0, 0.01, 0.5])
def test_cosine_at_start_half_end_and_past_the_end(final):
    cosine = Cosine(final)
    assert cosine.factor(clock(0)) == pytest.approx(1.0)
    assert cosine.factor(clock(2000)) == pytest.approx((1 + final) / 2)
    assert cosine.factor(clock(1000)) == pytest.approx(final + (1 - final) * (1 + math.sqrt(0.5)) / 2)
    assert cosine.factor(clock(4000)) == pytest.approx(final)
    assert cosine.factor(clock(5000)) == pytest.approx(final)  # holds its end value


@pytest.mark.parametrize("milestones", [["2e", "3.5e"], [2000, 3500], ["2000", "3500s"],
                                        ["2e", 3500]])
def test_step_drops_at_each_milestone_in_epochs_or_samples(milestones):
    step = Step(milestones, gamma=0.5)
    expected = {0: 1.0, 1999: 1.0, 2000: 0.5, 2001: 0.5, 3499: 0.5, 3500: 0.25, 9000: 0.25}
    assert {s: step.factor(clock(s)) for s in expected} == expected


def test_step_epoch_milestones_follow_samples_per_epoch():
    step = Step(["1.5e"])
    assert step.factor(clock(299, samples_per_epoch=200)) == 1.0
    assert step.factor(clock(300, samples_per_epoch=200)) == pytest.approx(0.1)


@pytest.mark.parametrize("start_factor", [0.0, 0.2])
def test_warmup_is_linear_then_hands_over_to_the_next_schedule(start_factor):
    warmup = Warmup("1e", Cosine(), start_factor=start_factor)  # 1000 of 4000 samples
    for fraction in (0.0, 0.25, 0.5):
        assert warmup.factor(clock(int(1000 * fraction))) == pytest.approx(
            start_factor + (1 - start_factor) * fraction)
    assert warmup.factor(clock(999)) == pytest.approx(start_factor + (1 - start_factor) * 0.999)
    # then: cosine over the remaining 3000 samples, its clock starting at 0 at the end of warm-up
    assert warmup.factor(clock(1000)) == pytest.approx(1.0)  # 100 % of the warm-up
    assert warmup.factor(clock(2500)) == pytest.approx(0.5)
    assert warmup.factor(clock(4000)) == pytest.approx(0.0)


def test_warmup_then_step_counts_milestones_from_the_end_of_warmup():
    warmup = Warmup(500, Step(["1e"]))
    assert warmup.factor(clock(1499)) == 1.0
    assert warmup.factor(clock(1500)) == pytest.approx(0.1)


def test_warmup_longer_than_the_run_never_reaches_the_next_schedule():
    warmup = Warmup("10e", Cosine())
    assert warmup.factor(clock(2000)) == pytest.approx(0.2)


def test_one_cycle_starts_peaks_and_ends_where_torch_puts_them():
    one_cycle = OneCycle(pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    total = 1000  # peak at 0.3 * 1000 - 1 = 299, minimum at 999 (OneCycleLR's convention)
    assert one_cycle.factor(clock(0, total)) == pytest.approx(1 / 25)
    assert one_cycle.factor(clock(299, total)) == pytest.approx(1.0)
    assert one_cycle.factor(clock(298, total)) < 1.0 and one_cycle.factor(clock(300, total)) < 1.0
    assert one_cycle.factor(clock(999, total)) == pytest.approx(1 / (25 * 1e4))
    assert one_cycle.factor(clock(1000, total)) == pytest.approx(1 / (25 * 1e4))


def test_one_cycle_survives_a_run_too_short_for_its_rising_phase():
    for total in (0, 1, 2, 3):
        factors = [OneCycle().factor(clock(s, total)) for s in range(total + 1)]
        assert all(math.isfinite(f) and 0 < f <= 1 for f in factors)


def test_lr_at_multiplies_the_base_lr():
    assert lr_at(Step([100]), 0.3, clock(100)) == pytest.approx(0.03)


@pytest.mark.parametrize("duration, samples", [(0, 0), (1500, 1500), ("1500", 1500), ("1500s", 1500),
                                               ("2e", 2000), ("0.5e", 500), (".25e", 250),
                                               (" 3E ", 3000)])
def test_durations_convert_to_samples(duration, samples):
    assert to_samples(duration, SAMPLES_PER_EPOCH) == samples


# --- torch's step-keyed schedulers as ground truth, one sample per step --------------------------

ONE_SAMPLE_STEPS = 200


@pytest.mark.parametrize("total, pct_start, div, final_div", [
    (200, 0.3, 25.0, 1e4), (101, 0.25, 25.0, 1e4), (200, 0.5, 10.0, 100.0), (57, 0.1, 4.0, 3.0)])
def test_one_cycle_equals_torch_one_cycle_lr_at_every_step(total, pct_start, div, final_div):
    theirs = torch_lrs(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=total, pct_start=pct_start, anneal_strategy="cos",
        three_phase=False, div_factor=div, final_div_factor=final_div, cycle_momentum=False),
        [1] * total)
    ours = our_lrs(OneCycle(pct_start, div, final_div), [1] * total, total)
    assert_same_curve(ours, theirs)


@pytest.mark.parametrize("schedule, make_torch_scheduler", [
    (Cosine(0.05), lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=ONE_SAMPLE_STEPS, eta_min=0.1 * 0.05)),
    (Step([50, "150s"], gamma=0.3), lambda opt: torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[50, 150], gamma=0.3)),
    (Warmup(40, start_factor=0.25), lambda opt: torch.optim.lr_scheduler.LinearLR(
        opt, start_factor=0.25, total_iters=40)),
    # SequentialLR restarts the next scheduler at the milestone: our `then` clock does the same
    (Warmup(40, Cosine(0.01), start_factor=0.25), lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=40),
              torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=ONE_SAMPLE_STEPS - 40,
                                                         eta_min=0.1 * 0.01)], milestones=[40])),
    (Warmup(40, Step([30, 100]), start_factor=0.5), lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=40),
              torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 100])], milestones=[40])),
], ids=["cosine", "step", "warmup", "warmup+cosine", "warmup+step"])
def test_schedule_equals_its_torch_counterpart_at_every_step(schedule, make_torch_scheduler):
    batch_sizes = [1] * ONE_SAMPLE_STEPS
    assert_same_curve(our_lrs(schedule, batch_sizes, ONE_SAMPLE_STEPS),
                      torch_lrs(make_torch_scheduler, batch_sizes))


# --- the point of the module: the batch size does not move the schedule --------------------------

TOTAL = 8 * (2 ** 8 - 1)                    # 2040 samples: 255 batches of 8, or 8 doubling batches
CONSTANT_BATCHES = [8] * (TOTAL // 8)
DOUBLING_BATCHES = [8 * 2 ** k for k in range(8)]  # 8, 16, ..., 1024
DOUBLING_STARTS = list(itertools.accumulate(DOUBLING_BATCHES, initial=0))[:-1]  # 0, 8, 24, 56 ...
EVERY_SCHEDULE = [Constant(), Cosine(), Cosine(0.1), Step(["1e", 1000]), Warmup(100),
                  Warmup("0.5e", Cosine()), Warmup(60, Step([400]), start_factor=0.5), OneCycle(),
                  OneCycle(pct_start=0.1, div_factor=5, final_div_factor=2)]


@pytest.mark.parametrize("schedule", EVERY_SCHEDULE, ids=repr)
def test_factor_depends_on_samples_seen_not_on_the_batch_sizes(schedule):
    constant = our_lrs(schedule, CONSTANT_BATCHES, TOTAL, samples_per_epoch=680)
    doubling = our_lrs(schedule, DOUBLING_BATCHES, TOTAL, samples_per_epoch=680)
    assert set(doubling) < set(constant)   # every doubling step starts where a constant one does
    assert all(doubling[s] == constant[s] for s in doubling)


def test_step_keyed_torch_schedulers_bend_or_cut_short_when_the_batch_size_changes():
    """The plain equivalent with a step-keyed CosineAnnealingLR: set T_max in steps for one batch
    size and the other sequence either never finishes (fixed T_max) or decays too early (T_max of
    its own step count), so the lr at the same samples_seen differs; ours agrees by construction."""
    def cosine_over(steps):
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    constant = torch_lrs(cosine_over(len(CONSTANT_BATCHES)), CONSTANT_BATCHES)
    fixed_t_max = torch_lrs(cosine_over(len(CONSTANT_BATCHES)), DOUBLING_BATCHES)
    own_t_max = torch_lrs(cosine_over(len(DOUBLING_BATCHES)), DOUBLING_BATCHES)
    ours = our_lrs(Cosine(), DOUBLING_BATCHES, TOTAL)
    shared = sorted(set(DOUBLING_STARTS) - {0})
    for bent in (fixed_t_max, own_t_max):
        assert max(abs(bent[s] - constant[s]) for s in shared) > 0.01
    assert fixed_t_max[1016] > 0.099        # the last batch, half the data: lr still ~ the peak
    assert own_t_max[120] < 0.07            # 6 % of the samples in, lr already down by a third
    assert all(ours[s] == pytest.approx(constant[s], rel=1e-12) for s in shared)


# --- contract: every schedule ------------------------------------------------------------------

@pytest.mark.parametrize("schedule", EVERY_SCHEDULE, ids=repr)
def test_every_schedule_is_a_pure_bounded_described_lr_schedule(schedule):
    assert isinstance(schedule, LRSchedule)
    assert isinstance(schedule.describe(), str) and schedule.describe()
    clocks = [clock(s, TOTAL) for s in range(0, TOTAL + 200, 7)]
    forward = [schedule.factor(c) for c in clocks]
    backward = [schedule.factor(c) for c in reversed(clocks)][::-1]
    assert forward == backward              # no hidden state: resume needs only the clock
    assert all(math.isfinite(f) and 0 <= f <= 1 for f in forward)
    rebuilt = type(schedule)(**{name: getattr(schedule, name)  # as after a restart
                                for name in schedule.__dataclass_fields__})
    assert rebuilt == schedule and hash(rebuilt) == hash(schedule)
    assert [rebuilt.factor(c) for c in clocks] == forward


def test_describe_reads_as_a_sentence():
    assert Warmup(6000, Cosine()).describe() == "warmup 6000 samples, then cosine to 0"
    assert Step(["2e", 500], gamma=0.5).describe() == "step x0.5 at 2 epochs, 500 samples"
    assert "1/25" in OneCycle().describe() and "30%" in OneCycle().describe()


@pytest.mark.parametrize("build, problem", [
    (lambda: Step([]), "list of milestones"),
    (lambda: Step("2e"), "list of milestones"),
    (lambda: Step(["2x"]), "bad duration '2x'"),
    (lambda: Step([-5]), "bad duration -5"),
    (lambda: Step([True]), "bad duration True"),
    (lambda: Step([100], gamma=0), "gamma must be a number > 0"),
    (lambda: Cosine(-0.1), "final_factor must be a number >= 0"),
    (lambda: Warmup("1x"), "bad duration '1x'"),
    (lambda: Warmup(100, then="cosine"), "then must be a schedule"),
    (lambda: Warmup(100, start_factor=1.5), "start_factor must be in [0, 1]"),
    (lambda: OneCycle(pct_start=1.0), "pct_start must be in (0, 1)"),
    (lambda: OneCycle(div_factor=0), "div_factor must be a number > 0"),
    (lambda: OneCycle(final_div_factor=math.inf), "final_div_factor must be a number > 0"),
    (lambda: SampleClock(-1, 100, 100), "must be >= 0"),
    (lambda: SampleClock(0, 0, 100), "samples_per_epoch >= 1"),
])
def test_invalid_arguments_raise_config_error_naming_the_fix(build, problem):
    with pytest.raises(ConfigError) as error:
        build()
    assert problem in str(error.value)


# --- the --lr-schedule parser ------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("constant", Constant()),
    ("cosine", Cosine(0.0)),
    ("cosine:0.01", Cosine(0.01)),
    ("cosine:final_factor=0.01", Cosine(0.01)),
    ("step:2e,4e", Step(["2e", "4e"], gamma=0.1)),
    ("step:2e,4e:gamma=0.5", Step(["2e", "4e"], gamma=0.5)),
    ("step:30000,45000s", Step(["30000", "45000s"])),
    ("onecycle", OneCycle()),
    ("onecycle:pct_start=0.25", OneCycle(pct_start=0.25)),
    ("onecycle:pct_start=0.4:div_factor=10:final_div_factor=100", OneCycle(0.4, 10.0, 100.0)),
    ("warmup:1e+cosine", Warmup("1e", Cosine())),
    ("warmup:5000+step:3e,4e", Warmup("5000", Step(["3e", "4e"]))),
    ("warmup:1e", Warmup("1e", Constant())),
    ("warmup:0.5e:start_factor=0.1+onecycle", Warmup("0.5e", OneCycle(), start_factor=0.1)),
    (" Cosine : 0.01 ", Cosine(0.01)),
])
def test_every_documented_form_parses(spec, expected):
    assert parse_schedule(spec) == expected


@pytest.mark.parametrize("spec, problem", [
    ("cosinus", "unknown schedule 'cosinus'"),
    ("", "unknown schedule ''"),
    ("step:2x", "bad duration '2x'"),
    ("step:2e,,4e", "bad duration ''"),
    ("warmup:-5+cosine", "bad duration '-5'"),
    ("step:-2e", "bad duration '-2e'"),
    ("cosine:-0.5", "final_factor must be a number >= 0"),
    ("cosine:abc", "final_factor must be a number"),
    ("cosine:nan", "final_factor must be finite"),
    ("step:2e:gamma=0", "gamma must be a number > 0"),
    ("step:2e:gamma=-0.1", "gamma must be a number > 0"),
    ("step", "step needs a value"),
    ("warmup:1e+", "nothing follows '+'"),
    ("warmup:1e+ ", "nothing follows '+'"),
    ("warmup:1e+bogus", "unknown schedule 'bogus'"),
    ("warmup+cosine", "warmup needs a value"),
    ("cosine+warmup:1e", "'+' may only follow a warm-up"),
    ("onecycle:pct_start=1", "pct_start must be in (0, 1)"),
    ("onecycle:pct_start=0", "pct_start must be in (0, 1)"),
    ("onecycle:pct_start=1.5", "pct_start must be in (0, 1)"),
    ("onecycle:0.3", "onecycle takes no bare value"),
    ("onecycle:max_lr=1", "onecycle has no option 'max_lr'"),
    ("constant:2", "constant takes no bare value"),
    ("cosine:0.1:0.2", "cosine takes one bare value"),
])
def test_malformed_specs_raise_config_error_naming_spec_and_valid_forms(spec, problem):
    with pytest.raises(ConfigError) as error:
        parse_schedule(spec)
    message = str(error.value)
    assert problem in message
    assert repr(spec) in message
    assert "warmup:1e+cosine" in message and "2e or 0.5e epochs" in message
