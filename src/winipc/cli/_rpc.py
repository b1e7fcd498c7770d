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
import importlib
import importlib.util
import io
import json
import os
import re
import signal
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import click

from winipc import errors as W
from winipc import rpc
from winipc._core.security import SecurityAttributes
from winipc.cli._common import Failure, note, print_json, raise_interrupt
from winipc.cli._rpc_values import bytes_from_text as bytes_from_text  # re-exported: moved there
from winipc.cli._rpc_values import parse_call_args, readable, to_json
from winipc.cli._rpc_values import value_from_text as value_from_text  # re-exported: moved there
from winipc.cli._tls import CA, CERT, KEY, TlsFiles, pipe_port_status, tls_options
from winipc.rpc._idl import InterfaceSpec, MethodSpec, interfaces_of, spec_of

_ATTR_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


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
@tls_options("server", "TLS on ncacn_ip_tcp (RPC_C_AUTHN_LEVEL_PKT_PRIVACY); with --tls-ca, "
             "ncacn_np bindings take clients from other machines too.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON line {"bindings", "interfaces", "pid"} instead of the bindings.')
def serve_cmd(
    target: str,
    bindings: tuple[str, ...],
    public: bool,
    allow_anonymous: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    as_json: bool,
) -> None:
    """Serve the class IMPL of MODULE until Ctrl-C or SIGTERM.

    IMPL is instantiated without arguments and registered for every interface it
    implements (RpcServerRegisterIf3); the bindings are recorded in the endpoint mapper
    while it serves (see rpc ls). The bindings in use are printed on stdout, one per
    line, once clients can connect; status lines go to stderr. Stopping closes every
    connection and runs down open context handles; exit status 0.

    --tls-cert and --tls-key put ncacn_ip_tcp bindings on TLS. --tls-ca then requires
    client certificates that FILE signs, on TCP, and lets clients on other machines reach
    ncacn_np bindings (remote named pipes, any certificate FILE signs; the interfaces see
    the caller as cn:COMMONNAME).
    """
    files = TlsFiles(tls_cert, tls_key, tls_ca)
    files.check_pair()
    if files.ca is not None and not files.has_identity:
        raise click.UsageError(f"{CA} needs {CERT} and {KEY}: the server presents its own certificate")
    parsed = [rpc.StringBinding.parse(b) for b in bindings or ("ncalrpc:",)]
    tcp = any(sb.protseq == "ncacn_ip_tcp" for sb in parsed)
    np = any(sb.protseq == "ncacn_np" for sb in parsed)
    if files.has_identity and not (tcp or np):
        raise click.UsageError(f"{CERT} applies to ncacn_ip_tcp and ncacn_np bindings")
    if files.has_identity and not tcp and files.ca is None:
        raise click.UsageError(f"{CERT} on ncacn_np needs {CA}: clients from other machines are admitted by "
                               "their certificates (CERT_REQUIRED)")
    if allow_anonymous and not tcp:
        raise click.UsageError("--allow-anonymous applies to ncacn_ip_tcp bindings")
    tls = files.server_context() if files.has_identity else None
    np_tls = tls if files.ca is not None else None  # ncacn_np from other machines (CERT_REQUIRED)
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
            elif sb.protseq == "ncacn_np":
                used.append(server.listen(str(sb), security=everyone, tls=np_tls))
            else:
                used.append(server.listen(str(sb), security=everyone))
        server.start()
        remote_np = f"; ncacn_np from other machines: {pipe_port_status()}" if np and np_tls is not None else ""
        ifaces = [
            {"name": s.name, "uuid": str(s.uuid), "version": f"{s.version[0]}.{s.version[1]}"} for s in specs
        ]
        if as_json:
            click.echo(json.dumps({"bindings": used, "interfaces": ifaces, "pid": os.getpid()}))
        else:
            for b in used:
                click.echo(b)
        what = ", ".join(f"{i['name']} {i['version']}" for i in ifaces)
        note(f"serving {what} on {len(used)} binding{'s' if len(used) > 1 else ''}{remote_np}; Ctrl-C to stop")
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


def _fail(exc: W.WinIPCError, as_json: bool) -> NoReturn:
    """A failed call: exit status 1, the error on stderr (and as JSON on stdout with --json)."""
    if as_json:
        print_json({"error": error_json(exc)})
    raise Failure(describe_error(exc)) from None


def _call_tls(sb: rpc.StringBinding, files: TlsFiles) -> ssl.SSLContext | None:
    """The client context for a call on ``sb``, from the TLS options (None: no TLS).

    Raises:
        click.UsageError: options on a binding to this machine, half a certificate, or
            ncacn_np to another machine without one (the option is named).
        click.BadParameter: a file that does not load (named).
    """
    remote_np = sb.protseq == "ncacn_np" and not sb.is_local
    if sb.protseq != "ncacn_ip_tcp" and not remote_np:
        files.refuse(f"applies to ncacn_ip_tcp and to ncacn_np on another host; {sb} is on this machine")
        return None
    files.check_pair()
    if remote_np and not files.has_identity:
        raise click.UsageError(f"{sb} is a pipe on another machine: give {CERT} and {KEY} (its server admits "
                               f"callers by their certificate; {CA} names the CA its certificate is checked against)")
    return files.client_context() if files.given else None


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
@tls_options("client", "For ncacn_ip_tcp over TLS (RPC_C_AUTHN_LEVEL_PKT_PRIVACY) and "
             "ncacn_np:HOST (a pipe on another machine, which needs it).")
def call_cmd(
    binding: str,
    method: str,
    args: tuple[str, ...],
    module: str | None,
    as_json: bool,
    timeout: float | None,
    tls_cert: str | None,
    tls_key: str | None,
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

    TLS: --tls-ca FILE trusts the server certificates FILE signs (the host name is
    checked); --tls-cert and --tls-key present a client certificate, which
    ncacn_np:HOST[\\pipe\\NAME] on another machine requires (its server admits callers by it).
    """
    spec, m = _resolve_method(method, module, binding)
    pos, kw = parse_call_args(m, args)
    try:
        sb = rpc.StringBinding.parse(binding)
    except W.WinIPCError as exc:
        _fail(exc, as_json)
    tls = _call_tls(sb, TlsFiles(tls_cert, tls_key, tls_ca))
    try:
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
        _fail(exc, as_json)
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
