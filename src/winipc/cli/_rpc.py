r"""``winipc rpc``: serve, call and describe RPC interfaces (:mod:`winipc.rpc`) from the shell.

``serve`` stands for a server program (RpcServerRegisterIf3, RpcServerUseProtseqEp,
RpcServerListen), ``call`` for a client stub call (RpcBindingFromStringBinding, then the
procedure), ``ls`` for the endpoint mapper's contents (RpcMgmtEpEltInqBegin / ``rpcdump``)
and ``idl`` for the interface's description (what MIDL reads, as JSON).

Python code is named as ``MODULE:ATTR``: MODULE is an importable dotted name (the current
folder is searched first) or the path of a ``.py`` file (its folder is searched first, so
that it may import its neighbours); ATTR is a class in it (dots allowed for nested ones).

An interface is Python code, so ``call`` needs its declaration too: ``call BINDING
MODULE:Interface.method ARGS...`` or ``call BINDING Interface.method --module MODULE``.
The endpoint mapper knows only names and UUIDs: without the declaration ``call`` says
which interfaces the binding serves and stops (exit status 2).

Output: stdout carries what was asked for (bindings, a result, JSON); status lines go to
stderr. Failures of winipc print ``error: [WinError 1722 RPC_S_SERVER_UNAVAILABLE] ...
(ServerUnavailable)``: the Win32 code, its name, the message and the winipc class, and exit
with status 1; bad arguments (a module that does not import, an argument that does not
fit its parameter) exit with status 2 before anything is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import importlib.util
import io
import json
import math
import os
import re
import signal
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from winipc import errors as W
from winipc import rpc
from winipc._core.security import SecurityAttributes
from winipc.cli._common import Failure, note, print_json, raise_interrupt
from winipc.rpc._codec import ContextHandle, TypeSpec
from winipc.rpc._idl import InterfaceSpec, MethodSpec, ParamSpec, interfaces_of, spec_of

_ATTR_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_KEYWORD_ARG = re.compile(r"([A-Za-z_]\w*)=(.*)", re.DOTALL)
_TRUE = frozenset({"true", "1", "yes", "on", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "n"})
_NO_CONTEXT = "a context handle lives in one client's connection; the command line cannot pass one"


def describe_error(exc: W.WinIPCError) -> str:
    """``[WinError N NAME] message (Class)``: the line ``error:`` is followed by."""
    return f"{exc} ({type(exc).__name__})"


def error_json(exc: W.WinIPCError) -> dict[str, Any]:
    """A winipc error for ``--json``: class, Win32 code and name, message (and the
    server-side class of a ServerFault)."""
    out: dict[str, Any] = {
        "class": type(exc).__name__,
        "winerror": exc.winerror,
        "name": W.error_name(exc.winerror),
        "message": exc.strerror or str(exc),
    }
    if isinstance(exc, W.ServerFault):
        out["remote_type"] = exc.remote_type
    return out


class RpcGroup(click.Group):
    """``winipc rpc``: winipc errors print with their class too, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except W.WinIPCError as exc:
            raise Failure(describe_error(exc)) from None


# --------------------------------------------------------------------------- loading code


def split_target(text: str) -> tuple[str, str]:
    """``MODULE:ATTR`` -> (MODULE, ATTR); a text without ``:ATTR`` -> (text, "")."""
    module, sep, attr = text.rpartition(":")
    if sep and module and _ATTR_PATH.fullmatch(attr):
        return module, attr
    return text, ""


def _is_path(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or os.sep in ref


def import_target(ref: str, hint: str) -> ModuleType:
    """Import MODULE (a dotted name, or the path of a .py file).

    Raises:
        click.BadParameter: it does not import (the exception is named).
    """
    try:
        if _is_path(ref):
            return _import_file(Path(ref).expanduser(), hint)
        cwd = os.getcwd()
        if "" not in sys.path and cwd not in sys.path:
            sys.path.insert(0, cwd)  # as python -m does; the console script does not
        return importlib.import_module(ref)
    except click.BadParameter:
        raise
    except Exception as exc:  # the module's own code may raise anything
        raise click.BadParameter(f"cannot import {ref}: {type(exc).__name__}: {exc}", param_hint=hint) from None


def _import_file(path: Path, hint: str) -> ModuleType:
    if not path.is_file():
        raise click.BadParameter(f"{path}: no such file", param_hint=hint)
    path = path.resolve()
    name = path.stem if path.stem.isidentifier() else "_winipc_rpc_module"
    existing = sys.modules.get(name)
    if existing is not None:
        where = getattr(existing, "__file__", None)
        if where is not None and Path(where).resolve() == path:
            return existing
        name = f"_winipc_rpc_{name}"  # never shadow a module of that name that is loaded
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so that the file's own imports of its neighbours work
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"{path}: not a Python module", param_hint=hint)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _attr(module: ModuleType, path: str, hint: str) -> Any:
    obj: Any = module
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(f"{module.__name__} has no {path!r}", param_hint=hint) from None
    return obj


def _own_interfaces(module: ModuleType) -> list[InterfaceSpec]:
    """The interfaces a module declares (not those it imports)."""
    found = []
    for obj in vars(module).values():
        if isinstance(obj, type) and obj.__module__ == module.__name__:
            specs = interfaces_of(obj)
            if specs and specs[0].cls is obj:
                found.append(specs[0])
    return found


def _names(specs: Sequence[InterfaceSpec]) -> str:
    return ", ".join(s.name for s in specs) or "none"


def load_interface(target: str, hint: str) -> InterfaceSpec:
    """The interface ``MODULE:Interface`` names (or MODULE's only one, or its implementation's).

    Raises:
        click.BadParameter: the module does not import, or names no (single) interface.
    """
    ref, attr = split_target(target)
    module = import_target(ref, hint)
    if not attr:
        own = _own_interfaces(module)
        if len(own) != 1:
            raise click.BadParameter(
                f"name the interface: {ref}:NAME (interfaces declared there: {_names(own)})", param_hint=hint
            )
        return own[0]
    obj = getattr(module, attr, None) if "." not in attr else None
    if obj is None:
        # also by interface name (@interface(name=...)), which may differ from the class name
        by_name = [s for s in _own_interfaces(module) if s.name == attr]
        obj = by_name[0].cls if by_name else _attr(module, attr, hint)
    try:
        return spec_of(obj)
    except TypeError as exc:
        raise click.BadParameter(f"{ref}:{attr}: {exc}", param_hint=hint) from None


def load_impl(target: str, hint: str) -> tuple[Any, list[InterfaceSpec]]:
    """The implementation ``MODULE:Impl`` names, instantiated (no arguments), and its interfaces.

    Raises:
        click.BadParameter: the module does not import, ATTR is not an implementation, or
            its constructor fails.
    """
    ref, attr = split_target(target)
    module = import_target(ref, hint)
    if not attr:
        impls = [
            obj for obj in vars(module).values()
            if isinstance(obj, type) and obj.__module__ == module.__name__
            and interfaces_of(obj) and interfaces_of(obj)[0].cls is not obj
        ]
        if len(impls) != 1:
            found = ", ".join(c.__qualname__ for c in impls) or "none"
            raise click.BadParameter(
                f"name the implementation: {ref}:CLASS (classes there: {found})", param_hint=hint
            )
        obj: Any = impls[0]
    else:
        obj = _attr(module, attr, hint)
    specs = interfaces_of(obj)
    shown = obj.__qualname__ if isinstance(obj, type) else repr(obj)
    if not specs:
        raise click.BadParameter(f"{shown} implements no RPC interface", param_hint=hint)
    if isinstance(obj, type):
        if specs[0].cls is obj:
            raise click.BadParameter(
                f"{shown} is the interface {specs[0].name}; name the class that implements it", param_hint=hint
            )
        try:
            obj = obj()
        except Exception as exc:
            raise click.BadParameter(f"{shown}() failed: {type(exc).__name__}: {exc}", param_hint=hint) from None
    return obj, specs


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


# --------------------------------------------------------------------------- the group


def _print_table(table: Any) -> None:
    from rich.console import Console

    if sys.stdout.isatty():
        Console().print(table)
        return
    # into a pipe or a file: never cut a binding, no trailing blanks
    buf = io.StringIO()
    Console(file=buf, width=100_000, no_color=True, highlight=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@click.group("rpc", cls=RpcGroup)
def rpc_group() -> None:
    """Remote procedure calls (Windows RPC model): serve, call, list endpoints, print IDL.

    BINDING is a string binding: ncalrpc:[NAME] (this machine), ncacn_np:[\\\\pipe\\\\NAME]
    or ncacn_ip_tcp:HOST[PORT]. Code is named MODULE:ATTR, MODULE a dotted module name
    or a path/to/file.py.
    """


# --------------------------------------------------------------------------- serve


@rpc_group.command("serve")
@click.argument("target", metavar="MODULE:IMPL")
@click.option(
    "--binding",
    "-b",
    "bindings",
    multiple=True,
    metavar="BINDING",
    help="Listen on BINDING (RpcServerUseProtseqEp); repeat for several. An empty endpoint "
    "(ncalrpc:, ncacn_ip_tcp:0.0.0.0) picks one. Default: ncalrpc:.",
)
@click.option(
    "--public",
    is_flag=True,
    help="Every local user may connect and call (default: only you). TCP callers are "
    "admitted by TLS or --allow-anonymous instead.",
)
@click.option(
    "--allow-anonymous",
    is_flag=True,
    help="Admit ncacn_ip_tcp callers that present no key or client certificate.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), metavar="FILE",
              help="PEM certificate (chain) for ncacn_ip_tcp: TLS, RPC_C_AUTHN_LEVEL_PKT_PRIVACY.")
@click.option("--tls-key", type=click.Path(dir_okay=False), metavar="FILE",
              help="PEM private key of --tls-cert.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON line {"bindings", "interfaces", "pid"} instead of the bindings.')
def serve_cmd(
    target: str,
    bindings: tuple[str, ...],
    public: bool,
    allow_anonymous: bool,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
) -> None:
    """Serve the class IMPL of MODULE until Ctrl-C or SIGTERM.

    IMPL is instantiated without arguments and registered for every interface it
    implements (RpcServerRegisterIf3); the bindings are recorded in the endpoint mapper
    while it serves (see rpc ls). The bindings in use are printed on stdout, one per
    line, once clients can connect; status lines go to stderr. Stopping closes every
    connection and runs down open context handles; exit status 0.
    """
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    parsed = [rpc.StringBinding.parse(b) for b in bindings or ("ncalrpc:",)]
    tcp = any(sb.protseq == "ncacn_ip_tcp" for sb in parsed)
    if tls_cert is not None and not tcp:
        raise click.UsageError("--tls-cert applies to ncacn_ip_tcp bindings")
    if allow_anonymous and not tcp:
        raise click.UsageError("--allow-anonymous applies to ncacn_ip_tcp bindings")
    tls = None
    if tls_cert is not None and tls_key is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(
                f"cannot load {tls_cert} / {tls_key}: {exc}", param_hint="--tls-cert"
            ) from None
    impl, specs = load_impl(target, "MODULE:IMPL")
    everyone = SecurityAttributes(allow=[("everyone", "c")]) if public else None
    server = rpc.RpcServer()
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        for spec in specs:
            server.register(impl, spec.cls, security=everyone)
        used = []
        for sb in parsed:
            if sb.protseq == "ncacn_ip_tcp":
                used.append(server.listen(str(sb), tls=tls, allow_anonymous=allow_anonymous))
            else:
                used.append(server.listen(str(sb), security=everyone))
        server.start()
        ifaces = [
            {"name": s.name, "uuid": str(s.uuid), "version": f"{s.version[0]}.{s.version[1]}"} for s in specs
        ]
        if as_json:
            click.echo(json.dumps({"bindings": used, "interfaces": ifaces, "pid": os.getpid()}))
        else:
            for b in used:
                click.echo(b)
        what = ", ".join(f"{i['name']} {i['version']}" for i in ifaces)
        note(f"serving {what} on {len(used)} binding{'s' if len(used) > 1 else ''}; Ctrl-C to stop")
        server.serve_forever()
    except KeyboardInterrupt:
        note("stopping")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            signal.signal(signal.SIGTERM, old_term)


# --------------------------------------------------------------------------- call


def _resolve_method(method: str, module: str | None, binding: str) -> tuple[InterfaceSpec, MethodSpec]:
    hint = "METHOD"
    if ":" in method:
        if module is not None:
            raise click.UsageError("give the module once: MODULE:Interface.method or --module MODULE")
        module, _, method = method.rpartition(":")
    if module is None:
        raise click.UsageError(_no_declaration(method, binding))
    ref, attr = split_target(module)
    head, dot, name = method.rpartition(".")
    if attr and head and head != attr:
        attr = f"{attr}.{head}"  # --module MODULE:Outer with Inner.method
    elif not attr:
        attr = head
    if not _ATTR_PATH.fullmatch(name):
        raise click.BadParameter(f"{method!r} is not Interface.method", param_hint=hint)
    spec = load_interface(f"{ref}:{attr}" if attr else ref, "--module" if not dot and not attr else hint)
    m = spec.by_name.get(name)
    if m is None:
        raise click.BadParameter(
            f"{spec.name} has no method {name!r} (methods: {', '.join(spec.by_name) or 'none'})", param_hint=hint
        )
    return spec, m


def _no_declaration(method: str, binding: str) -> str:
    """Why a call needs the interface's declaration, and what the endpoint mapper knows."""
    served = sorted({f"{e.name} {e.version[0]}.{e.version[1]} ({e.uuid})"
                     for e in rpc.endpoint_entries() if e.binding == binding})
    where = (f"the server at {binding} serves {'; '.join(served)}" if served
             else f"the endpoint mapper has no entry for {binding}")
    return (f"{method}: the interface's declaration is Python code; give it as "
            f"MODULE:Interface.method or with --module MODULE ({where})")


@rpc_group.command("call", context_settings={"ignore_unknown_options": True})
@click.argument("binding")
@click.argument("method", metavar="[MODULE:]INTERFACE.METHOD")
@click.argument("args", nargs=-1)
@click.option(
    "--module",
    "-m",
    metavar="MODULE",
    help="Where the interface is declared: MODULE (then METHOD is Interface.method) or "
    "MODULE:Interface (then METHOD may be just the method).",
)
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON (bytes as hex, enums by name); errors as "
              '{"error": {...}} on stdout too.')
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Give up connecting, or cancel the call, after SECONDS (RPC_S_CALL_CANCELLED, "
    "exit status 1). Default: connect within 30 s, wait for the call without limit.",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="ncacn_ip_tcp over TLS (RPC_C_AUTHN_LEVEL_PKT_PRIVACY), trusting the server "
    "certificates the PEM certificate(s) in FILE sign; the host name is checked.",
)
def call_cmd(
    binding: str,
    method: str,
    args: tuple[str, ...],
    module: str | None,
    as_json: bool,
    timeout: float | None,
    tls_ca: str | None,
) -> None:
    """Call METHOD on the server at BINDING with ARGS and print the result.

    The interface's declaration is Python code: name its module, MODULE:Interface.method
    (or --module). Failures exit with status 1 and print the Win32 code, its name and
    the winipc class; bad arguments exit with status 2 before anything is sent.

    ARGS go to the parameters in declaration order; NAME=VALUE gives the parameter
    NAME. Each is read as its annotation says: numbers and bools from text (0x.. for
    hex integers; true/false), str as is, bytes from @FILE (@- for stdin), 0x and hex
    digits, or the text's UTF-8; enums by name or value; anything structured (lists,
    dicts, tuples, dataclasses as objects, Any) as JSON, or JSON read from @FILE;
    null for an Optional's None.

    A BINDING without endpoint (ncalrpc:, ncacn_ip_tcp:HOST) is completed through the
    endpoint mapper of its host (RpcEpResolveBinding). The result is printed readably (text, numbers, bytes as text
    or hex, the rest as JSON), or with --json as JSON; a method returning None prints
    nothing (--json: null).
    """
    spec, m = _resolve_method(method, module, binding)
    pos, kw = parse_call_args(m, args)
    tls = None
    if tls_ca is not None:
        try:
            tls = ssl.create_default_context(cafile=tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise click.BadParameter(f"cannot load {tls_ca}: {exc}", param_hint="--tls-ca") from None
    try:
        sb = rpc.StringBinding.parse(binding)
        opts: dict[str, Any] = {"timeout": timeout, "connect_timeout": timeout if timeout is not None else 30.0}
        if tls is not None:
            opts["tls"] = tls
        if not sb.endpoint:  # a partial binding: the endpoint mapper (of its host) completes it
            handle = rpc.bind_interface(spec.cls, host=None if sb.is_local else sb.network_address,
                                        protseq=sb.protseq, **opts)
        else:
            handle = rpc.bind(binding, **opts)
        with _sigterm_as_interrupt(), handle:
            result = getattr(handle.client(spec.cls), m.name)(*pos, **kw)
    except W.WinIPCError as exc:
        if as_json:
            print_json({"error": error_json(exc)})
        raise Failure(describe_error(exc)) from None
    if as_json:
        print_json(to_json(result))
    elif not (result is None and m.result.kind == "none"):
        sys.stdout.buffer.write(readable(result).encode("utf-8", "backslashreplace") + b"\n")
        sys.stdout.buffer.flush()


# --------------------------------------------------------------------------- ls


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


@rpc_group.command("ls")
@click.option("--host", metavar="HOST",
              help="Ask HOST's network endpoint mapper (TCP port $WINIPC_RPC_EPM_PORT, 10135 by default) "
              "for the TCP bindings reachable from here.")
@click.option("--json", "as_json", is_flag=True,
              help="One object per entry: interface, uuid, version, binding, pid, uid, user, annotation "
              "(with --host: interface, uuid, version, binding, annotation).")
def ls_cmd(host: str | None, as_json: bool) -> None:
    """List the endpoint mapper: every interface a live server on this machine serves,
    on which binding, in which process, run by which user (RpcMgmtEpEltInqBegin).

    Entries disappear with their server, also when it is killed. With --host, the
    interfaces and TCP bindings that HOST's servers offer to this machine.
    """
    if host is not None:
        _ls_remote(host, as_json)
        return
    entries = sorted(rpc.endpoint_entries(), key=lambda e: (e.name, e.uuid, e.version, e.pid, e.binding))
    if as_json:
        print_json([{**e.to_json(), "user": _user(e.uid)} for e in entries])
        return
    if not entries:
        note("no endpoints registered")
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("INTERFACE", "VERSION", "UUID", "BINDING", "PID", "USER"):
        table.add_column(col, overflow="fold", justify="right" if col == "PID" else "left")
    for e in entries:
        table.add_row(Text(e.name), f"{e.version[0]}.{e.version[1]}", e.uuid, Text(e.binding), str(e.pid),
                      Text(_user(e.uid)))
    _print_table(table)


def _ls_remote(host: str, as_json: bool) -> None:
    from winipc.rpc import _mapper

    try:
        rows = sorted(_mapper.remote_entries(host), key=lambda r: (r["interface"], r["uuid"], r["version"],
                                                                   r["binding"]))
    except W.WinIPCError as exc:
        raise Failure(describe_error(exc)) from None
    if as_json:
        print_json(rows)
        return
    if not rows:
        note(f"no endpoints registered on {host} for this machine")
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("INTERFACE", "VERSION", "UUID", "BINDING"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(Text(r["interface"]), r["version"], r["uuid"], Text(r["binding"]))
    _print_table(table)


# --------------------------------------------------------------------------- idl


@rpc_group.command("idl")
@click.argument("target", metavar="MODULE[:INTERFACE]")
@click.option("--indent", type=click.IntRange(0, 16), default=2, show_default=True, metavar="N",
              help="Spaces per level; 0 prints one line.")
def idl_cmd(target: str, indent: int) -> None:
    """Print the interface as language-neutral JSON, from which clients in other
    languages can be built (what a MIDL .idl file says: uuid, version, methods with
    their opnums, parameter and result types, structs and enums).

    INTERFACE may be the implementing class too; without it, MODULE must declare
    exactly one interface.
    """
    spec = load_interface(target, "MODULE[:INTERFACE]")
    click.echo(json.dumps(spec.to_idl(), indent=indent or None, ensure_ascii=False))
