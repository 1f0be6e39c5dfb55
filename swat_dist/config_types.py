"""The machinery behind the config tree: strict, frozen dataclasses built from YAML values.

A :class:`Node` dataclass coerces each field to its annotation when built (``int``, ``float``, ``str``,
``bool``, ``Literal``, ``X | None``, fixed-length ``tuple``, nested nodes, free-form ``Mapping``),
then runs its own ``_check``. Errors are :class:`ConfigError` naming the dotted key and what is allowed;
unknown keys suggest the nearest valid one. Nothing here knows our tree (that is ``config.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar, Literal, Union, cast, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A setting is unknown, mistyped or out of range; the message names the key and what is allowed."""


class FrozenDict(dict):
    """A read-only, hashable, picklable dict: the free-form mappings inside the frozen tree."""

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("config mappings are read-only; build a new config with apply_overrides()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class Node:
    """Base of the config dataclasses: coerces every field to its annotated type, then ``_check``."""

    _key: ClassVar[str] = ""  # this node's dotted place in the tree ("" for the root)

    def __post_init__(self) -> None:
        hints = _hints(cast(Any, type(self)))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = coerce(self._path(f.name), getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        pass

    def _path(self, name: str) -> str:
        return f"{self._key}.{name}" if self._key else name

    def _need(self, name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{self._path(name)} {rule} (got {getattr(self, name)!r})")

    def _range(
        self, *names: str, lo: float, hi: float = math.inf, open_lo: bool = False, open_hi: bool = False
    ) -> None:
        """Each named field (skipping None) must lie in [lo, hi], ends open where asked."""
        for name in names:
            v = getattr(self, name)
            ok = v is None or ((v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi))
            if hi == math.inf:
                rule = f"must be {'>' if open_lo else '>='} {lo:g}"
            else:
                rule = f"must be in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
            self._need(name, ok, rule)


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _is_node_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return get_type_hints(cls)


def coerce(key: str, value: Any, tp: Any, nullable: bool = False) -> Any:
    """``value`` as type ``tp`` (ints widen to float, integral floats narrow to int), or ConfigError."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(key, value, inner, nullable=True)
    null = " or null" if nullable else ""
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}{null}")
    if _is_node_type(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            check_keys(value, tp, key)
            return tp(**value)
        raise ConfigError(f"{key}: expected a mapping of {key}.* settings, got {value!r}")
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping{null}, got {value!r}")
        return freeze(key, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} numbers{null}, got {value!r}")
        return tuple(coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is float and number and math.isfinite(value):
        return float(value)
    if tp is int and number and float(value).is_integer():
        return int(value)  # YAML reads 1e4 and 5e8 as floats
    if tp in (bool, str) and isinstance(value, tp):
        return value
    quote = " (YAML read it as a number or boolean: quote it)" if tp is str and isinstance(value, (int, float)) else ""
    raise ConfigError(f"{key}: expected {_KINDS[tp]}{null}, got {value!r}{quote}")


def freeze(key: str, value: Any) -> Any:
    """Plain YAML data made read-only: mappings -> FrozenDict, lists -> tuples."""
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise ConfigError(f"{key}: keys must be strings, got {k!r}")
        return FrozenDict({k: freeze(f"{key}.{k}", v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(f"{key}[{i}]", v) for i, v in enumerate(value))
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise ConfigError(f"{key}: {value!r} is not a plain YAML value")


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists (YAML/JSON-ready)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def to_plain(node: Any) -> dict[str, Any]:
    """A node tree as plain dicts, lists and scalars, in field order."""
    out = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        out[f.name] = to_plain(v) if dataclasses.is_dataclass(v) else thaw(v)
    return out


def check_keys(raw: Mapping[str, Any], cls: type, prefix: str = "", root: type | None = None) -> None:
    """Raise on a key ``cls`` does not have, suggesting the nearest one; with ``root``, recurse and
    also suggest where else in ``root``'s tree the key lives (``batch_size`` -> ``data.batch_size``)."""
    names = [f.name for f in dataclasses.fields(cls)]
    hints = _hints(cls)
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown key '{key}' ({_suggest(str(k), prefix, names, root)})")
        if root is not None and _is_node_type(hints[k]) and isinstance(v, Mapping):
            check_keys(v, hints[k], key, root)


def _suggest(leaf: str, prefix: str, names: list[str], root: type | None) -> str:
    near = [n for n in names if n.startswith(leaf) or (leaf.startswith(n) and len(leaf) - len(n) <= 2)]
    near = near or difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if near:
        return f"did you mean '{prefix + '.' if prefix else ''}{near[0]}'?"
    paths = leaf_paths(root) if root is not None else []
    moved = [p for p in paths if p.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(leaf, paths, 1, 0.8)
    if moved:
        return f"did you mean '{moved[0]}'?"
    return f"valid keys{' under ' + prefix if prefix else ''}: {', '.join(names)}"


@cache
def leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted setting of a node tree, e.g. ``['name', ..., 'optim.lr', ...]``."""
    out: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        out += leaf_paths(hints[f.name], path) if _is_node_type(hints[f.name]) else [path]
    return out


class _Loader(yaml.SafeLoader):
    """Safe YAML, plus YAML 1.2 floats: PyYAML alone reads ``1e-3`` and ``5e8`` as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def parse_yaml(text: str) -> Any:
    """YAML -> Python values; a syntax error is a one-line ConfigError saying where."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML: {err.problem or err.context}{where}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {' '.join(str(err).split())}") from None


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key; anything else in ``over`` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
