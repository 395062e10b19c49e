"""Strict conversion between plain dicts (YAML / JSON) and frozen config dataclasses.

Unknown keys and wrong types are errors that name the key path and the source file; nothing is
silently ignored. No torch import here, so the CLI can parse configs before loading torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from genie_core.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str, source: str) -> Any:
    """Convert a plain value to type ``tp`` (strictly), raising ConfigError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, where, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{source}: '{where}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = ", ".join(repr(a) for a in get_args(tp))
        raise ConfigError(f"{source}: '{where}' must be one of {choices}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        hook = getattr(tp, "from_raw", None)
        if hook is not None:
            return hook(value, where, source)
        return from_dict(tp, value, source=source, prefix=where)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{source}: '{where}' must have {len(args)} items, got {value!r}")
        return tuple(convert(v, a, f"{where}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{where}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{where}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: '{where}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: '{where}' must be a string, got {value!r}")
    raise ConfigError(f"{source}: '{where}' has unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: Any, *, source: str = "<config>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError.

    Missing keys take the dataclass defaults. Cross-field checks run in ``__post_init__``; a
    ValueError raised there becomes a ConfigError naming the section.
    """
    where = prefix or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{path}'")
        kwargs[key] = convert(value, hints[key], path, source)
    try:
        return cls(**kwargs)
    except ConfigError:  # already names its key (a ValueError too: not to be wrapped again)
        raise
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{source}: '{where}': {err}") from None
    except ValueError as err:
        raise ConfigError(f"{source}: '{where}': {err}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass tree to plain JSON/YAML types (tuples become lists); inverse of from_dict."""
    hook = getattr(obj, "to_raw", None)
    if hook is not None and dataclasses.is_dataclass(obj):
        return hook()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj
