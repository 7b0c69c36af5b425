"""Batch-size specs (batching/spec.py): the grammar parse_batch_size reads (128, max, auto,
adaptive:..., 128,256@2e, ramp:..., double:...), its refusals naming the spec, and resolve_policy."""
import re

import pytest

from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.base import Policy
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp
from batchtrain.batching.spec import MAX, parse_batch_size, resolve_policy
from batchtrain.errors import ConfigError

EPOCH = 100  # samples per epoch where a schedule's sizes are read


@pytest.mark.parametrize("spec, expected", [
    (128, Fixed(128).state_dict()),
    ("256", Fixed(256).state_dict()),
    ("max", MAX),
])
def test_spec_fixed_and_max(spec, expected):
    policy = parse_batch_size(spec)
    assert (policy if policy == MAX else policy.state_dict()) == expected


def test_spec_schedules():
    piecewise = parse_batch_size("128,256@2e,512@4e")
    assert isinstance(piecewise, Piecewise) and piecewise.sizes == [128, 256, 512]
    assert piecewise.size_at(2 * EPOCH, EPOCH) == 256 and piecewise.size_at(399, EPOCH) == 256
    assert parse_batch_size("64,128@30000").size_at(30000, EPOCH) == 128
    ramp = parse_batch_size("ramp:64,512,3e")
    assert isinstance(ramp, Ramp) and ramp.size_at(3 * EPOCH, EPOCH) == 512
    double = parse_batch_size("double:64,1e,1024")
    assert isinstance(double, Doubling) and double.size_at(2 * EPOCH, EPOCH) == 256


@pytest.mark.parametrize("spec, message", [
    ("0", "batch_size must be an integer >= 1"),
    ("big", "batch size 'big' is not valid"),
    ("128,256", "needs a start: size@duration"),
    ("128,256@2x", "2x"),
    ("ramp:64,512", "expected 3 comma-separated values"),
    ("double:64,1e,0", "batch_size must be an integer >= 1"),
    ("adaptive:guess", "rule"),
    (2.5, "batch_size must be an integer >= 1"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_batch_size(spec)


def test_auto_and_adaptive_specs():
    from batchtrain.batching.adaptive import Adaptive
    auto = parse_batch_size("auto")
    assert isinstance(auto, Adaptive) and auto.rule == "goodput" and auto.wants_gradient_stats
    assert parse_batch_size("adaptive:norm-test").rule == "norm-test"


@pytest.mark.parametrize("spec, message", [
    ("128,256@2e,512@1e", "must be positive and increasing, got 2e, 1e"),
    ("128,256@2e,512@2e", "must be positive and increasing"),
    ("128,256@0e", "must be positive and increasing"),
    ("double:64,0e,1024", "the doubling period must be longer than zero, got '0e'"),
    ("double:64,0,1024", "the doubling period must be longer than zero"),
    ("double:64,1e,32", "the cap 32 of a doubling batch size is below its start 64"),
    ("ramp:64,512,0e", "a ramp's duration must be longer than zero"),
], ids=["unordered", "repeated", "zero-switch", "zero-period", "zero-samples", "cap-below-start",
        "zero-ramp"])
def test_schedules_that_cannot_mean_anything_are_refused_naming_the_spec(spec, message):
    with pytest.raises(ConfigError, match=re.escape(f"batch size {spec!r}: ") + ".*" + re.escape(message)):
        parse_batch_size(spec)


@pytest.mark.parametrize("spec", [" MAX ", "Max", "max"])
def test_max_in_any_case_and_spacing_is_the_max_marker(spec):
    assert parse_batch_size(spec) == MAX


def test_a_policy_is_taken_as_it_is_and_case_does_not_matter_in_a_spec():
    policy = Doubling(8, "1e", 32)
    assert parse_batch_size(policy) is policy
    assert isinstance(parse_batch_size(" Double:8,1E,32 "), Doubling)
    assert isinstance(parse_batch_size("AUTO"), Adaptive)


def test_resolve_policy_turns_max_into_the_memory_ceiling():
    policy = resolve_policy(MAX, 37)
    assert isinstance(policy, Fixed) and isinstance(policy, Policy)
    assert policy.batch_size() == 37 and policy.state_dict() == {"size": 37}


def test_resolve_policy_tells_a_policy_the_ceiling_and_keeps_it():
    fixed = Fixed(300)
    assert resolve_policy(fixed, 37) is fixed and fixed.batch_size() == 300  # the user's size stands
    adaptive = Adaptive(min_batch=8, initial=16)
    assert resolve_policy(adaptive, 37) is adaptive and adaptive.limit == 37
