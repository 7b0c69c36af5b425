"""Batch-size decisions from the gradient noise scale phi (Adaptive's "noise-scale" and
"norm-test", and "goodput" under DDP, where branches would run on each rank's own clock).

Each decision acts on a robust estimate, the median of the last ROBUST_WINDOW estimates seen at
decisions (one wild estimate moves nothing), and moves the batch by at most MAX_STEP (2x), or
LOW_CONFIDENCE_STEP (1.5x) below the policy's min_confidence: an estimate that never becomes
confident still moves the batch, in small steps, rather than freezing it. Against flapping the
size changes only by more than `margin` (which holds it while phi wanders within +-9 % for the
default 0.2: 2e / (1 - e)) and, under "goodput", for more than MIN_GOODPUT_GAIN (adjacent
candidates' goodputs differ by a few %). Adaptive paces the decisions (update_every).
"""
import statistics

ROBUST_WINDOW = 5  # decisions act on the median of this many latest estimates
MAX_STEP, LOW_CONFIDENCE_STEP = 2.0, 1.5  # the most a decision multiplies or divides the batch by
MIN_GOODPUT_GAIN = 0.05  # a move must promise 5 % more goodput (adjacent sizes differ by ~4 %)


def rule_size(rule: str, phi: float, noise_multiplier: float, theta: float) -> float:
    """The batch the clock-free rules ask for at noise scale phi: noise_multiplier x phi
    ("noise-scale", McCandlish et al. 2018), or phi / theta^2 ("norm-test": the smallest batch whose
    gradient error is at most theta times the gradient's norm; Byrd et al. 2012)."""
    return noise_multiplier * phi if rule == "noise-scale" else phi / theta ** 2


class NoiseDecisions:
    """The robust estimate, the step bound and the margin of noise decisions (module
    docstring); its state is the latest estimates."""

    def __init__(self, margin: float, min_confidence: float):
        self.margin, self.min_confidence = margin, min_confidence
        self.reset()

    def reset(self) -> None:
        """A new run: no estimates yet."""
        self.recent_phi: list[float] = []  # the estimates of the last ROBUST_WINDOW decisions

    def robust(self, phi: float) -> float:
        """The median of the latest estimates, phi among them."""
        self.recent_phi = [*self.recent_phi, phi][-ROBUST_WINDOW:]
        return statistics.median(self.recent_phi)

    def step(self, confidence: float) -> float:
        """The most this decision may multiply or divide the batch by."""
        return MAX_STEP if confidence >= self.min_confidence else LOW_CONFIDENCE_STEP

    def worth_moving(self, current: int, target: int, details: dict) -> tuple[bool, str]:
        """Whether to move from current to target, and why (details: the rule's, with "goodput"
        per size where it weighed goodput, "exploring" where it times a second size)."""
        if abs(target - current) <= self.margin * current:
            return False, "within margin"
        goodput = details.get("goodput")
        if goodput and goodput[target] <= (1 + MIN_GOODPUT_GAIN) * goodput[current]:
            return False, "gain too small"
        return True, "exploring" if details.get("exploring") else "changed"

    def state_dict(self) -> dict:
        return {"recent_phi": list(self.recent_phi)}

    def load_state_dict(self, state: dict) -> None:
        self.recent_phi = [float(phi) for phi in state.get("recent_phi", [])]  # absent: older runs
