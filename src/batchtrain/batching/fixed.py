"""Fixed(n): the same logical batch every step."""
from batchtrain.batching.base import Policy, StepStats
from batchtrain.errors import check_batch_size


class Fixed(Policy):
    """Always `size` samples per optimizer step."""

    def __init__(self, size: int):
        check_batch_size(size)
        self.size = int(size)

    def batch_size(self) -> int:
        return self.size

    def observe(self, step: StepStats) -> None:
        pass

    def state_dict(self) -> dict:
        return {"size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])

    def __repr__(self) -> str:
        return f"Fixed({self.size})"
