"""Values of ``winipc rpc call`` in and out: command-line text and JSON to the values a
method's annotations want, and results back to text or JSON.

The rules (which text each annotation takes, how results print) are in docs/cli.md,
"winipc rpc"; :func:`parse_call_args` applies them to a call's ARGS and checks the
result with the codec before anything is sent (RPC_X_BAD_STUB_DATA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from winipc import errors as W
from winipc.rpc._codec import ContextHandle, TypeSpec
from winipc.rpc._idl import MethodSpec, ParamSpec

_KEYWORD_ARG = re.compile(r"([A-Za-z_]\w*)=(.*)", re.DOTALL)
_TRUE = frozenset({"true", "1", "yes", "on", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "n"})
_NO_CONTEXT = "a context handle lives in one client's connection; the command line cannot pass one"


# --------------------------------------------------------------------------- arguments in


class ArgError(Exception):
    """An argument that does not fit its parameter: where (``s.points[0].x``) and why."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_file(name: str, where: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).expanduser().read_bytes()
    except OSError as exc:
        raise ArgError(where, f"cannot read {name}: {exc.strerror or exc}") from None


def _hex(text: str, where: str) -> bytes:
    try:
        return bytes.fromhex(text[2:].replace("_", " "))
    except ValueError:
        raise ArgError(where, f"{_short(text)} is not hex digits after 0x") from None


def bytes_from_text(text: str, where: str) -> bytes:
    """A bytes argument: ``@FILE`` (``@-``: stdin), ``0x`` and hex digits, else the text's UTF-8."""
    if text.startswith("@"):
        return _read_file(text[1:], where)
    if text[:2].lower() == "0x":
        return _hex(text, where)
    return text.encode("utf-8", "surrogateescape")  # argv's own bytes


def _enum_member(cls: type[enum.Enum], value: Any, where: str) -> enum.Enum:
    if isinstance(value, str):
        name = value.removeprefix(cls.__name__ + ".")
        member = cls.__members__.get(name)
        if member is not None:
            return member
    try:
        return cls(value)
    except ValueError:
        pass
    if isinstance(value, str):  # an int-valued enum given its value as text
        with contextlib.suppress(ValueError):
            return cls(int(value, 0))
    names = ", ".join(cls.__members__)
    raise ArgError(where, f"{_short(value)} is not a member of {cls.__qualname__} ({names})")


def value_from_text(spec: TypeSpec, text: str, where: str) -> Any:
    """A command-line argument as the value its annotation wants.

    Scalars are read from the text; bytes as :func:`bytes_from_text`; enums by member name
    or value; everything structured (lists, tuples, dicts, dataclasses, arrays, ``Any``)
    as JSON, from the text or, with ``@FILE``, from a file; ``null`` is None for an
    Optional.

    Raises:
        ArgError: the text does not fit.
    """
    kind = spec.kind
    if kind == "str":
        return text
    if kind == "bytes":
        return bytes_from_text(text, where)
    if kind == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ArgError(where, f"{_short(text)} is not a bool (true/false, yes/no, 1/0)")
    if kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            try:
                return int(text)  # "007"
            except ValueError:
                raise ArgError(where, f"{_short(text)} is not an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ArgError(where, f"{_short(text)} is not a number") from None
    if kind == "none":
        if text.strip().lower() in ("", "null", "none"):
            return None
        raise ArgError(where, f"{_short(text)}: this parameter takes only null")
    if kind == "optional":
        if text.strip() == "null":
            return None
        return value_from_text(spec.items[0], text, where)
    if kind == "enum":
        assert spec.cls is not None
        return _enum_member(spec.cls, text.strip(), where)
    if kind == "context_handle":
        raise ArgError(where, _NO_CONTEXT)
    raw = _read_file(text[1:], where).decode("utf-8", "replace") if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except ValueError as exc:
        if kind == "any":
            return text
        raise ArgError(where, f"not JSON ({exc})") from None
    return value_from_json(spec, value, where)


def _key_from_text(spec: TypeSpec, key: str, where: str) -> Any:
    if spec.kind == "enum":
        assert spec.cls is not None
        return _enum_member(spec.cls, key, where)
    if spec.kind == "bytes":  # as bytes inside JSON are (a key never names a file)
        return _hex(key, where) if key[:2].lower() == "0x" else key.encode("utf-8", "surrogateescape")
    return value_from_text(spec, key, where)


def value_from_json(spec: TypeSpec, value: Any, where: str) -> Any:
    """A JSON value as the value an annotation wants (dataclasses from objects, enums by
    name or value, bytes from ``"0x..."`` hex, other strings' UTF-8, or lists of 0..255).

    Raises:
        ArgError: it does not fit, naming the path inside the value.
    """
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "optional":
        return None if value is None else value_from_json(spec.items[0], value, where)
    if kind == "none":
        if value is None:
            return None
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "bytes":
        if isinstance(value, str):
            return _hex(value, where) if value[:2].lower() == "0x" else value.encode("utf-8", "surrogateescape")
        if isinstance(value, list) and all(type(b) is int and 0 <= b <= 255 for b in value):
            return bytes(value)
    elif kind == "enum":
        assert spec.cls is not None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return _enum_member(spec.cls, value, where)
    elif kind == "list" or (kind == "tuple" and spec.variadic):
        if isinstance(value, list):
            items = [value_from_json(spec.items[0], x, f"{where}[{i}]") for i, x in enumerate(value)]
            return tuple(items) if kind == "tuple" else items
    elif kind == "tuple":
        if isinstance(value, list):
            if len(value) != len(spec.items):
                raise ArgError(where, f"expected an array of {len(spec.items)} items, got {len(value)}")
            pairs = enumerate(zip(spec.items, value, strict=True))
            return tuple(value_from_json(t, x, f"{where}[{i}]") for i, (t, x) in pairs)
    elif kind == "map":
        if isinstance(value, dict):
            kspec, vspec = spec.items
            return {
                _key_from_text(kspec, k, f"{where} key {k!r}"): value_from_json(vspec, v, f"{where}[{k!r}]")
                for k, v in value.items()
            }
    elif kind == "struct":
        if isinstance(value, dict):
            return _struct_from_json(spec, value, where)
    elif kind == "ndarray":
        return _ndarray_from_json(value, where)
    elif kind == "context_handle":
        raise ArgError(where, _NO_CONTEXT)
    raise ArgError(where, f"expected {_json_kind(spec)}, got {_short(value)}")


def _json_kind(spec: TypeSpec) -> str:
    kind = spec.kind
    if kind in ("list", "tuple"):
        return "a JSON array"
    if kind in ("map", "struct"):
        name = f" ({spec.cls.__qualname__})" if spec.cls is not None else ""
        return f"a JSON object{name}"
    if kind == "enum" and spec.cls is not None:
        return f"a member of {spec.cls.__qualname__} (name or value)"
    if kind == "bytes":
        return "bytes (a string: 0x and hex, or text; or an array of 0..255)"
    return {"none": "null", "int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)


def _struct_from_json(spec: TypeSpec, value: dict[str, Any], where: str) -> Any:
    assert spec.cls is not None
    fields = {f.name: f for f in spec.fields}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ArgError(where, f"{spec.cls.__qualname__} has no field {', '.join(map(repr, unknown))} "
                              f"(fields: {', '.join(fields)})")
    missing = [f.name for f in spec.fields if f.required and f.name not in value]
    if missing:
        raise ArgError(where, f"{spec.cls.__qualname__} needs field {', '.join(map(repr, missing))}")
    kwargs = {k: value_from_json(fields[k].type, v, f"{where}.{k}") for k, v in value.items()}
    try:
        return spec.cls(**kwargs)
    except Exception as exc:  # a __post_init__ that validates
        raise ArgError(where, f"{spec.cls.__qualname__}(...) refused it: {type(exc).__name__}: {exc}") from None


def _ndarray_from_json(value: Any, where: str) -> Any:
    import numpy as np

    dtype = None
    if isinstance(value, dict) and "data" in value:  # what --json prints for an array
        dtype, value = value.get("dtype"), value["data"]
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ArgError(where, f"not an array: {exc}") from None


def parse_call_args(m: MethodSpec, args: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """ARGS for method ``m``: positional ones in declaration order, ``NAME=VALUE`` for a
    parameter called NAME (keyword-only parameters, or to skip ones that have defaults).

    Raises:
        click.UsageError: too many arguments, or one that does not fit (named).
    """
    by_name = {p.name: p for p in m.params}
    positional_params = [p for p in m.params if not p.kw_only]
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for text in args:
        km = _KEYWORD_ARG.fullmatch(text)
        param: ParamSpec
        if km is not None and km.group(1) in by_name:
            param, text = by_name[km.group(1)], km.group(2)
            if param.name in kw:
                raise click.UsageError(f"{m.name}: {param.name}= given twice")
        elif kw:
            raise click.UsageError(f"{m.name}: a positional argument ({_short(text)}) after NAME=VALUE ones")
        elif len(pos) >= len(positional_params):
            raise click.UsageError(
                f"{m.name} takes {len(positional_params)} positional argument(s) "
                f"({', '.join(p.name for p in positional_params) or 'none'}); got more"
            )
        else:
            param = positional_params[len(pos)]
        try:
            value = value_from_text(param.type, text, param.name)
        except ArgError as exc:
            raise click.UsageError(f"{m.name}: argument {exc}") from None
        if km is not None and km.group(1) in by_name:
            kw[param.name] = value
        else:
            pos.append(value)
    try:
        m.encode_args(m.bind_args(tuple(pos), kw))  # the codec's own check, before connecting
    except W.BadStubData as exc:
        raise click.UsageError(exc.strerror or str(exc)) from None
    return pos, kw


# --------------------------------------------------------------------------- results out


def to_json(value: Any) -> Any:
    """A result as JSON: enums by member name, bytes as hex (no 0x), dataclasses as objects,
    tuples as arrays, arrays as ``{"dtype", "shape", "data"}``, context handles as
    ``{"context_handle": hex}``; map keys become strings."""
    if isinstance(value, enum.Enum):
        return value.name if value.name is not None else to_json(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # "nan", "inf": JSON has none
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_key_text(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, ContextHandle):
        return {"context_handle": value.uuid.hex()}
    if isinstance(value, complex):
        return [to_json(value.real), to_json(value.imag)]
    dtype, shape, tolist = (getattr(value, a, None) for a in ("dtype", "shape", "tolist"))
    if dtype is not None and shape is not None and callable(tolist):
        return {"dtype": str(getattr(dtype, "str", dtype)), "shape": list(shape), "data": to_json(tolist())}
    return repr(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    out = to_json(key)
    return out if isinstance(out, str) else json.dumps(out)


def _printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\t\n" for ch in text)


def readable(value: Any) -> str:
    """A result for people: text and numbers as themselves, bytes as text when UTF-8 and
    printable (else ``hex: ..``), enums by name, the rest as indented JSON."""
    if isinstance(value, enum.Enum):
        return str(to_json(value))
    if isinstance(value, str):
        return value if _printable(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return text if text is not None and _printable(text) else "hex: " + data.hex(" ")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(to_json(value), indent=2, ensure_ascii=False)
