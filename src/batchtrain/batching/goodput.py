"""Goodput (Pollux, Qiao et al. 2021): throughput x statistical efficiency, and the candidate sizes
it is weighed at. The efficiency here is predicted from the gradient noise scale phi; the
branches (batching/branched.py) measure it instead."""
import math
from collections.abc import Callable, Iterable

from batchtrain.batching.throughput import ThroughputModel


def statistical_efficiency(batch: int, noise_scale: float, base_batch: int) -> float:
    """Progress per sample at `batch` relative to `base_batch` (Pollux: (phi + B0) / (phi + B))."""
    if math.isinf(noise_scale):
        return 1.0  # all noise: every sample counts fully at any batch
    return (noise_scale + base_batch) / (noise_scale + batch)


def goodput_choice(noise_scale: float, base_batch: int, candidates: Iterable[int],
                   samples_per_s: Callable[[int], float]) -> tuple[int, dict]:
    """The candidate with the most goodput T(B) * E(B), and {"goodput": {size: samples/s}}.

    goodput is in base-batch-equivalent samples per second; ties go to the smaller batch. B0 only
    scales every goodput by the same factor (phi + B0): it never changes the choice.
    """
    goodput = {int(size): samples_per_s(int(size)) *
               statistical_efficiency(int(size), noise_scale, base_batch)
               for size in sorted(set(candidates))}
    top = max(goodput.values())
    best = min(size for size, value in goodput.items() if value >= top * (1 - 1e-12))
    return best, {"goodput": goodput}


def calibrated_choice(seconds: dict[int, float], noise_scale: float, base_batch: int,
                      candidates: Iterable[int], physical: Callable[[int], int],
                      physical_cap: int | None) -> int | None:
    """The goodput choice among the candidates whose physical batch (physical(size)) the start-up
    passes timed (seconds: per pass, training/calibrate.py), at their throughput; None when
    none was timed."""
    model = ThroughputModel(min_micro_batches=1)  # a step of one micro-batch below the ceiling
    model.calibrate(seconds)
    timed = [size for size in candidates if physical(size) in model.calibrated]
    if not timed:
        return None
    return goodput_choice(noise_scale, base_batch, timed,
                          lambda size: model.samples_per_s(size, physical_cap))[0]


def candidate_sizes(lower: int, upper: int) -> list[int]:
    """Powers of two and the 1.5x steps between them (32, 48, 64, 96, ...), plus both bounds."""
    sizes, power = {lower, upper}, 1
    while power <= upper:
        sizes.update(size for size in (power, power * 3 // 2) if lower <= size <= upper)
        power *= 2
    return sorted(sizes)


def doublings(start: int, top: int) -> list[int]:
    """start, 2 x start, 4 x start, ... up to top (the start's calibrated and branched sizes)."""
    return [start << k for k in range(max(0, (top // start).bit_length()))]
