"""Spec strings: ``name`` or ``name:key=value,key=value`` -> a configured object.

Registries are dict literals mapping names to frozen dataclasses; the dataclass fields are the
valid keys and their annotations the types. Every failure is a ``ValueError`` that lists what
is valid, raised before any work is done.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Mapping

__all__ = ["parse", "build", "spec_of", "options_of"]


def parse(spec: str) -> tuple[str, dict[str, str]]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"expected a spec string like 'topk:ratio=0.01', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    opts: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"malformed option {item!r} in {spec!r}: write key=value, e.g. 'topk:k=10'")
        if key.strip() in opts:
            raise ValueError(f"option {key.strip()!r} given twice in {spec!r}")
        opts[key.strip()] = value.strip()
    return name.strip().lower(), opts


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def options_of(cls) -> list[dataclasses.Field]:
    """Fields a spec string may set (those marked ``metadata={"spec": False}``, such as a
    method's compressor, come from the caller's context instead)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_") and f.metadata.get("spec", True)]


def _convert(value: str, hint, key: str, name: str):
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        if value.lower() in ("none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        low = value.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{name}: option {key}={value!r} must be true or false")
    if hint is int:
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ValueError(f"{name}: option {key}={value!r} must be an integer") from None
    if hint is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name}: option {key}={value!r} must be a number") from None
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        for c in choices:
            if str(c) == value:
                return c
        raise ValueError(f"{name}: option {key}={value!r} must be one of {', '.join(map(str, choices))}")
    return value


def build(registry: Mapping[str, type], spec: Any, kind: str, **context):
    """Make an object from ``spec`` (a string, or an already-built object of the registry).

    ``context``: keyword arguments the caller knows (e.g. ``n_workers``) passed to classes
    that declare a field of that name, unless the spec sets it.
    """
    if not isinstance(spec, str):
        if type(spec) in registry.values():
            return spec
        raise ValueError(f"expected a {kind} spec string or object, got {spec!r}")
    name, opts = parse(spec)
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(sorted(registry))}")
    cls = registry[name]
    fields = {f.name: f for f in options_of(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in opts.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ValueError(f"{kind} {name!r} has no option {key!r}; valid options: {valid}")
        kwargs[key] = _convert(value, hints[key], key, name)
    all_fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for key, value in context.items():
        if key in all_fields and key not in kwargs and value is not None:
            kwargs[key] = value
    return cls(**kwargs)


def spec_of(obj) -> str:
    """The canonical spec string of a built object (non-default options only)."""
    name = getattr(obj, "name")
    parts = []
    for f in options_of(type(obj)):
        v = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if v != default:
            parts.append(f"{f.name}={str(v).lower() if isinstance(v, bool) else v}")
    return name + (":" + ",".join(parts) if parts else "")
