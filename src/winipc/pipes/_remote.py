"""Remote named pipes: ``\\\\server\\pipe\\name`` over TLS, with no daemon.

Windows serves every remote pipe of a machine through one port (SMB, 445). winipc does the
same with the *pipe port* (:func:`pipe_port`, 10445 by default) and no daemon:

* Every process that has a pipe instance accepting remote clients (``PipeInstance(...,
  reject_remote_clients=False, tls=..., remote_clients=...)``) runs an *intake* for that
  pipe: a Unix socket in ``<machine-wide root>/pipe-remote/`` named after the pipe.
* Those processes take turns holding the pipe port (the *gateway*): the first to bind it
  serves the machine, the others retry every :data:`RETRY` seconds.
* A client connects to the port and names the pipe in clear text (the preamble). The
  gateway finds an intake of that pipe run by the pipe's owner, passes it the TCP
  connection (SCM_RIGHTS) and steps aside: it never sees a byte of the session.
* The intake's process does the TLS handshake with its instance's context, identifies the
  client by its certificate, checks it against the instance's ``remote_clients`` and the
  pipe's direction, connects to one of its listening instances like a local client
  would (so "all instances busy" is the kernel's answer, as for local clients), and pumps
  bytes between that local connection and the TLS session.
* On the client, :func:`connect` pumps the TLS session into one end of a local socket
  pair and returns an ordinary :class:`~winipc.pipes.PipeConnection` on the other end.

The byte layout is specified in docs/wire/pipe-remote.md (:mod:`winipc._wire.pipe_remote`).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import random
import secrets
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import env, namespace, roots
from winipc._core.names import ObjectName, pipe_name
from winipc._wire import pipe_remote as R

if TYPE_CHECKING:
    from winipc.pipes._named import PipeInstance

#: The pipe port when ``WINIPC_PIPE_PORT`` is not set: SMB's 445 plus 10000, so that
#: servers not run by root can listen on it.
DEFAULT_PORT = 10445
#: Seconds between a process's attempts to take the pipe port while another holds it.
RETRY = 1.0
#: Seconds a client may take to send its preamble, and an intake to answer the gateway.
PREAMBLE_TIMEOUT = 5.0
#: Seconds for the TCP connect, the TLS handshake and HELLO/READY, on either side.
HANDSHAKE_TIMEOUT = 10.0
#: Longest a gateway holds one WAIT request; clients repeat it for longer waits.
WAIT_SLICE = 30.0
#: WAIT time-out asking for the pipe's own default time-out (NMPWAIT_USE_DEFAULT_WAIT).
WAIT_DEFAULT = R.WAIT_FOREVER - 1
#: Connections a gateway or an intake serves at once; more are closed at once.
MAX_PENDING = 64
#: Bytes a pump buffers in one direction before it stops reading the other side.
_HIGH = 1024 * 1024
_FOLDER = "pipe-remote"
_MARK = b"\0winipc.rp1."
_DEFAULT_WAIT_REPLY = struct.Struct(">d")


def pipe_port() -> int:
    """The pipe port: ``$WINIPC_PIPE_PORT``, else :data:`DEFAULT_PORT`.

    0 turns remote pipes off: no process holds the port, remote connects fail.

    Raises:
        InvalidParameter: the variable is not a port number (0..65535).
    """
    return env.port("WINIPC_PIPE_PORT", DEFAULT_PORT, "no remote pipes")


@dataclass(frozen=True)
class RemotePeer:
    """The other end of a pipe connection that crosses machines.

    Attributes:
        computer_name: the client's computer name as it sent it (on the server), or the
            server's host as the client named it (on the client).
        address: (IP address, TCP port) of the other end.
        pid: the other end's process id, as it reported it.
        principal: ``"cn:NAME"`` from the other end's TLS certificate ("" when it has none).
    """

    computer_name: str
    address: tuple[str, int]
    pid: int
    principal: str


def common_name(cert: dict[str, Any] | None) -> str:
    """The commonName of a certificate as :meth:`ssl.SSLSocket.getpeercert` returns it ("" if none)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def check_server_context(tls: Any, remote_clients: Iterable[str]) -> tuple[ssl.SSLContext, frozenset[str]]:
    """Validate a server's ``tls`` and ``remote_clients`` arguments.

    Raises:
        InvalidParameter: ``tls`` is not a server-side SSLContext that requires client
            certificates, or ``remote_clients`` is empty or holds something not a name.
    """
    if not isinstance(tls, ssl.SSLContext):
        raise W.InvalidParameter("tls: remote clients need a server-side ssl.SSLContext (PIPE_REJECT_REMOTE_CLIENTS "
                                 "off means TLS on the network)")
    if tls.verify_mode != ssl.CERT_REQUIRED:
        raise W.InvalidParameter("tls: the context must require client certificates (verify_mode=CERT_REQUIRED); "
                                 "remote pipe clients are identified by them")
    if isinstance(remote_clients, str):
        remote_clients = [remote_clients]
    names = []
    for item in remote_clients:
        if not isinstance(item, str) or not item or len(item) > 255:
            raise W.InvalidParameter(f"remote_clients: certificate common names (1..255 characters) or '*', "
                                     f"not {item!r}")
        names.append(item.casefold())
    if not names:
        raise W.InvalidParameter("remote_clients: name the certificate common names admitted, or '*' for any "
                                 "certificate the context verifies")
    return tls, frozenset(names)


def _admits(allowed: frozenset[str], principal: str) -> bool:
    if not principal.startswith("cn:"):
        return False
    return "*" in allowed or principal[3:].casefold() in allowed


# --------------------------------------------------------------------------- TLS over a socket
class _Tls:
    """A TLS session over a plain TCP socket through memory BIOs, so one thread can pump it."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool, hostname: str | None) -> None:
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side, server_hostname=hostname)
        self.dec = R.RecordDecoder()
        self.eof = False

    @staticmethod
    def _left(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise W.SemTimeout("the remote pipe's handshake took too long")
        return left

    def flush(self, deadline: float) -> None:
        data = self.out.read()
        if data:
            self.sock.settimeout(self._left(deadline))
            self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        self.sock.settimeout(self._left(deadline))
        chunk = self.sock.recv(65536)
        if not chunk:
            self.inc.write_eof()
            self.eof = True
        else:
            self.inc.write(chunk)

    def handshake(self, deadline: float) -> None:
        while True:
            try:
                self.obj.do_handshake()
                self.flush(deadline)
                return
            except ssl.SSLWantReadError:
                self.flush(deadline)
                if self.eof:
                    raise ConnectionResetError("the peer closed during the TLS handshake") from None
                self._fill(deadline)
            except ssl.SSLError:
                with contextlib.suppress(OSError, W.WinIPCError):
                    self.flush(deadline)  # the alert, so the peer learns why
                raise

    def send(self, data: bytes, deadline: float) -> None:
        self.obj.write(data)
        self.flush(deadline)

    def recv_record(self, deadline: float) -> R.Record:
        while True:
            rec = self.dec.next()
            if rec is not None:
                return rec
            try:
                data = self.obj.read(65536)
            except ssl.SSLWantReadError:
                if self.eof:
                    raise ConnectionResetError("the peer closed the connection") from None
                self._fill(deadline)
                continue
            except ssl.SSLZeroReturnError:
                raise ConnectionResetError("the peer closed the connection") from None
            if not data:
                raise ConnectionResetError("the peer closed the connection")
            self.dec.feed(data)


# --------------------------------------------------------------------------- the pump
class _Pump:
    """Moves a local stream socket's bytes through a TLS session as records, both ways.

    A DISCONNECT record stands for the out-of-band mark DisconnectNamedPipe sends on a
    local connection; EOF for a half-close. FLUSH / FLUSHED carry FlushFileBuffers: the
    far pump answers once its own process's end has read everything before the FLUSH.
    One thread, non-blocking, bounded buffers.
    """

    def __init__(self, local: socket.socket, tls: _Tls | None = None) -> None:
        self.local = local
        if tls is not None:
            self.attach(tls)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._cond = threading.Condition()
        self._asked = 0  # FLUSH sequence numbers this side asked for
        self._answered = 0  # ... and the highest the far side confirmed
        self._to_ask: list[int] = []
        self._to_answer: list[int] = []  # FLUSH sequence numbers the far side waits on
        self.finished = False

    def attach(self, tls: _Tls) -> None:
        self.tls = tls
        self.tcp = tls.sock
        self.tx = bytearray()  # ciphertext for the TCP socket
        self.lx = bytearray()  # plaintext for the local socket
        self.local_eof = False  # the local side sent its EOF (we forwarded it)
        self.local_dead = False  # the local side is gone for writing
        self.remote_eof = False  # the remote side sent EOF
        self.shut_sent = False
        self.tcp_gone = False
        self.stop = False

    def close_wake(self) -> None:
        """Release a pump that will never run."""
        with self._cond:
            self.finished = True
            self._cond.notify_all()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def start(self, name: str) -> threading.Thread:
        t = threading.Thread(target=self.run, name=name, daemon=True)
        t.start()
        return t

    def _put(self, kind: int, payload: bytes = b"") -> None:
        self.tls.obj.write(R.record(kind, payload))
        self.tx += self.tls.out.read()

    def _from_tls(self) -> None:
        """Decrypt what the TCP side brought, then act on whole records."""
        while True:
            try:
                data = self.tls.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self.tcp_gone = True
                break
            if not data:
                self.tcp_gone = True
                break
            self.tls.dec.feed(data)
        self.tx += self.tls.out.read()  # TLS 1.3 may answer (key update)
        while not self.stop:
            try:
                rec = self.tls.dec.next()
            except W.InvalidData:
                self.tcp_gone = True
                return
            if rec is None:
                return
            if rec.kind == R.DATA:
                if not self.local_dead:
                    self.lx += rec.payload
            elif rec.kind == R.EOF:
                self.remote_eof = True
            elif rec.kind == R.DISCONNECT:
                self._disconnected()
            elif rec.kind == R.FLUSH and len(rec.payload) == R.SEQ.size:
                self._to_answer.append(R.SEQ.unpack(rec.payload)[0])
            elif rec.kind == R.FLUSHED and len(rec.payload) == R.SEQ.size:
                with self._cond:
                    self._answered = max(self._answered, R.SEQ.unpack(rec.payload)[0])
                    self._cond.notify_all()
            else:
                self.tcp_gone = True  # HELLO / READY out of place
                return

    def _disconnected(self) -> None:
        """The server disconnected us: what it sent is discarded, as on Windows."""
        self.lx.clear()
        if not self.local_dead:
            with contextlib.suppress(OSError):
                self.local.send(b"D", socket.MSG_OOB | socket.MSG_DONTWAIT)
        self.stop = True

    def _read_local(self) -> None:
        try:
            data = self.local.recv(R.MAX_DATA)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._put(R.DATA, data)
        else:
            self.local_eof = True
            self._put(R.EOF)

    def _read_mark(self) -> bool:
        """The local server sent DisconnectNamedPipe's mark: forward it and finish."""
        try:
            mark = self.local.recv(1, socket.MSG_OOB | socket.MSG_DONTWAIT)
        except OSError:
            return False
        if mark:
            self._put(R.DISCONNECT)
            self.local_dead = True
            self.local_eof = True
            self.lx.clear()
            return True
        return False

    def _write_local(self) -> None:
        try:
            n = self.local.send(self.lx, socket.MSG_DONTWAIT)
            del self.lx[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.local_dead = True
            self.lx.clear()

    def _write_tcp(self) -> None:
        try:
            n = self.tcp.send(self.tx)
            del self.tx[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.tcp_gone = True
            self.tx.clear()

    # -- FlushFileBuffers
    def flush(self, deadline: float | None, name: str) -> None:
        """Wait until the far end's process has read everything this side forwarded.

        Raises:
            BrokenPipe: the session ended first.
            SemTimeout: not confirmed by ``deadline`` (time.monotonic).
        """
        with self._cond:
            self._asked += 1
            seq = self._asked
            self._to_ask.append(seq)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"f")
        with self._cond:
            while self._answered < seq:
                if self.finished:
                    raise W.BrokenPipe(f"{name}: the connection ended before the other machine read everything")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise W.SemTimeout(f"{name}: the other machine did not read everything in time")
                self._cond.wait(left)

    def _service_flushes(self) -> float | None:
        """Send asked FLUSHes; answer the far side's once our end read all. Poll timeout (ms)."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 64):
                pass
        with self._cond:
            asks, self._to_ask = self._to_ask, []
        for seq in asks:
            self._put(R.FLUSH, R.SEQ.pack(seq))
        if not self._to_answer:
            return None
        try:
            unread = B.unread_bytes(self.local)
        except W.WinIPCError:
            unread = 0
        if self.lx or self.local_dead or unread > 0:
            return 5.0  # our process has not read it all yet: look again shortly
        for seq in self._to_answer:
            self._put(R.FLUSHED, R.SEQ.pack(seq))
        self._to_answer.clear()
        return None

    def _finished(self) -> bool:
        if self.stop:
            return not self.tx or self.tcp_gone
        if self.tcp_gone:
            return not self.lx or self.local_dead
        if self.remote_eof and not self.lx and not self.shut_sent and not self.local_dead:
            self.shut_sent = True
            with contextlib.suppress(OSError):
                self.local.shutdown(socket.SHUT_WR)
        local_done = self.local_dead or (self.remote_eof and not self.lx)
        return self.local_eof and local_done and not self.tx

    def run(self) -> None:
        pri = getattr(select, "POLLPRI", 0)
        try:
            self.tcp.setblocking(False)
            self.local.setblocking(False)
            self._from_tls()
            while not self._finished():
                wait_ms = self._service_flushes()
                poller = select.poll()  # a side that is gone is not watched (its HUP would spin)
                poller.register(self._wake_r, select.POLLIN)
                ev_tcp = 0
                if not self.tcp_gone and not self.stop and len(self.lx) < _HIGH:
                    ev_tcp |= select.POLLIN
                if self.tx and not self.tcp_gone:
                    ev_tcp |= select.POLLOUT
                ev_loc = 0
                if not self.local_eof and len(self.tx) < _HIGH and not self.stop:
                    ev_loc |= select.POLLIN | pri
                if self.lx and not self.local_dead:
                    ev_loc |= select.POLLOUT
                if not self.tcp_gone:
                    poller.register(self.tcp, ev_tcp)
                if not (self.local_dead and self.local_eof):  # still readable after a failed write
                    poller.register(self.local, ev_loc)
                events = dict(poller.poll(wait_ms))
                le = events.get(self.local.fileno(), 0)
                te = events.get(self.tcp.fileno(), 0)
                if le & pri and not self.local_eof and self._read_mark():
                    self.stop = True
                    continue
                if le & (select.POLLIN | select.POLLHUP | select.POLLERR) and not self.local_eof:
                    self._read_local()
                if le & select.POLLOUT:
                    self._write_local()
                if le & (select.POLLHUP | select.POLLERR) and self.local_eof:
                    self.local_dead = True  # closed both ways: nothing more can be written to it
                    self.lx.clear()
                if te & (select.POLLIN | select.POLLHUP | select.POLLERR) and not self.tcp_gone:
                    try:
                        chunk = self.tcp.recv(65536)
                    except BlockingIOError:
                        chunk = None
                    except OSError:
                        chunk = b""
                    if chunk:
                        self.tls.inc.write(chunk)
                        self._from_tls()
                    elif chunk is not None:
                        self.tcp_gone = True
                if te & select.POLLOUT:
                    self._write_tcp()
        finally:
            for s in (self.local, self.tcp):
                with contextlib.suppress(OSError):
                    s.close()
            self.close_wake()


# --------------------------------------------------------------------------- sessions
_sessions: dict[bytes, tuple[RemotePeer, _Pump]] = {}
_sessions_lock = threading.Lock()


def is_marker(addr: Any) -> bool:
    """Whether an accepted local peer's address marks a remote client brought by our intake."""
    return isinstance(addr, bytes) and addr.startswith(_MARK)


def claim(addr: bytes, peer_pid: int) -> tuple[RemotePeer, _Pump] | None:
    """The remote client behind a marked local connection and its pump, once (None if not ours)."""
    if peer_pid != os.getpid():
        return None
    with _sessions_lock:
        return _sessions.pop(addr, None)


def _drop_session(addr: bytes) -> None:
    with _sessions_lock:
        _sessions.pop(addr, None)


# --------------------------------------------------------------------------- the intake
def _folder(create: bool) -> str:
    """``<machine-wide root>/pipe-remote``: sticky 1777 when the root is shared, else 0700."""
    root = roots.global_root()
    path = os.path.join(root, _FOLDER)
    if create and B.lstat_id(path) is None:
        fid = B.lstat_id(root)
        shared = fid is not None and bool(fid.mode & 0o1000) and bool(fid.mode & 0o002)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            os.chmod(path, 0o1777 if shared else 0o700)
    here = B.lstat_id(path)
    if here is None:
        raise W.FileNotFound(f"{path}: no pipe accepts remote clients here")
    if not os.path.isdir(path) or os.path.islink(path):
        raise W.AccessDenied(f"{path}: the remote-pipe folder is not a plain directory")
    if here.uid not in (B.uid(), 0) and not here.mode & 0o1000:
        raise W.AccessDenied(f"{path}: owned by uid {here.uid} and not sticky")
    return path


def sweep() -> int:
    """Remove this user's intake sockets that nobody listens on any more (their processes
    were killed); returns how many. Run whenever this process opens an intake."""
    try:
        folder = _folder(create=False)
    except W.WinIPCError:
        return 0
    removed = 0
    for entry in B.list_dir(folder):
        path = os.path.join(folder, entry)
        fid = B.lstat_id(path)
        if fid is None or fid.uid != B.uid() or not entry.endswith(".sock"):
            continue
        if not B.unix_listener_alive(path):  # refused: its process is gone
            B.unlink(path)
            removed += 1
    return removed


class _Acceptor:
    """An accept loop that another thread can end (through a wake pipe)."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()

    def _next(self, listener: socket.socket) -> socket.socket | None:
        """The next connection on ``listener``; None once woken to stop."""
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if self._wake_r in dict(poller.poll()):
                return None
            try:
                return listener.accept()[0]
            except OSError:
                continue

    def _stop_and_join(self, thread: threading.Thread) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        thread.join(5.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Intake(_Acceptor):
    """This process's door for remote clients of one pipe (all its instances that take them)."""

    def __init__(self, oname: ObjectName) -> None:
        self.oname = oname
        self.instances: list[PipeInstance] = []
        self.folder = _folder(create=True)
        sweep()
        self.sock_name = f"{oname.storage_id}.{os.getpid()}.{secrets.token_hex(6)}.sock"
        self.listener = B.listen_unix(self.folder, self.sock_name, 0o666, backlog=16)
        super().__init__()
        self._busy = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="winipc-pipe-intake", daemon=True)
        self._thread.start()

    # -- instances
    def listening(self) -> list[PipeInstance]:
        return [i for i in list(self.instances) if not i.closed and i.socket_path is not None]

    def close(self) -> None:
        B.unlink(os.path.join(self.folder, self.sock_name))
        self._stop_and_join(self._thread)
        with contextlib.suppress(OSError):
            self.listener.close()

    # -- the gateway's requests
    def _run(self) -> None:
        while (conn := self._next(self.listener)) is not None:
            with contextlib.suppress(Exception), conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(PREAMBLE_TIMEOUT)
        data, fds = B.recv_fds(conn, 1, 1)
        try:
            free = self.listening()
            if data == b"Q":
                timeout = free[0].default_timeout if free else (self.instances[0].default_timeout
                                                                if self.instances else 0.05)
                conn.sendall((b"L" if free else b"B") + _DEFAULT_WAIT_REPLY.pack(timeout))
            elif data == b"C" and len(fds) == 1:
                with self._lock:
                    ok = bool(free) and self._busy < MAX_PENDING
                    if ok:
                        self._busy += 1
                if not ok:
                    conn.sendall(b"B")
                    return
                tcp = socket.socket(fileno=fds.pop())
                conn.sendall(b"A")
                threading.Thread(target=self._session, args=(tcp,), name="winipc-pipe-session", daemon=True).start()
        finally:
            for fd in fds:
                os.close(fd)

    # -- one remote client
    def _session(self, tcp: socket.socket) -> None:
        try:
            self._serve(tcp)
        except Exception:
            with contextlib.suppress(OSError):
                tcp.close()
        finally:
            with self._lock:
                self._busy -= 1

    def _serve(self, tcp: socket.socket) -> None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        free = self.listening()
        if not free:
            tcp.close()
            return
        ctx = free[0]._remote_tls
        assert ctx is not None
        address = tcp.getpeername()
        tls = _Tls(tcp, ctx, server_side=True, hostname=None)
        try:
            tls.handshake(deadline)
            rec = tls.recv_record(deadline)
            if rec.kind != R.HELLO:
                raise W.InvalidData("the first record was not HELLO")
            hello = R.parse_hello(rec.payload)
        except (OSError, ssl.SSLError, W.WinIPCError):
            tcp.close()
            return
        cn = common_name(tls.obj.getpeercert())
        peer = RemotePeer(hello.computer_name, (str(address[0]), int(address[1])), hello.pid,
                          f"cn:{cn}" if cn else "")
        status, inst, local, pump = self._place(ctx, peer, hello)
        if local is None or inst is None or pump is None:
            with contextlib.suppress(OSError, ssl.SSLError, W.WinIPCError):
                tls.send(R.ready(R.Ready(status)), deadline)
            tcp.close()
            return
        try:
            tls.send(R.ready(R.Ready(0, inst.message_type, int(inst.open_mode), os.getpid())), deadline)
        except (OSError, ssl.SSLError, W.WinIPCError):
            tcp.close()
            local.close()
            pump.close_wake()
            return
        mark = local.getsockname()
        try:
            pump.attach(tls)
            pump.run()
        finally:
            _drop_session(mark)

    def _place(self, ctx: ssl.SSLContext, peer: RemotePeer,
               hello: R.Hello) -> tuple[int, PipeInstance | None, socket.socket | None, _Pump | None]:
        """Connect the client to one of our listening instances that admits it."""
        status = W.ERROR_ACCESS_DENIED
        for inst in self.listening():
            if inst._remote_tls is not ctx or not _admits(inst._remote_clients, peer.principal):
                continue
            if (hello.read and not inst.open_mode & 2) or (hello.write and not inst.open_mode & 1):
                continue
            path = inst.socket_path
            if path is None:
                status = W.ERROR_PIPE_BUSY
                continue
            mark = _MARK + secrets.token_hex(16).encode()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            pump = _Pump(sock)
            with _sessions_lock:
                _sessions[mark] = (peer, pump)
            try:
                sock.bind(mark)
                return 0, inst, B.connect_unix(path, sock=sock), pump
            except (W.PipeBusy, W.FileNotFound, OSError):
                _drop_session(mark)
                pump.close_wake()
                status = W.ERROR_PIPE_BUSY
        return status, None, None, None


# --------------------------------------------------------------------------- the gateway
class _Gateway(_Acceptor):
    """This process's turn at the pipe port: holds it while it can, retrying while it cannot."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.listener: socket.socket | None = None
        self._stop = threading.Event()
        self._active = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="winipc-pipe-gateway", daemon=True)
        self._thread.start()

    @property
    def held(self) -> bool:
        """Whether this process answers the pipe port for the machine now."""
        return self.listener is not None

    def close(self) -> None:
        self._stop.set()
        self._stop_and_join(self._thread)

    def _bind(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", self.port))
            sock.listen(64)
        except OSError:
            sock.close()
            return None
        return sock

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.listener is None:
                    self.listener = self._bind()
                    if self.listener is None:
                        self._stop.wait(RETRY)
                        continue
                conn = self._next(self.listener)
                if conn is None:
                    break
                with self._lock:
                    ok = self._active < MAX_PENDING
                    if ok:
                        self._active += 1
                if not ok:
                    conn.close()
                    continue
                threading.Thread(target=self._route, args=(conn,), name="winipc-pipe-route", daemon=True).start()
        finally:
            if self.listener is not None:
                self.listener.close()
                self.listener = None

    def _route(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(PREAMBLE_TIMEOUT)
                dec = R.PreambleDecoder()
                while True:
                    need = dec.need()
                    if not need:
                        break
                    chunk = conn.recv(need)
                    if not chunk:
                        return
                    dec.feed(chunk)
                pre = dec.result()
                assert pre is not None
                try:
                    oname = pipe_name("\\\\.\\pipe\\" + pre.name)
                except W.WinIPCError as exc:
                    conn.sendall(R.STATUS.pack(exc.winerror))
                    return
                if pre.op == R.OP_OPEN:
                    status = _hand_off(conn, oname)
                else:
                    status = _wait(conn, oname, pre.wait_ms)
                conn.sendall(R.STATUS.pack(status))
        except (OSError, W.WinIPCError):
            pass
        finally:
            with self._lock:
                self._active -= 1


def _intakes_of(oname: ObjectName) -> tuple[int, list[str]]:
    """(the pipe's owner uid or -1 when there is no such pipe, its intake sockets)."""
    _root, path = namespace.object_path(oname)
    fid = B.lstat_id(path)
    if fid is None:
        return -1, []
    try:
        folder = _folder(create=False)
    except W.WinIPCError:
        return fid.uid, []
    prefix = f"{oname.storage_id}."
    found = [os.path.join(folder, e) for e in B.list_dir(folder) if e.startswith(prefix) and e.endswith(".sock")]
    random.shuffle(found)
    return fid.uid, found


def _ask(path: str, owner: int, op: bytes, fd: int = -1) -> bytes:
    """Send one request to an intake run by ``owner``; its one-byte answer (+ data)."""
    sock = B.connect_unix(path)
    with sock:
        if B.peer_credentials(sock).uid != owner:
            return b""  # not the pipe owner's: never hand it a client
        sock.settimeout(PREAMBLE_TIMEOUT)
        if fd >= 0:
            B.send_fds(sock, op, [fd])
        else:
            sock.sendall(op)
        out = b""
        while len(out) < 9:
            chunk = sock.recv(9 - len(out))
            if not chunk:
                break
            out += chunk
        return out


def _hand_off(conn: socket.socket, oname: ObjectName) -> int:
    owner, intakes = _intakes_of(oname)
    if owner < 0:
        return W.ERROR_FILE_NOT_FOUND
    busy = False
    for path in intakes:
        try:
            answer = _ask(path, owner, b"C", conn.fileno())
        except (OSError, W.WinIPCError):
            continue
        if answer[:1] == b"A":
            return 0
        busy = busy or answer[:1] == b"B"
    return W.ERROR_PIPE_BUSY if busy else W.ERROR_ACCESS_DENIED


def _wait(conn: socket.socket, oname: ObjectName, wait_ms: int) -> int:
    limit: float | None = None
    start = time.monotonic()
    delay = 0.001
    while True:
        owner, intakes = _intakes_of(oname)
        if owner < 0:
            return W.ERROR_FILE_NOT_FOUND
        if not intakes:
            return W.ERROR_ACCESS_DENIED
        for path in intakes:
            try:
                answer = _ask(path, owner, b"Q")
            except (OSError, W.WinIPCError):
                continue
            if answer[:1] == b"L":
                return 0
            if limit is None and len(answer) == 9 and wait_ms == WAIT_DEFAULT:
                limit = min(float(_DEFAULT_WAIT_REPLY.unpack(answer[1:])[0]), WAIT_SLICE)
        if limit is None:
            limit = WAIT_SLICE if wait_ms >= WAIT_DEFAULT else min(wait_ms / 1000, WAIT_SLICE)
        if time.monotonic() - start >= limit:
            return W.ERROR_SEM_TIMEOUT
        # a client that left ends the wait
        if select.select([conn], [], [], 0)[0]:
            return W.ERROR_SEM_TIMEOUT
        time.sleep(min(delay, max(0.0, limit - (time.monotonic() - start))))
        delay = min(delay * 2, 0.02)


# --------------------------------------------------------------------------- registration
_lock = threading.Lock()
_intakes: dict[str, _Intake] = {}
_gateway: _Gateway | None = None


def register(inst: PipeInstance, oname: ObjectName) -> None:
    """Let remote clients reach ``inst`` (called by PipeInstance when it takes them)."""
    global _gateway
    port = pipe_port()
    with _lock:
        intake = _intakes.get(oname.storage_id)
        if intake is None:
            intake = _intakes[oname.storage_id] = _Intake(oname)
        intake.instances.append(inst)
        if _gateway is None and port:
            _gateway = _Gateway(port)


def unregister(inst: PipeInstance, oname: ObjectName) -> None:
    global _gateway
    closing: list[Any] = []
    with _lock:
        intake = _intakes.get(oname.storage_id)
        if intake is not None:
            with contextlib.suppress(ValueError):
                intake.instances.remove(inst)
            if not intake.instances:
                closing.append(_intakes.pop(oname.storage_id))
        if not _intakes and _gateway is not None:
            closing.append(_gateway)
            _gateway = None
    for item in closing:
        with contextlib.suppress(Exception):
            item.close()


@atexit.register
def _close_all() -> None:
    """At exit, remove this process's intake sockets (handles left open are closed by the OS)."""
    with _lock:
        intakes = list(_intakes.values())
    for intake in intakes:
        B.unlink(os.path.join(intake.folder, intake.sock_name))


def gateway_held() -> bool:
    """Whether this process serves the pipe port for the machine now."""
    with _lock:
        return _gateway is not None and _gateway.held


def _after_fork() -> None:
    global _gateway, _lock, _sessions_lock
    _lock = threading.Lock()
    _sessions_lock = threading.Lock()
    _intakes.clear()
    _sessions.clear()
    _gateway = None


os.register_at_fork(after_in_child=_after_fork)


# --------------------------------------------------------------------------- the client
def _network_error(oname: ObjectName, port: int, exc: BaseException) -> W.WinIPCError:
    return W.BadNetPath(f"{oname.display}: nothing answers on {oname.server} port {port} (no process there has a "
                        f"pipe that takes remote clients, or WINIPC_PIPE_PORT differs): {exc}")


def _open_tcp(oname: ObjectName, op: int, wait_ms: int, timeout: float) -> socket.socket:
    port = pipe_port()
    if port == 0:
        raise W.NotSupported(f"{oname.display}: WINIPC_PIPE_PORT=0 turns remote pipes off")
    try:
        tcp = socket.create_connection((oname.server, port), timeout=timeout)
    except OSError as exc:
        raise _network_error(oname, port, exc) from None
    try:
        tcp.sendall(R.preamble(op, oname.name, wait_ms))
        tcp.settimeout(timeout if op == R.OP_OPEN else WAIT_SLICE + timeout)
        raw = b""
        while len(raw) < R.STATUS.size:
            chunk = tcp.recv(R.STATUS.size - len(raw))
            if not chunk:
                raise ConnectionResetError("the gateway closed without answering")
            raw += chunk
    except (OSError, W.InvalidData) as exc:
        tcp.close()
        raise _network_error(oname, port, exc) from None
    status = R.STATUS.unpack(raw)[0]
    if status:
        tcp.close()
        raise _status_error(oname, status)
    return tcp


def _status_error(oname: ObjectName, status: int) -> W.WinIPCError:
    where = f"{oname.display} on {oname.server}"
    text = {
        W.ERROR_FILE_NOT_FOUND: f"{where}: no such pipe",
        W.ERROR_ACCESS_DENIED: f"{where}: the pipe refuses this remote client (it rejects remote clients, does not "
                               "admit this certificate, or not this direction)",
        W.ERROR_PIPE_BUSY: f"{where}: all pipe instances that take remote clients are busy",
        W.ERROR_SEM_TIMEOUT: f"{where}: no instance became free in time",
    }.get(status, f"{where}: the server answered {W.error_name(status)}")
    return W.from_winerror(status, text)


_default_tls: ssl.SSLContext | None = None


def set_default_tls(ctx: ssl.SSLContext | None) -> None:
    """The client context remote pipes use when a call passes no ``tls`` (None: the system's
    default, which verifies servers against the system's CAs and presents no certificate).

    Code written for Windows (``win32file.CreateFile(r"\\\\server\\pipe\\x", ...)``) has no
    place for a context; set this once instead.

    Raises:
        InvalidParameter: not an SSLContext.
    """
    global _default_tls
    if ctx is not None and not isinstance(ctx, ssl.SSLContext):
        raise W.InvalidParameter(f"ctx: an ssl.SSLContext (client side) or None, not {type(ctx).__name__}")
    _default_tls = ctx


@dataclass
class Opened:
    sock: socket.socket
    peer: RemotePeer
    message_type: bool
    open_mode: int
    pump: _Pump


def open_remote(oname: ObjectName, *, read: bool, write: bool, tls: ssl.SSLContext | None,
                timeout: float = HANDSHAKE_TIMEOUT) -> Opened:
    """Connect to a remote pipe; returns the local end of the pumped session.

    Raises:
        BadNetPath: (53) nothing answers on the pipe port of that host.
        FileNotFound, AccessDenied, PipeBusy: the server's answer.
        AccessDenied: the TLS handshake failed (certificate refused either way).
    """
    ctx = tls if tls is not None else _default_tls if _default_tls is not None else ssl.create_default_context()
    if not isinstance(ctx, ssl.SSLContext):
        raise W.InvalidParameter(f"tls: an ssl.SSLContext (client side), not {type(tls).__name__}")
    deadline = time.monotonic() + timeout
    tcp = _open_tcp(oname, R.OP_OPEN, 0, timeout)
    session = _Tls(tcp, ctx, server_side=False, hostname=oname.server if ctx.check_hostname else None)
    try:
        try:
            session.handshake(deadline)
            session.send(R.hello(R.Hello(os.getpid(), read, write, socket.gethostname())), deadline)
            rec = session.recv_record(deadline)
        except ssl.SSLError as exc:
            raise W.AccessDenied(f"{oname.display}: TLS with {oname.server} failed: {exc.reason or exc}") from None
        except (OSError, W.InvalidData) as exc:
            raise W.AccessDenied(f"{oname.display}: {oname.server} ended the TLS session (it refused our "
                                 f"certificate, or none was given): {exc}") from None
        if rec.kind != R.READY:
            raise W.InvalidData(f"{oname.display}: the server's first record is not READY")
        ready = R.parse_ready(rec.payload)
        if ready.status:
            raise _status_error(oname, ready.status)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except BaseException:
        tcp.close()
        raise
    addr = tcp.getpeername()
    cn = common_name(session.obj.getpeercert())
    peer = RemotePeer(oname.server, (str(addr[0]), int(addr[1])), ready.server_pid, f"cn:{cn}" if cn else "")
    pump = _Pump(theirs, session)
    pump.start("winipc-pipe-client")
    return Opened(mine, peer, ready.message_type, ready.open_mode, pump)


def wait_remote(oname: ObjectName, timeout: float | None, use_default: bool) -> None:
    """WaitNamedPipe on another machine: ask its gateway, in slices of :data:`WAIT_SLICE`.

    Raises:
        BadNetPath, FileNotFound, AccessDenied, SemTimeout: as :func:`open_remote`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if use_default:
            wait_ms = WAIT_DEFAULT
        elif deadline is None:
            wait_ms = int(WAIT_SLICE * 1000)
        else:
            wait_ms = max(0, min(int((deadline - time.monotonic()) * 1000), int(WAIT_SLICE * 1000)))
        try:
            _open_tcp(oname, R.OP_WAIT, wait_ms, HANDSHAKE_TIMEOUT).close()
            return
        except W.SemTimeout:
            if use_default or (deadline is not None and time.monotonic() >= deadline):
                raise
        except OSError as exc:  # pragma: no cover - translated above
            if exc.errno == errno.EINTR:
                continue
            raise
