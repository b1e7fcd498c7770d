"""Frame channels under RPC: a winipc message pipe (ncalrpc, ncacn_np) or TCP (ncacn_ip_tcp, TLS).

A channel sends the gathered parts of one frame and receives whole frames; everything
else (who the peer is, whether input is waiting) is what the server and client need to
apply security and cancellation.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Any

from winipc import errors as W
from winipc._core.security import Access, Ace, SecurityAttributes
from winipc._wire import rpc as wire
from winipc.pipes import PipeConnection, PipeInstance, connect, wait_named_pipe

_SMALL = 64 * 1024


class Channel:
    """One connection carrying RPC frames."""

    local = True
    peer_pid = 0
    peer_uid: int | None = None
    peer_gid: int | None = None
    peer_cert: dict[str, Any] | None = None
    tls = False

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame

    def send(self, parts: list[bytes | memoryview]) -> None:
        raise NotImplementedError

    def send_frame(self, frame: bytes) -> None:
        """Send one whole frame already in one piece."""
        self.send([frame])

    def recv(self, timeout: float | None = None) -> wire.Frame:
        """The next frame. Raises CallFailed when the peer is gone, Timeout, ProtocolError."""
        return wire.parse_frame(self.recv_raw(timeout), self.max_frame)

    def recv_raw(self, timeout: float | None = None) -> bytes | bytearray | memoryview:
        """The next frame's bytes, whole; its header is not checked yet (see :meth:`recv`)."""
        raise NotImplementedError

    def has_input(self) -> bool:
        """True when a frame (or the end of the connection) is waiting."""
        raise NotImplementedError

    def ring(self) -> Any:
        """The shared-memory ring endpoint whole frames travel through, or None (rpc/_fast.py)."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class PipeChannel(Channel):
    def __init__(self, conn: PipeConnection, max_frame: int) -> None:
        super().__init__(max_frame)
        self.conn = conn
        remote = conn.remote
        if remote is not None:  # ncacn_np across machines: TLS, the peer named by its certificate
            self.local = False
            self.tls = True
            self.peer_pid = remote.pid
            if remote.principal.startswith("cn:"):
                self.peer_cert = {"subject": ((("commonName", remote.principal[3:]),),)}
            return
        peer = conn.peer
        self.peer_pid, self.peer_uid, self.peer_gid = peer.pid, peer.uid, peer.gid

    def send(self, parts: list[bytes | memoryview]) -> None:
        try:
            if len(parts) == 2:
                self.conn.write(bytes(parts[0]) + parts[1])
                return
            total = sum(len(p) for p in parts)
            if total <= _SMALL:
                self.conn.write(b"".join(parts))
                return
            with self.conn.send_buffer(total) as buf:
                pos = 0
                for p in parts:
                    n = len(p)
                    buf[pos:pos + n] = p
                    pos += n
        except (W.BrokenPipe, W.InvalidHandle) as exc:
            raise W.CallFailed(f"the RPC connection is gone: {exc.strerror}") from None

    def send_frame(self, frame: bytes) -> None:
        try:
            self.conn.write(frame)
        except (W.BrokenPipe, W.InvalidHandle) as exc:
            raise W.CallFailed(f"the RPC connection is gone: {exc.strerror}") from None

    def recv_raw(self, timeout: float | None = None) -> bytes:
        try:
            return self.conn.recv(timeout)
        except (W.BrokenPipe, W.InvalidHandle, W.OperationAborted) as exc:
            raise W.CallFailed(f"the RPC connection is gone: {exc.strerror}") from None
        except W.MoreData:
            raise W.ProtocolError("an RPC frame larger than the limit arrived") from None
        except W.InvalidData as exc:
            raise W.ProtocolError(f"bad pipe framing under RPC: {exc.strerror}") from None

    def ring(self) -> Any:
        # a local message pipe on the fast path: each ring call moves one whole message, and
        # raises for anything else (the peer gone, a socket event), which the pipe then handles
        c = self.conn
        if c.remote is None and c.message_type and c.can_read and c.can_write and not c.nowait:
            return c._ring
        return None

    def has_input(self) -> bool:
        try:
            return bool(self.conn.peek().total_available) or self.conn._peer_gone()
        except W.WinIPCError:
            return True

    def close(self) -> None:
        self.conn.close()


class SocketChannel(Channel):
    def __init__(self, sock: socket.socket, max_frame: int, *, tls: bool = False) -> None:
        super().__init__(max_frame)
        self.sock = sock
        self.tls = tls
        self.local = False
        self._dec = wire.FrameDecoder(max_frame)
        self._closed = False
        if tls and isinstance(sock, ssl.SSLSocket):
            self.peer_cert = sock.getpeercert() or None

    def send(self, parts: list[bytes | memoryview]) -> None:
        try:
            if self.tls:
                self.sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
                return
            total = sum(len(p) for p in parts)
            if total <= _SMALL:
                self.sock.sendall(b"".join(parts))
                return
            views = [memoryview(p).cast("B") for p in parts]
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if views and sent:
                    views[0] = views[0][sent:]
        except OSError as exc:
            raise W.CallFailed(f"the RPC connection is gone: {exc}") from None

    def send_frame(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            raise W.CallFailed(f"the RPC connection is gone: {exc}") from None

    def recv(self, timeout: float | None = None) -> wire.Frame:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._dec.next_frame()
            if frame is not None:
                return frame
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._readable(left):
                    raise W.Timeout("no RPC frame within the timeout")
            try:
                chunk = self.sock.recv(max(self._dec.wanted, 65536))
            except ssl.SSLError as exc:
                raise W.CallFailed(f"TLS failed on the RPC connection: {exc}") from None
            except OSError as exc:
                raise W.CallFailed(f"the RPC connection is gone: {exc}") from None
            if not chunk:
                raise W.CallFailed("the peer closed the RPC connection")
            self._dec.feed(chunk)

    def recv_raw(self, timeout: float | None = None) -> memoryview:
        return self.recv(timeout).raw

    def _readable(self, timeout: float) -> bool:
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def has_input(self) -> bool:
        return self._dec.in_frame or self._readable(0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


# ---------------------------------------------------------------------- client side


def open_pipe(pipe_name: str, max_frame: int, timeout: float | None, expect_server_uid: int | None,
              tls: ssl.SSLContext | None = None) -> PipeChannel:
    """Connect to an RPC pipe, waiting while every instance is busy (WaitNamedPipe).

    ``tls``: the client context for a pipe on another machine (``\\\\host\\pipe\\name``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            conn = connect(pipe_name, read_message=True, max_message_size=max_frame,
                           expect_server_uid=expect_server_uid, tls=tls)
            return PipeChannel(conn, max_frame)
        except W.PipeBusy:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise W.ServerTooBusy(f"{pipe_name}: every instance of the RPC pipe is busy") from None
            try:
                wait_named_pipe(pipe_name, min(left, 1.0) if left is not None else 1.0)
            except (W.SemTimeout, W.FileNotFound):
                continue
        except W.BadNetPath as exc:
            raise W.ServerUnavailable(f"no RPC server reachable at {pipe_name}: {exc.strerror}") from None
        except W.FileNotFound:
            raise W.ServerUnavailable(f"no RPC server listens on {pipe_name}") from None


def open_tcp(host: str, port: int, max_frame: int, timeout: float | None, tls: ssl.SSLContext | None) -> SocketChannel:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise W.ServerUnavailable(f"no RPC server at {host}:{port}: {exc}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=host if tls.check_hostname else None)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise W.ServerUnavailable(f"TLS handshake with {host}:{port} failed: {exc}") from None
    return SocketChannel(sock, max_frame, tls=tls is not None)


# ---------------------------------------------------------------------- server side


class PipeListener:
    """Keeps one pipe instance listening; ``accept`` hands over a connected one."""

    def __init__(self, pipe_name: str, max_frame: int, security: SecurityAttributes | None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.pipe_name = pipe_name
        self.max_frame = max_frame
        self.tls = tls  # remote clients too (ncacn_np from other machines), identified by certificate
        if security is not None:  # to connect to an RPC endpoint is to read and write its pipe
            full = Access.CONNECT | Access.READ | Access.WRITE
            security = SecurityAttributes.from_record(security.to_record())
            object.__setattr__(security, "allow", tuple(
                Ace(a.kind, a.ident, a.rights | full if a.rights & Access.CONNECT else a.rights)
                for a in security.allow))
        self.security = security
        self._lock = threading.Lock()
        self._closed = False
        self._inst: PipeInstance | None = self._new(first=True)

    def _new(self, first: bool = False) -> PipeInstance:
        remote: dict[str, Any] = {}
        if self.tls is not None:
            remote = {"reject_remote_clients": False, "tls": self.tls, "remote_clients": "*"}
        return PipeInstance(self.pipe_name, message=True, security=self.security,
                            max_message_size=self.max_frame, first_instance=first,
                            in_buffer_size=256 * 1024, out_buffer_size=256 * 1024, **remote)

    def accept(self) -> PipeChannel | None:
        """A connected channel, or None once closed."""
        while True:
            with self._lock:
                inst = self._inst
            if inst is None:
                return None
            try:
                inst.connect()
            except (W.OperationAborted, W.InvalidHandle):
                return None
            with self._lock:
                if self._closed:
                    inst.close()
                    return None
                self._inst = self._new()
            try:
                return PipeChannel(inst, self.max_frame)
            except W.WinIPCError:  # the client went away at once
                inst.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            inst, self._inst = self._inst, None
        if inst is not None:
            inst.cancel_io()
            inst.close()


class TcpListener:
    def __init__(self, host: str, port: int, max_frame: int, tls: ssl.SSLContext | None) -> None:
        self.max_frame = max_frame
        self.tls = tls
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise W.AccessDenied(f"cannot listen on {host}:{port}: {exc}") from None
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._r, self._w = socket.socketpair()
        self._closed = False

    def accept(self) -> tuple[socket.socket, Any] | None:
        while not self._closed:
            r, _, _ = select.select([self.sock, self._r], [], [])
            if self._r in r or self._closed:
                return None
            try:
                return self.sock.accept()
            except OSError:
                continue
        return None

    def wrap(self, sock: socket.socket) -> SocketChannel:
        """TLS handshake (in the connection's thread) and the channel."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock.settimeout(10.0)
            sock = self.tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
        return SocketChannel(sock, self.max_frame, tls=self.tls is not None)

    def close(self) -> None:
        self._closed = True
        try:
            self._w.send(b"x")
        except OSError:
            pass
        self.sock.close()
        self._r.close()
        self._w.close()
