"""Options files read as untrusted text: bounded in size, UTF-8, YAML without aliases, no key
given twice. Used for --config files and for the config.yaml of a run directory."""
import json
import tomllib
from pathlib import Path
from typing import Any

import yaml

from batchtrain.errors import ConfigError
from batchtrain.checkpointing.fileio import UnreadableFile, read_small_file

MAX_CONFIG_BYTES = 1 << 20  # an options file (or a run's config.yaml) is a few hundred bytes
MAX_QUOTED_CHARS = 200  # of a value quoted in a message: a message quotes input, never all of it
SCALAR_KEYS = (str, int, float, bool)


def quoted(value: Any) -> str:
    """repr(value), cut to MAX_QUOTED_CHARS."""
    text = repr(value)
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return f"{text[:MAX_QUOTED_CHARS]}... ({len(text)} characters)"


def read_options_text(path: Path, label: str, fix: str | None = None) -> str:
    """The UTF-8 text of an options file, at most MAX_CONFIG_BYTES (/dev/zero is refused, not read).
    fix: the remedy named in every message (default: one per problem)."""
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)
    except UnreadableFile as refused:
        remedy = fix or "an options file is a .yaml, .toml or .json file of a few lines"
        raise ConfigError(f"{label} {refused}; {remedy}") from None
    except OSError as error:
        raise ConfigError(f"cannot read {label}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is dropped
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label} is not UTF-8 text (byte {error.start}); "
                          f"{fix or 'save it as UTF-8'}") from None


def parse_options(text: str, suffix: str, label: str, fix: str | None = None) -> Any:
    """The parsed options text: TOML, JSON, or YAML without aliases; a key given twice is refused."""
    try:
        if suffix == ".toml":
            return tomllib.loads(text)  # refuses a key given twice itself
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        return yaml.load(text, Loader=OptionsLoader)
    except _Refused as refused:
        raise ConfigError(f"{label} {refused}; {fix or refused.fix}") from None
    except (ValueError, yaml.YAMLError) as error:  # JSON's and TOML's errors are ValueErrors
        detail = " ".join(str(error).split())[:MAX_QUOTED_CHARS]
        raise ConfigError(f"{label} is malformed: {detail}" + (f"; {fix}" if fix else "")) from None
    except RecursionError:
        raise ConfigError(f"{label} is nested too deeply; "
                          f"{fix or 'an option is one value or a list'}") from None


class _Refused(Exception):
    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.fix = fix


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _Refused(f"sets {quoted(key)} twice", "keep one")
    return dict(pairs)


class OptionsLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing aliases and anchors (a 328-byte "billion laughs" file of
    nested aliases expands to gigabytes) and a key given twice (YAML would keep the last)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"uses a YAML anchor or alias ({quoted(event.anchor)}, line "
                           f"{event.start_mark.line + 1})", "write each value out instead")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, SCALAR_KEYS) and key in seen:
                raise _Refused(f"sets {quoted(key)} twice (line {key_node.start_mark.line + 1})",
                               "keep one")
            if isinstance(key, SCALAR_KEYS):  # others are unhashable: SafeLoader refuses them
                seen.add(key)
        return super().construct_mapping(node, deep)
