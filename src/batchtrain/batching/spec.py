"""From what a user writes (128, "max", "128,256@2e", "double:64,1e,1024", a policy) to a policy.

Grammar of a batch-size spec (the CLI's --batch-size, or fit(batch_size="...")):
  128                      Fixed(128)
  max                      Fixed(memory ceiling): the largest physical batch that fits
  128,256@2e,512@4e        Piecewise: 128, from epoch 2 on 256, from epoch 4 on 512
                           (a duration is epochs with "e", samples otherwise: 256@60000)
  ramp:64,512,3e           Ramp: linear from 64 to 512 over 3 epochs, then 512
  double:64,1e,1024        Doubling: 64, doubled every epoch, at most 1024
  auto                     Adaptive(rule="goodput"): from branches at nearby sizes (the noise
                           scale under DDP) and throughput, capped by the memory ceiling
  adaptive:noise-scale     Adaptive(rule="noise-scale"); also adaptive:norm-test, adaptive:goodput
"""
from batchtrain.batching.adaptive import Adaptive
from batchtrain.batching.base import BatchSizePolicy, Policy, declared
from batchtrain.batching.fixed import Fixed
from batchtrain.batching.schedule import Doubling, Piecewise, Ramp
from batchtrain.errors import ConfigError
from batchtrain.durations import Duration, to_samples

FORMS = ("an integer, max, auto, adaptive:noise-scale, adaptive:norm-test, 128,256@2e,512@4e, "
         "ramp:64,512,3e or double:64,1e,1024")
MAX = "max"


def parse_batch_size(spec: int | str | BatchSizePolicy) -> BatchSizePolicy | str:
    """A policy, or MAX (resolved once the memory ceiling is known)."""
    if isinstance(spec, BatchSizePolicy):
        return spec
    if not isinstance(spec, str):
        return Fixed(spec)  # Fixed checks it is an integer >= 1
    text = spec.strip().lower()
    try:
        if text == MAX:
            return MAX
        if text == "auto":
            return Adaptive(rule="goodput")
        if text.startswith("adaptive:"):
            return Adaptive(rule=text.split(":", 1)[1])
        if text.startswith("ramp:"):
            start, end, duration = _fields(text, 3)
            return Ramp(int(start), int(end), _duration(duration))
        if text.startswith("double:"):
            start, every, cap = _fields(text, 3)
            return Doubling(int(start), _duration(every), int(cap))
        if "," in text or "@" in text:
            return _piecewise(text)
        return Fixed(int(text))
    except ConfigError as error:  # a policy refused its values: name the spec they came from
        raise ConfigError(f"batch size {spec!r}: {error}") from None
    except ValueError as error:  # int("abc") and the like
        raise ConfigError(f"batch size {spec!r} is not valid ({error}); give {FORMS}") from None


def _fields(text: str, count: int) -> list[str]:
    fields = text.split(":", 1)[1].split(",")
    if len(fields) != count:
        raise ValueError(f"expected {count} comma-separated values after ':'")
    return fields


def _piecewise(text: str) -> Piecewise:
    parts = text.split(",")
    sizes, boundaries = [int(parts[0])], []
    for part in parts[1:]:
        size, _, when = part.partition("@")
        if not when:
            raise ValueError(f"{part!r} needs a start: size@duration")
        sizes.append(int(size))
        boundaries.append(_duration(when))
    return Piecewise(sizes, boundaries)


def _duration(text: str) -> Duration:
    to_samples(text, 1)  # raises ConfigError for a malformed duration
    return text


def resolve_policy(spec: BatchSizePolicy | str, memory_ceiling: int) -> Policy:
    """The policy for a run, its optional capabilities declared: MAX becomes
    Fixed(memory_ceiling); any other is told the memory ceiling (Policy.set_limit)."""
    if spec == MAX:
        return Fixed(memory_ceiling)
    policy = declared(spec)
    policy.set_limit(memory_ceiling)
    return policy
