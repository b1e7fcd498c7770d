"""RpcServer: interfaces served on string bindings, one thread per client connection."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from winipc import errors as W
from winipc._backends import posix as B
from winipc._core.security import SecurityAttributes
from winipc._wire import rpc as wire
from winipc.rpc import _epm, _fast, _mapper
from winipc.rpc._binding import StringBinding
from winipc.rpc._common import AuthLevel, Call, ClientInfo, current_holder
from winipc.rpc._conn import Conn, Registration
from winipc.rpc._context import Association, Associations
from winipc.rpc._idl import interfaces_of, spec_of
from winipc.rpc._transport import Channel, PipeListener, TcpListener

log = logging.getLogger("winipc.rpc")
_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class _Endpoint:
    binding: StringBinding
    listener: PipeListener | TcpListener
    allow_anonymous: bool


class RpcServer:
    """An RPC server (Win32: RpcServerRegisterIf3, RpcServerUseProtseqEp, RpcServerListen).

    Args:
        keys: principal name -> shared key (bytes, >= 16), for clients that authenticate
            with :class:`AuthInfo` (Win32: RpcServerRegisterAuthInfo).
        max_frame: largest frame (bytes) a client may send; larger ones get RPC_S_PROTOCOL_ERROR
            and the connection is closed.
        max_connections: concurrent client connections (one thread each); more are refused
            with RPC_S_SERVER_TOO_BUSY.
        oob_threshold: bytes values and arrays at least this long travel out of band.
        register_endpoints: record the bindings in the endpoint mapper while serving, so
            clients can bind by interface alone (Win32: RpcEpRegister).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, keys: Mapping[str, bytes] | None = None, max_frame: int = wire.MAX_FRAME_DEFAULT,
                 max_connections: int = 1024, oob_threshold: int = 65536, register_endpoints: bool = True) -> None:
        if not isinstance(max_frame, int) or not 1024 <= max_frame <= wire.MAX_FRAME_LIMIT:
            raise W.InvalidParameter(f"max_frame must be 1024..{wire.MAX_FRAME_LIMIT} bytes, not {max_frame!r}")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise W.InvalidParameter(f"max_connections must be a positive int, not {max_connections!r}")
        for name, key in (keys or {}).items():
            if not isinstance(name, str) or not isinstance(key, bytes) or len(key) < 16:
                raise W.InvalidParameter(f"keys[{name!r}] must be bytes, at least 16 of them")
        self.keys = dict(keys or {})
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.oob_threshold = oob_threshold
        self._register_endpoints = register_endpoints
        self._ifaces: dict[tuple[bytes, int], Registration] = {}
        self._generation = 0  # bumped by register/unregister: connections' lookup caches are stale
        self._endpoints: list[_Endpoint] = []
        self._threads: list[threading.Thread] = []
        self._conns: set[Channel] = set()
        self._lock = threading.Lock()
        self._assocs = Associations()
        self._running = False
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._epm: _epm.Registration | None = None
        self._mapper: _mapper.Holder | None = None

    # ------------------------------------------------------------------ setup
    def register(self, impl: Any, interface: type | None = None, *, security: SecurityAttributes | None = None,
                 if_callback: Callable[[ClientInfo], bool] | None = None,
                 min_auth_level: AuthLevel | int = AuthLevel.NONE) -> None:
        """Serve ``impl`` (an instance of a class that subclasses the interface).

        Args:
            impl: the implementation; its methods may be ``async def`` (run on the server's
                event loop).
            interface: the interface, when ``impl`` implements several.
            security: which local users may call (owner only by default); remote callers
                are those the endpoint admitted (see :meth:`listen`).
            if_callback: ``f(ClientInfo) -> bool`` asked once per connection (Win32: the
                interface security callback).
            min_auth_level: calls on weaker connections get ERROR_ACCESS_DENIED.

        Raises:
            InvalidParameter: ``impl`` is a class, misses a method, or ``interface`` is not one of its.
            AlreadyExists: that interface and major version are registered already.
        """
        if isinstance(impl, type):  # its methods would run without an instance
            raise W.InvalidParameter(f"register() takes an instance of the implementation, not the class "
                                     f"{impl.__name__}; interface, if given, comes second")
        spec = spec_of(interface) if interface is not None else spec_of(impl)
        if interface is not None and spec not in interfaces_of(impl):
            raise W.InvalidParameter(f"{type(impl).__name__} does not implement {spec.name}")
        reg = Registration.make(spec, impl, security=security, if_callback=if_callback,
                                min_auth_level=AuthLevel(min_auth_level), owner=B.uid())
        with self._lock:
            if spec.key() in self._ifaces:
                raise W.AlreadyExists(f"{spec.name} {spec.version[0]}.x is registered already")
            self._ifaces[spec.key()] = reg
            self._generation += 1
            if any(reg.is_coro):
                self._ensure_loop()
        self._refresh_epm()

    def unregister(self, interface: type) -> None:
        """Stop serving an interface (Win32: RpcServerUnregisterIf); calls get RPC_S_UNKNOWN_IF."""
        with self._lock:
            self._ifaces.pop(spec_of(interface).key(), None)
            self._generation += 1
        self._refresh_epm()

    def listen(self, binding: str, *, security: SecurityAttributes | None = None, tls: ssl.SSLContext | None = None,
               allow_anonymous: bool = False) -> str:
        """Accept clients on a string binding (Win32: RpcServerUseProtseqEp); returns it in use.

        An empty endpoint picks one (a fresh ``LRPC-...`` name, a free port).

        Args:
            binding: ``ncalrpc:[name]``, ``ncacn_np:[\\\\pipe\\\\name]``, ``ncacn_ip_tcp:addr[port]``.
            security: who may connect to a local endpoint (owner only by default); each
                interface then checks its own.
            tls: a server-side SSL context for ncacn_ip_tcp (PKT_PRIVACY); with
                ``verify_mode=CERT_REQUIRED`` client certificates identify callers. On
                ncacn_np it lets clients on other machines in (remote named pipes; the
                context must require client certificates, and any certificate it verifies
                is admitted to the pipe, each interface then checking its caller).
            allow_anonymous: admit TCP callers that present neither a key nor a client
                certificate (refused by default).

        Raises:
            InvalidStringBinding, ProtseqNotSupported, InvalidEndpointFormat: a bad binding.
            AccessDenied: the endpoint is in use (another server's pipe, a bound port).
        """
        sb = StringBinding.parse(binding)
        if sb.protseq == "ncacn_ip_tcp":
            if security is not None:
                raise W.InvalidParameter("security applies to local endpoints; TCP callers are admitted by keys, "
                                         "TLS client certificates or allow_anonymous")
            host = sb.network_address or "0.0.0.0"
            tcp = TcpListener(host, int(sb.endpoint or 0), self.max_frame, tls)
            listener: PipeListener | TcpListener = tcp
            sb = sb.with_endpoint(str(tcp.port))
        else:
            if tls is not None and sb.protseq != "ncacn_np":
                raise W.InvalidParameter("tls applies to ncacn_ip_tcp and ncacn_np; ncalrpc is local only")
            if sb.protseq == "ncacn_np" and not sb.is_local:
                raise W.InvalidStringBinding(f"{binding}: a server creates pipes on this machine only")
            if not sb.endpoint:
                sb = sb.with_endpoint(f"LRPC-{os.urandom(8).hex()}" if sb.protseq == "ncalrpc"
                                      else rf"\pipe\winipc-rpc-{os.urandom(8).hex()}")
            try:
                listener = PipeListener(sb.pipe_name, self.max_frame, security, tls)
            except W.AccessDenied as exc:
                raise W.AccessDenied(f"{sb}: the endpoint is in use ({exc.strerror})") from None
        ep = _Endpoint(sb, listener, allow_anonymous)
        with self._lock:
            self._endpoints.append(ep)
            if self._running:
                self._spawn(self._accept_loop, ep)
        self._refresh_epm()
        return str(sb)

    @property
    def bindings(self) -> list[str]:
        """The string bindings served (Win32: RpcServerInqBindings)."""
        return [str(ep.binding) for ep in self._endpoints]

    # ------------------------------------------------------------------ running
    def start(self) -> RpcServer:
        """Serve in background threads (Win32: RpcServerListen with DontWait)."""
        with self._lock:
            if self._running:
                return self
            if not self._endpoints:
                raise W.InvalidParameter("listen() on at least one binding before start()")
            self._running = True
            self._stopped.clear()
            for ep in self._endpoints:
                self._spawn(self._accept_loop, ep)
        self._refresh_epm()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (Win32: RpcServerListen)."""
        self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop listening, close every connection, run context handles down (Win32: RpcMgmtStopServerListening)."""
        with self._lock:
            was = self._running
            self._running = False
            eps, self._endpoints = self._endpoints, []
            conns = list(self._conns)
        if self._epm is not None:
            self._epm.close()
            self._epm = None
        if self._mapper is not None:
            self._mapper.close()
            self._mapper = None
        for ep in eps:
            ep.listener.close()
        for ch in conns:
            ch.close()
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(5.0)
        self._assocs.run_down_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5.0)
            self._loop.close()
            self._loop = None
        if was:
            self._stopped.set()

    close = stop

    def __enter__(self) -> RpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ensure_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name="winipc-rpc-loop", daemon=True)
            self._loop_thread.start()

    def _spawn(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="winipc-rpc")
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _refresh_epm(self) -> None:
        if not self._register_endpoints:
            return
        with self._lock:
            running = self._running
            ifaces = [r.spec for r in self._ifaces.values()]
            bindings = [str(ep.binding) for ep in self._endpoints]
        if self._epm is not None:
            self._epm.close()
            self._epm = None
        if running and ifaces and bindings:
            self._epm = _epm.register(ifaces, bindings)
        self._refresh_mapper(running and bool(ifaces))

    def _refresh_mapper(self, serving: bool) -> None:
        """Take part in the network endpoint mapper at the addresses served on TCP (see _mapper)."""
        port = _mapper.epm_port() if serving else 0
        with self._lock:
            wanted = sorted({ep.binding.network_address or "0.0.0.0" for ep in self._endpoints
                             if ep.binding.protseq == "ncacn_ip_tcp"}) if port else []
        if "0.0.0.0" in wanted:  # every IPv4 address already: a second bind would never succeed
            wanted = [a for a in wanted if a == "0.0.0.0" or ":" in a]
        old = self._mapper
        if old is not None and old.addresses == wanted and old.port == port:
            return
        self._mapper = None
        if old is not None:
            old.close()
        if wanted:
            self._mapper = _mapper.Holder(wanted, port)

    def _accept_loop(self, ep: _Endpoint) -> None:
        while self._running:
            if isinstance(ep.listener, PipeListener):
                ch: Channel | None = ep.listener.accept()
                if ch is None:
                    return
                self._start_conn(ch, ep, None)
            else:
                got = ep.listener.accept()
                if got is None:
                    return
                self._start_conn(None, ep, got)

    def _start_conn(self, ch: Channel | None, ep: _Endpoint, raw: Any) -> None:
        with self._lock:
            busy = len(self._conns) >= self.max_connections
        if busy:
            if ch is not None:
                ch.close()
            else:
                raw[0].close()
            log.warning("RPC server: %d connections; refused one (RPC_S_SERVER_TOO_BUSY)", self.max_connections)
            return
        self._spawn(self._serve_conn, ch, ep, raw)

    def _serve_conn(self, ch: Channel | None, ep: _Endpoint, raw: Any) -> None:
        if ch is None:
            try:
                assert isinstance(ep.listener, TcpListener)
                ch = ep.listener.wrap(raw[0])
            except (OSError, ssl.SSLError):
                raw[0].close()
                return
            address = raw[1]
        else:
            address = None
        with self._lock:
            if not self._running:
                ch.close()
                return
            self._conns.add(ch)
        try:
            _ServerConn(self, ch, ep, address).run()
        except W.WinIPCError as exc:
            log.debug("RPC connection ended: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(ch)
            ch.close()

    def lookup(self, if_uuid: bytes, major: int, minor: int) -> Registration:
        reg = self._ifaces.get((if_uuid, major))
        if reg is None or reg.spec.version[1] < minor:
            raise W.UnknownInterface("this server does not serve that interface and version")
        return reg


class _ServerConn:
    def __init__(self, server: RpcServer, ch: Channel, ep: _Endpoint, address: Any) -> None:
        self.server = server
        self.ch = ch
        self.ep = ep
        self.address = address
        self.conn = Conn(ch, is_server=True, oob_threshold=server.oob_threshold)
        self.conn.loop = server._loop
        self.client: ClientInfo | None = None
        self.assoc: Association | None = None
        self.callbacks: set[tuple[bytes, int]] = set()
        self._admitted: dict[tuple[bytes, int], bool] = {}
        self._ready: dict[tuple[bytes, int, int], Registration] = {}  # admitted, while _generation holds
        self._generation = -1

    def _nak(self, exc: W.WinIPCError) -> None:
        try:
            self.conn.send(wire.BIND_NAK, 0, 0, wire.status_body(exc.winerror, type(exc).__name__, exc.strerror or ""))
        except W.WinIPCError:
            pass
        raise exc

    def handshake(self) -> None:
        frame = self.conn.recv(_HANDSHAKE_TIMEOUT)
        if frame.header.type != wire.BIND:
            raise W.ProtocolError("the first RPC frame must be BIND")
        b = wire.parse_bind(frame.body)
        level = AuthLevel(b.auth_level)
        ch = self.ch
        principal = f"uid:{ch.peer_uid}" if ch.local else None
        skey = snonce = prf = None
        if level >= AuthLevel.PKT_PRIVACY and not (ch.local or ch.tls):
            self._nak(W.UnsupportedAuthnLevel("PKT_PRIVACY needs TLS on ncacn_ip_tcp"))
        if b.principal is not None:
            key = self.server.keys.get(b.principal)
            if key is None or b.nonce is None:
                self._nak(W.AccessDenied(f"principal {b.principal!r} is not known to this server"))
            assert key is not None and b.nonce is not None
            snonce = os.urandom(wire.NONCE_SIZE)
            skey = wire.session_key(key, b.nonce, snonce)
            prf = wire.proof(skey, b"server")
            principal = b.principal
        elif not ch.local:
            cert = ch.peer_cert
            if cert:
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            principal = f"cn:{v}"
            if principal is None:
                if level >= AuthLevel.CONNECT:
                    self._nak(W.UnsupportedAuthnLevel(f"{level.name} on TCP needs a key (AuthInfo) or a TLS client "
                                                      "certificate"))
                if not self.ep.allow_anonymous:
                    self._nak(W.AccessDenied("this endpoint does not admit anonymous remote callers"))
        max_frame = min(self.server.max_frame, b.max_frame)
        self.conn.limit = b.max_frame
        self.conn.send(wire.BIND_ACK, 0, 0, wire.bind_ack_body(wire.BindAck(max_frame, snonce, prf, os.getpid())))
        if skey is not None:
            frame = self.conn.recv(_HANDSHAKE_TIMEOUT)
            if frame.header.type != wire.AUTH3 or wire.parse_auth3(frame.body) != wire.proof(skey, b"client"):
                raise W.SecurityPackageError("the client did not prove its key")
            if level >= AuthLevel.PKT_INTEGRITY and not ch.tls:
                self.conn.mac_key = skey
        self.client = ClientInfo(
            local=ch.local, pid=ch.peer_pid if ch.local else None, uid=ch.peer_uid, gid=ch.peer_gid,
            principal=principal, auth_level=level, tls=ch.tls, address=self.address,
        )
        ident = ch.peer_uid if ch.local else principal
        self.assoc = self.server._assocs.join((b.assoc, ch.local, ident))
        self.callbacks = {(u, major) for u, major, _minor in b.callbacks}

    def run(self) -> None:
        try:
            self.handshake()
        except (W.CallFailed, W.Timeout, W.ProtocolError, W.SecurityPackageError, W.AccessDenied,
                W.UnsupportedAuthnLevel):
            return
        assoc = self.assoc
        assert assoc is not None
        try:
            conn, lookup, make_call, resolve = self.conn, self.lookup, self.make_call, assoc.resolve
            recv_raw, quick, run_request, plain = conn.ch.recv_raw, wire.quick_request, conn.run_request, conn.mac_key is None
            # the C path serves the plain calls it has learnt; the rest comes back here
            loop = _fast.serve_loop(conn.ch, conn, self.server, current_holder(), make_call)
            while True:
                raw = None if loop is None else loop.run()
                if raw is None:
                    raw = recv_raw()
                if plain:
                    q = quick(raw)
                    if q is not None and not q[0] & wire.CALLBACK:
                        flags, call_id, d = q
                        run_request(flags, call_id, d[0], d[1], d[2], d[3], d[4], (), lookup, make_call, resolve)
                        if loop is not None and self._generation == self.server._generation:
                            _fast.learn(loop, self._ready.get((d[0], d[1], d[2])), self._generation, *d[:4])
                        continue
                frame = conn.frame(raw)
                t = frame.header.type
                if t == wire.REQUEST and not frame.header.flags & wire.CALLBACK:
                    conn.answer(frame, lookup, make_call, resolve)
                elif t == wire.CANCEL:
                    continue  # the call it names has finished already
                else:
                    raise W.ProtocolError(f"unexpected RPC frame type {t:#x} from a client")
        except (W.CallFailed, W.ProtocolError, W.SecurityPackageError) as exc:
            log.debug("RPC connection closed: %s", exc)
        finally:
            self.server._assocs.leave(assoc)

    def lookup(self, if_uuid: bytes, major: int, minor: int) -> Registration:
        server = self.server
        if self._generation == server._generation:
            reg = self._ready.get((if_uuid, major, minor))
            if reg is not None:
                return reg
        else:
            self._ready.clear()
            self._generation = server._generation
        reg = server.lookup(if_uuid, major, minor)
        key = (if_uuid, major)
        ok = self._admitted.get(key)
        if ok is None:
            assert self.client is not None
            ok = self._admitted[key] = reg.admits(self.client)
        if not ok:
            raise W.AccessDenied(f"the caller may not use {reg.spec.name}")
        self._ready[(if_uuid, major, minor)] = reg
        return reg

    def make_call(self, call_id: int) -> Call:
        assert self.client is not None
        return Call(self.client, self.ch, self.assoc, self, call_id)

    def callback_proxy(self, interface: type) -> Any:
        from winipc.rpc._client import Proxy

        spec = spec_of(interface)
        if spec.key() not in self.callbacks:
            raise W.UnknownInterface(f"the client does not serve callback interface {spec.name}")
        return Proxy(spec, lambda m, values: self.conn.invoke(spec, m, values, callback=True))
