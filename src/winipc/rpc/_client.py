"""Client side: binding handles, typed proxies, synchronous, one-way, future and asyncio calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from winipc import errors as W
from winipc._wire import rpc as wire
from winipc.rpc import _epm, _fast, _mapper
from winipc.rpc._binding import StringBinding
from winipc.rpc._common import AuthInfo, AuthLevel, ClientInfo, error_of
from winipc.rpc._conn import Conn, Registration
from winipc.rpc._context import ClientContextHandle
from winipc.rpc._idl import InterfaceSpec, MethodSpec, interfaces_of, spec_of
from winipc.rpc._transport import Channel, open_pipe, open_tcp

T = TypeVar("T")
_BREAKS = (W.CallFailed, W.Timeout, W.ProtocolError, W.SecurityPackageError, W.CallCancelled)


class Proxy:
    """Base of generated proxies; ``proxy.method(...)`` calls the server."""

    __slots__ = ("_rpc_fast", "_rpc_invoke")
    _rpc_spec: InterfaceSpec

    def __init__(self, spec: InterfaceSpec, invoke: Callable[[MethodSpec, list[Any]], Any]) -> None:
        self._rpc_invoke = invoke

    def __new__(cls, spec: InterfaceSpec, invoke: Callable[[MethodSpec, list[Any]], Any]) -> Any:
        pcls = _proxy_class(spec, cls)
        obj: Any = object.__new__(pcls)
        obj._rpc_invoke = invoke
        obj._rpc_fast = None  # the C path's Client (rpc/_fast.py), set by Binding.client
        return obj

    def __repr__(self) -> str:
        return f"<{self._rpc_spec.name} proxy>"


_classes: dict[tuple[InterfaceSpec, type], type] = {}


def _method(spec: InterfaceSpec, m: MethodSpec) -> Callable[..., Any]:
    bind_args = m.bind_args
    n = len(m.params) if all(not p.kw_only for p in m.params) else -1  # every argument given by position

    def call(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == n:
            return self._rpc_invoke(m, [*args])
        return self._rpc_invoke(m, bind_args(args, kwargs))

    call.__name__ = m.name
    call.__qualname__ = m.name
    return _fast.proxy_method(m, spec.request_prefixes[m.opnum], call)


def _proxy_class(spec: InterfaceSpec, base: type) -> type:
    key = (spec, base)
    cls = _classes.get(key)
    if cls is None:
        ns: dict[str, Any] = {m.name: _method(spec, m) for m in spec.methods}
        ns["__slots__"] = ()
        ns["_rpc_spec"] = spec
        ns["__init__"] = lambda self, *a: None
        cls = _classes[key] = type(f"{spec.name}Proxy", (base, spec.cls), ns)
    return cls


class _ClientConn:
    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        sb = binding.string_binding
        if sb.protseq == "ncacn_ip_tcp":
            self.ch: Channel = open_tcp(sb.network_address or "127.0.0.1", int(sb.endpoint), binding.max_frame,
                                        binding.connect_timeout, binding.tls)
        else:
            self.ch = open_pipe(sb.pipe_name, binding.max_frame, binding.connect_timeout, binding.expect_server_uid,
                                binding.tls)
        self.conn = Conn(self.ch, is_server=False, oob_threshold=binding.oob_threshold)
        try:
            self._handshake()
        except BaseException:
            self.ch.close()
            raise
        self.fast = _fast.link(self.ch, self.conn)  # how the C path reaches this connection, or None

    def _handshake(self) -> None:
        b = self.binding
        auth = b.auth
        nonce = os.urandom(wire.NONCE_SIZE) if auth.key is not None else None
        if auth.level >= AuthLevel.PKT_PRIVACY and not (self.ch.local or self.ch.tls):
            raise W.UnsupportedAuthnLevel("PKT_PRIVACY on ncacn_ip_tcp needs tls=")
        body = wire.bind_body(wire.Bind(b.assoc, int(auth.level), auth.principal, nonce, b.max_frame,
                                        [(s.uuid.bytes, s.version[0], s.version[1]) for s in b.callback_specs]))
        self.conn.send(wire.BIND, 0, 0, body)
        frame = self.conn.recv(b.connect_timeout)
        t = frame.header.type
        if t == wire.BIND_NAK:
            raise error_of(*wire.parse_status(frame.body, "BIND_NAK"))
        if t != wire.BIND_ACK:
            raise W.ProtocolError(f"the server answered BIND with frame type {t:#x}")
        ack = wire.parse_bind_ack(frame.body)
        self.server_pid = ack.server_pid
        self.conn.limit = ack.max_frame
        if auth.key is not None:
            assert nonce is not None
            if ack.nonce is None or ack.proof is None:
                raise W.SecurityPackageError("the server did not take part in key authentication")
            skey = wire.session_key(auth.key, nonce, ack.nonce)
            if ack.proof != wire.proof(skey, b"server"):
                raise W.SecurityPackageError("the server does not hold the key for this principal")
            self.conn.send(wire.AUTH3, 0, 0, wire.pack(wire.proof(skey, b"client")))
            if auth.level >= AuthLevel.PKT_INTEGRITY and not self.ch.tls:
                self.conn.mac_key = skey
        elif auth.level >= AuthLevel.PKT_INTEGRITY and not (self.ch.local or self.ch.tls):
            raise W.UnsupportedAuthnLevel("PKT_INTEGRITY on ncacn_ip_tcp needs a key (AuthInfo) or tls=")
        self.client_info = ClientInfo(local=self.ch.local, pid=self.ch.peer_pid or None, uid=self.ch.peer_uid,
                                      gid=self.ch.peer_gid, principal=None, auth_level=auth.level, tls=self.ch.tls)

    def answer(self, frame: wire.Frame) -> None:
        """A callback from the server, during one of our calls."""
        self.conn.answer(frame, self.binding._callback_lookup, lambda _cid: None, None)

    def abort(self) -> None:
        """Tell the server the call is cancelled and drop the connection."""
        try:
            self.conn.send(wire.CANCEL, 0, 0, wire.pack([]))
        except W.WinIPCError:
            pass
        self.ch.close()


class Binding:
    """A binding handle (Win32: RpcBindingFromStringBinding): calls go through it.

    Thread-safe: concurrent calls from several threads each take a connection from the
    binding's pool (all in one association, so context handles work on any of them).
    Close it (or use ``with``) to close the connections; the server then runs down the
    context handles still open.
    """

    def __init__(self, binding: str | StringBinding, *, auth: AuthInfo | None = None,
                 tls: ssl.SSLContext | None = None, timeout: float | None = None, connect_timeout: float | None = 30.0,
                 callbacks: Iterable[Any] = (), expect_server_uid: int | None = None,
                 max_frame: int = wire.MAX_FRAME_DEFAULT, oob_threshold: int = 65536) -> None:
        self.string_binding = binding if isinstance(binding, StringBinding) else StringBinding.parse(binding)
        if self.string_binding.protseq == "ncacn_ip_tcp" and not self.string_binding.endpoint:
            raise W.InvalidEndpointFormat(f"{binding}: a TCP binding needs a port (or use bind_interface)")
        if self.string_binding.protseq != "ncacn_ip_tcp" and not self.string_binding.endpoint:
            raise W.InvalidEndpointFormat(f"{binding}: the binding needs an endpoint (or use bind_interface)")
        if tls is not None and self.string_binding.protseq == "ncalrpc":
            raise W.InvalidParameter("tls applies to ncacn_ip_tcp and to ncacn_np on another host; ncalrpc is local")
        self.auth = auth or AuthInfo()
        self.tls = tls
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.expect_server_uid = expect_server_uid
        self.max_frame = max_frame
        self.oob_threshold = oob_threshold
        self.assoc = os.urandom(16)
        self._callbacks: dict[tuple[bytes, int], Registration] = {}
        for impl in callbacks:
            for spec in interfaces_of(impl):
                self._callbacks[spec.key()] = Registration.make(spec, impl)
        self.callback_specs = [r.spec for r in self._callbacks.values()]
        self._conns = _fast.new_pool()  # idle connections (the C path takes from it too)
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def __str__(self) -> str:
        return str(self.string_binding)

    def client(self, interface: type[T], *, timeout: float | None = None) -> T:
        """A typed proxy: its methods are the interface's and call the server.

        Args:
            interface: an ``@rpc.interface`` class.
            timeout: seconds per call (default: the binding's); a call that takes longer
                is cancelled and raises CallTimeout.
        """
        spec = spec_of(interface)
        t = self.timeout if timeout is None else timeout
        proxy: Any = Proxy(spec, functools.partial(self._invoke, spec, t))
        proxy._rpc_fast = _fast.client(self._conns, t, self._resume, self.oob_threshold)
        return cast(T, proxy)

    def async_client(self, interface: type[T], *, timeout: float | None = None) -> Any:
        """A proxy whose methods are coroutines (asyncio); cancelling the task cancels the call."""
        spec = spec_of(interface)
        t = self.timeout if timeout is None else timeout

        def invoke(m: MethodSpec, values: list[Any]) -> Any:
            return self._acall(spec, m, values, t)

        return Proxy(spec, invoke)

    def submit(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> CallFuture[T]:
        """Start ``proxy.method(*args)`` and return at once (Win32: asynchronous RPC).

        Returns:
            A future; ``cancel()`` on it cancels the call even while it runs.
        """
        proxy = getattr(method, "__self__", None)
        if not isinstance(proxy, Proxy):
            raise W.InvalidParameter("submit() takes a method of a proxy from this binding")
        m = proxy._rpc_spec.by_name[method.__name__]
        values = m.bind_args(args, kwargs)
        token = _Cancel()
        fut: CallFuture[T] = CallFuture(token)
        spec = proxy._rpc_spec

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self._invoke(spec, self.timeout, m, values, token))
            except BaseException as exc:
                fut.set_exception(exc)

        self._pool().submit(run)
        return fut

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="winipc-rpc-call")
            return self._executor

    async def _acall(self, spec: InterfaceSpec, m: MethodSpec, values: list[Any], timeout: float | None) -> Any:
        token = _Cancel()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool(), self._invoke, spec, timeout, m, values, token)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            token.cancel()
            raise

    # ------------------------------------------------------------- plumbing
    def _release(self, c: _ClientConn, ok: bool) -> None:
        if not (ok and self._conns.put(c)):
            c.ch.close()

    def _invoke(self, spec: InterfaceSpec, timeout: float | None, m: MethodSpec, values: list[Any],
                token: _Cancel | None = None) -> Any:
        c = self._conns.take()  # a connection from the pool, else a new one
        if c is None:
            if self._conns.closed:
                raise W.InvalidHandle("the binding is closed")
            c = _ClientConn(self)
        if token is not None and not token.attach(c):
            self._release(c, True)
            raise W.CallCancelled(f"{spec.name}.{m.name} was cancelled")
        return self._guard(c, m, timeout, token, c.conn.invoke, spec, m, values, timeout=timeout,
                           context_in=self._context_in, answer=c.answer)

    def _resume(self, c: _ClientConn, m: MethodSpec, timeout: float | None, stage: int, flags: int, call_id: int,
                payload: Any) -> Any:
        """Finish a call the C path (rpc/_fast.py) started on ``c`` and handed back.

        ``stage`` SEND_FAILED: sending ``payload`` (the frame) raised; RECV_FAILED: receiving
        raised ``payload``; UNREAD_ANSWER: ``payload`` is an answer the C path does not read.
        """
        return self._guard(c, m, timeout, None, self._finish, c, m, timeout, stage, flags, call_id, payload)

    def _finish(self, c: _ClientConn, m: MethodSpec, timeout: float | None, stage: int, flags: int, call_id: int,
                payload: Any) -> Any:
        raw = None
        if stage == _fast.SEND_FAILED:
            c.ch.send_frame(payload)  # through the pipe, which raises what is wrong
            if m.oneway:
                return None
        elif stage == _fast.RECV_FAILED:
            if isinstance(payload, TimeoutError):
                raise W.SemTimeout("no answer in time")
        else:
            raw = payload
        return c.conn.await_result(m, flags, call_id, True, timeout, self._context_in, c.answer, raw)

    def _guard(self, c: _ClientConn, m: MethodSpec, timeout: float | None, token: _Cancel | None,
               run: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``run(*args, **kwargs)`` on ``c``: its errors as the call's, ``c`` back to the pool when it is fine."""
        ok = False
        try:
            result = run(*args, **kwargs)
            ok = True
            return result
        except W.Timeout:
            c.abort()
            raise W.CallTimeout(f"{m.interface}.{m.name} took longer than {timeout} s and was cancelled") from None
        except _BREAKS:
            if token is not None and token.cancelled:
                raise W.CallCancelled(f"{m.interface}.{m.name} was cancelled") from None
            raise
        except W.WinIPCError:
            ok = True  # a fault, or arguments refused before sending: the connection is fine
            raise
        finally:
            if token is not None:
                token.detach()
            self._release(c, ok)

    def _context_in(self, raw: bytes) -> ClientContextHandle:
        return ClientContextHandle(raw, self)

    def _callback_lookup(self, if_uuid: bytes, major: int, minor: int) -> Registration:
        reg = self._callbacks.get((if_uuid, major))
        if reg is None or reg.spec.version[1] < minor:
            raise W.UnknownInterface("this client serves no such callback interface")
        return reg

    def connect(self, connections: int = 1) -> None:
        """Connect to the server now instead of at the first call (Win32: RpcBindingBind).

        Opens connections until ``connections`` wait idle in the binding's pool, so that
        as many threads calling at once find one ready; errors (no server, access
        denied, a failed handshake) surface here.

        Args:
            connections: 1..64.

        Raises:
            InvalidParameter: ``connections`` outside 1..64.
            InvalidHandle: the binding is closed.
            and what a call raises when it cannot connect (ServerUnavailable, AccessDenied, ...).
        """
        if type(connections) is not int or not 1 <= connections <= 64:
            raise W.InvalidParameter(f"connections must be an int within 1..64, not {connections!r}")
        if self._conns.closed:
            raise W.InvalidHandle("the binding is closed")
        wanted = connections - len(self._conns)
        opened: list[_ClientConn] = []
        try:
            for _ in range(wanted):
                opened.append(_ClientConn(self))
        except BaseException:
            for c in opened:
                c.ch.close()
            raise
        if self._conns.put_cold(opened):  # behind the warm ones: calls take from the end
            return
        for c in opened:
            c.ch.close()
        raise W.InvalidHandle("the binding was closed while it connected")

    def close(self) -> None:
        """Close every connection (Win32: RpcBindingFree)."""
        idle = self._conns.close()
        with self._lock:
            ex, self._executor = self._executor, None
        for c in idle:
            c.ch.close()
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Binding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cancel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self._conn: _ClientConn | None = None

    def attach(self, c: _ClientConn) -> bool:
        with self._lock:
            self._conn = c
            return not self.cancelled

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            c = self._conn
        if c is not None:
            c.abort()


class CallFuture(concurrent.futures.Future[T]):
    """The future of :meth:`Binding.submit`; ``cancel()`` also cancels a running call."""

    def __init__(self, token: _Cancel) -> None:
        super().__init__()
        self._token = token

    def cancel(self) -> bool:
        if super().cancel():
            return True
        if self.running():
            self._token.cancel()
            return True
        return False


def bind(binding: str, **kwargs: Any) -> Binding:
    """A binding handle for a string binding (Win32: RpcBindingFromStringBinding).

    Args:
        binding: ``ncalrpc:[name]``, ``ncacn_np:[\\\\pipe\\\\name]``, ``ncacn_ip_tcp:host[port]``.
        auth: :class:`AuthInfo` (level, principal, key).
        tls: a client SSL context for ncacn_ip_tcp (PKT_PRIVACY needs it) and for ncacn_np on
            another host (remote named pipes: with this client's certificate loaded).
        timeout: seconds per call (None: no limit).
        connect_timeout: seconds to connect and bind.
        callbacks: implementations of callback interfaces the server may call during
            this client's calls.
        expect_server_uid: refuse a local server run by another user.

    Raises:
        InvalidStringBinding, ProtseqNotSupported, InvalidEndpointFormat: a bad binding.
        (Connections open on the first call: ServerUnavailable is raised there.)
    """
    return Binding(binding, **kwargs)


def bind_interface(interface: type, *, host: str | None = None, protseq: str | None = None,
                   **kwargs: Any) -> Binding:
    """Bind by interface alone, through an endpoint mapper (Win32: RpcEpResolveBinding).

    Args:
        interface: an ``@rpc.interface`` class; a server of the same major version and at
            least its minor version is looked for.
        host: None (or "" or ".") asks this machine's endpoint mapper (every binding,
            ``ncalrpc`` first); a host name or address asks that host's network endpoint
            mapper (TCP port ``$WINIPC_RPC_EPM_PORT``, 10135 by default) for the
            ``ncacn_ip_tcp`` bindings reachable from here. The mapper is not authenticated:
            pass ``tls=`` or ``auth=`` (used for the call, not the lookup) when the answer matters.
        protseq: only bindings of this protocol sequence.
        kwargs: for :class:`Binding` (``auth``, ``tls``, ``timeout``, ...).

    Raises:
        EndpointNotRegistered: (1753) no live server registered the interface and version.
        ServerUnavailable: (1722) nothing answers as endpoint mapper on ``host``.
        ProtseqNotSupported: ``protseq`` cannot be reached on another host (only ncacn_ip_tcp can).
    """
    spec = spec_of(interface)
    if host is not None and host not in ("", "."):
        if protseq not in (None, "ncacn_ip_tcp"):
            raise W.ProtseqNotSupported(f"{protseq} on another host is not available: the network endpoint "
                                        "mapper knows ncacn_ip_tcp bindings")
        timeout = kwargs.get("connect_timeout", _mapper.LOOKUP_TIMEOUT)
        remote = _mapper.remote_lookup(host, str(spec.uuid), spec.version[0], spec.version[1], timeout=timeout)
        if not remote:
            raise W.EndpointNotRegistered(f"no server on {host} registered {spec.name} {spec.version[0]}."
                                          f"{spec.version[1]} ({spec.uuid}) on a binding reachable from here")
        return Binding(remote[0], **kwargs)
    found = _epm.resolve(spec, protseq)
    if not found:
        raise W.EndpointNotRegistered(f"no server on this machine registered {spec.name} {spec.version[0]}."
                                      f"{spec.version[1]} ({spec.uuid})")
    return Binding(found[0].binding, **kwargs)
