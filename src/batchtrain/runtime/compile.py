"""torch.compile for training, off by default: it costs a compile before the first step (tens of
seconds on a CPU, README "Speed") and must win it back over the run."""
import weakref

import torch
from torch import nn

from batchtrain.errors import ConfigError

_compiled: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def compiled(network: nn.Module, enabled: bool) -> nn.Module:
    """The module training steps through: `network` itself, or (enabled) its torch.compile'd
    wrapper, which shares its parameters. The wrapper is made once per module and kept, so a
    second fit() of the same trainer does not compile again (dynamo recompiles by itself only
    when shapes or modes change)."""
    if not enabled:
        return network
    if network not in _compiled:
        check_compiler(next(network.parameters(), torch.empty(0)).device)
        _compiled[network] = torch.compile(network)
    return _compiled[network]


def check_compiler(device: torch.device) -> None:
    """Raise ConfigError when torch.compile cannot build kernels for `device`: on a CPU its
    inductor backend compiles C++, and without a compiler the first step would fail deep inside
    dynamo with a traceback of hundreds of lines."""
    if device.type != "cpu":
        return
    try:
        from torch._inductor import cpp_builder  # noqa: PLC0415 (loads inductor: when compiling)
    except ImportError:  # an older torch without this module: it reports a missing compiler itself
        return
    try:
        cpp_builder.get_cpp_compiler()
    except RuntimeError as error:  # torch._inductor.exc.InvalidCxxCompiler
        raise ConfigError(f"compile needs a C++ compiler on the CPU (torch.compile builds C++ "
                          f"kernels; {str(error)[:200]}): install one (apt-get install g++, or set "
                          f"CXX), or train without --compile") from None
