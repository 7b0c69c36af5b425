"""torch.compile for training, off by default: it costs a compile before the first step (tens of
seconds on a CPU, README "Speed") and must win it back over the run."""
import weakref

from torch import nn

_compiled: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def compiled(network: nn.Module, enabled: bool) -> nn.Module:
    """The module training steps through: `network` itself, or (enabled) its torch.compile'd
    wrapper, which shares its parameters. The wrapper is made once per module and kept, so a
    second fit() of the same trainer does not compile again (dynamo recompiles by itself only
    when shapes or modes change)."""
    if not enabled:
        return network
    if network not in _compiled:
        import torch  # noqa: PLC0415 (torch._dynamo loads only when compiling)

        _compiled[network] = torch.compile(network)
    return _compiled[network]
