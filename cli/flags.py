"""Command-line flags built from the option dataclasses (:mod:`lineguard.training.options`): one flag per
field, its help and its default taken from the field, so each setting has one default, one help text and
one meaning. Nested option dataclasses (a fit's ``train``) are flattened into the same flags.

Field types and their flags:

====================================  =========================================================
``bool``                               ``--name`` / ``--no-name``
``int``, ``float``, ``str``, ``Path``  ``--name VALUE``
``Literal[...]``                       ``--name {choice,...}``
``tuple[str, ...]``, ``list[int]``     ``--name a,b,c``
``dict[str, float]``                   ``--name high=0.9,low=0.6`` (repeatable)
``dict[str, list[str]]``               ``--name NEW=a,b`` (repeatable)
``dict[str, Any]``                     ``--name KEY=VALUE`` (repeatable; VALUE read as JSON when it parses)
====================================  =========================================================

A flag that is not given leaves the field's default; ``defaults`` overrides a default (the environment's
``LINEGUARD_DEVICE``, say) without touching the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from lineguard.errors import ConfigError

T = TypeVar("T")


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _optional(kind: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (itself, False)."""
    if get_origin(kind) in (Union, types.UnionType):
        rest = [a for a in get_args(kind) if a is not type(None)]
        if len(rest) == 1 and len(get_args(kind)) == 2:
            return rest[0], True
    return kind, False


def _number(cast: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return cast(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    return parse


def _items(cast: Callable[[str], Any], what: str, into: type = list) -> Callable[[str], Any]:
    """``a,b,c`` -> ``into([cast(a), cast(b), cast(c)])`` (a list, or a tuple for a tuple field)."""
    one = _number(cast, what)

    def parse(text: str) -> Any:
        return into(one(part) for part in text.split(",") if part.strip())

    return parse


def _pairs(value_of: Callable[[str], Any], example: str) -> Callable[[str], list[tuple[str, Any]]]:
    """``k=v`` (or ``k=v,k2=v2`` for scalar values) -> ``[(k, value_of(v)), ...]``."""

    def parse(text: str) -> list[tuple[str, Any]]:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}")
        try:
            return [(key.strip(), value_of(raw))]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}: {err}") from None

    return parse


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def float_pairs(text: str) -> list[tuple[str, float]]:
    out = []
    for part in (p for p in text.split(",") if p.strip()):
        name, sep, raw = part.partition("=")
        try:
            out.append((name.strip(), float(raw)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected LEVEL=NUMBER pairs such as high=0.9,low=0.6, got {part!r}")
    return out


def _spec(kind: Any) -> dict[str, Any]:
    """The argparse settings of a field type (see the module's table)."""
    kind, _ = _optional(kind)
    origin, args = get_origin(kind), get_args(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind is int:
        return {"type": _number(int, "a whole number"), "metavar": "N"}
    if kind is float:
        return {"type": _number(float, "a number"), "metavar": "X"}
    if kind is str:
        return {"metavar": "TEXT"}
    if kind is Path:
        return {"type": Path, "metavar": "PATH"}
    if origin is Literal:
        return {"choices": list(args)}
    if origin in (tuple, list):
        item = args[0]
        cast, what = (int, "whole numbers") if item is int else (float, "numbers") if item is float else (str, "names")
        return {"type": _items(cast, what, origin), "metavar": "A,B,..."}
    if origin is dict and args[1] is float:
        return {"type": float_pairs, "action": "append", "metavar": "NAME=X,..."}
    if origin is dict and get_origin(args[1]) is list:
        return {"type": _pairs(_items(str, "names"), "NEW=A,B"), "action": "append", "metavar": "NEW=A,B"}
    if origin is dict:
        return {"type": _pairs(_json_or_text, "KEY=VALUE"), "action": "append", "metavar": "KEY=VALUE"}
    raise TypeError(f"no flag for option type {kind!r}")  # a new option type: add it to the table above


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _flag(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("flag") or "--" + field.name.replace("_", "-"))


def _default_text(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    defaults: Mapping[str, Any] | None = None,
    prefix: str = "",
) -> None:
    """One flag per field of the dataclass ``cls`` (and of the dataclasses nested in it)."""
    defaults = defaults or {}
    for field, kind in _fields(cls):
        if not field.metadata.get("cli", True):
            continue
        inner, _ = _optional(kind)
        if dataclasses.is_dataclass(inner):
            add_options(parser, inner, defaults, f"{prefix}{field.name}.")  # type: ignore[arg-type]
            continue
        default = defaults.get(field.name, _field_default(field))
        text = str(field.metadata.get("help", "")).replace("%", "%%")
        extra = (
            "" if isinstance(default, bool) and _spec(kind).get("action") else f" (default: {_default_text(default)})"
        )
        parser.add_argument(
            _flag(field), dest=prefix + field.name, default=argparse.SUPPRESS, help=text + extra, **_spec(kind)
        )


def build(cls: type[T], args: argparse.Namespace, defaults: Mapping[str, Any] | None = None, prefix: str = "") -> T:
    """An instance of ``cls`` from the parsed flags: the fields given on the command line, ``defaults`` for
    those that were not (and the dataclass's own defaults for the rest)."""
    given = vars(args)
    values: dict[str, Any] = {}
    for field, kind in _fields(cls):
        inner, _ = _optional(kind)
        if dataclasses.is_dataclass(inner) and field.metadata.get("cli", True):
            values[field.name] = build(inner, args, defaults, f"{prefix}{field.name}.")  # type: ignore[arg-type]
            continue
        name = prefix + field.name
        if name in given:
            value = given[name]
            if isinstance(value, list) and value and isinstance(value[0], list):  # repeated pairs
                merged: dict[str, Any] = {}
                for pairs in value:
                    for key, item in pairs:
                        if isinstance(item, list) and isinstance(merged.get(key), list):
                            merged[key] += item
                        else:
                            merged[key] = item
                value = merged
            values[field.name] = value
        elif defaults and field.name in defaults and defaults[field.name] is not None:
            values[field.name] = defaults[field.name]
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"bad options for {cls.__name__}: {err}") from err
