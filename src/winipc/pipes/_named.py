"""Named pipes: server instances (CreateNamedPipe), clients (CreateFile), waits, calls.

A pipe is a namespace object (``winipc._core.namespace``) whose directory holds one
listening socket per instance waiting for a client, ``<slot>.sock``. An instance listens
with a backlog of one connection, so "every instance busy" is the kernel's own answer
(EAGAIN) and a client gets ERROR_PIPE_BUSY without any handshake. When the instance
takes its client (ConnectNamedPipe) it stops listening before it accepts, so a second
client can never slip into the queue of a connected instance.
"""

from __future__ import annotations

import enum
import itertools
import os
import select
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends.errors import translate
from winipc._core import namespace
from winipc._core.names import ObjectName, pipe_name
from winipc._core.security import Access, SecurityAttributes
from winipc._core.timeouts import seconds
from winipc.pipes import _fast, _remote
from winipc.pipes._connection import PipeConnection

_instance_ids = itertools.count()

UNLIMITED_INSTANCES = 255
DEFAULT_TIMEOUT = 0.05  # seconds; Windows' default for nDefaultTimeOut == 0 is 50 ms
MAX_MESSAGE_DEFAULT = 256 * 1024 * 1024


class OpenMode(enum.IntEnum):
    """Direction of a pipe, from the server's side (PIPE_ACCESS_*)."""

    INBOUND = 1  # client writes, server reads
    OUTBOUND = 2  # server writes, client reads
    DUPLEX = 3


class _State(enum.Enum):
    LISTENING = "listening"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class _UseDefault:
    def __repr__(self) -> str:
        return "USE_DEFAULT_WAIT"


#: pass as a timeout to use the pipe's default time-out (NMPWAIT_USE_DEFAULT_WAIT)
USE_DEFAULT_WAIT: Any = _UseDefault()



class PipeInstance(PipeConnection):
    """One instance of a named pipe, on the server side (Win32: CreateNamedPipe).

    The instance is connectable as soon as it exists; :meth:`connect` waits for (or
    picks up) a client, :meth:`disconnect` drops it, and the instance can then serve
    the next. The I/O methods are those of :class:`PipeConnection`.

    Args:
        name: ``\\\\.\\pipe\\name`` (or a bare ``name``).
        open_mode: :class:`OpenMode` (PIPE_ACCESS_INBOUND / OUTBOUND / DUPLEX).
        message: message-type pipe (PIPE_TYPE_MESSAGE); default byte-type.
        read_message: message-read mode for this instance (PIPE_READMODE_MESSAGE); only
            with ``message``. Default: the pipe's type.
        max_instances: 1..255; 255 is PIPE_UNLIMITED_INSTANCES.
        out_buffer_size / in_buffer_size: bytes, advisory (socket buffer sizes).
        default_timeout: seconds, used by ``wait_named_pipe(name, USE_DEFAULT_WAIT)``;
            0 means 50 ms, as on Windows.
        security: who may connect; owner only by default.
        first_instance: fail if the pipe exists (FILE_FLAG_FIRST_PIPE_INSTANCE).
        reject_remote_clients: PIPE_REJECT_REMOTE_CLIENTS. On by default (Windows has it
            off): an instance takes clients from other machines only when this is False,
            and then needs ``tls`` and ``remote_clients``. See docs/pipes.md, "Remote pipes".
        nowait: PIPE_NOWAIT: connect() and reads return at once.
        max_message_size: largest message (bytes) a peer may announce; longer is an error.
        fast_path: None or True (default None) offers the shared-memory fast path to
            local winipc clients (listening at ``<pid>.<n>.fp1.sock``) when the extension
            is built and ``WINIPC_FASTPATH`` is not 0; False keeps every client on the
            socket. Plain clients (socat) get the socket format either way.
        tls: with ``reject_remote_clients=False``: a server-side :class:`ssl.SSLContext`
            with ``verify_mode=CERT_REQUIRED``; remote clients are identified by their
            certificate.
        remote_clients: with ``reject_remote_clients=False``: the certificate common
            names admitted from other machines, or ``"*"`` for any certificate ``tls``
            verifies. Local clients are still governed by ``security``.

    Raises:
        InvalidName: a bad name.
        InvalidParameter: an argument out of range (named in the message).
        AccessDenied: ``first_instance`` and the pipe exists, the pipe is another user's
            or has another type or direction, or the name is squatted.
        PipeBusy: (231) ``max_instances`` instances exist already.
    """

    kind = "pipe-instance"

    def __init__(
        self,
        name: str,
        *,
        open_mode: OpenMode | int = OpenMode.DUPLEX,
        message: bool = False,
        read_message: bool | None = None,
        max_instances: int = UNLIMITED_INSTANCES,
        out_buffer_size: int = 65536,
        in_buffer_size: int = 65536,
        default_timeout: float = 0.0,
        security: SecurityAttributes | None = None,
        first_instance: bool = False,
        reject_remote_clients: bool = True,
        nowait: bool = False,
        max_message_size: int = MAX_MESSAGE_DEFAULT,
        fast_path: bool | None = None,
        tls: ssl.SSLContext | None = None,
        remote_clients: Iterable[str] = (),
    ) -> None:
        self._closed = True
        self._remote_tls: ssl.SSLContext | None = None
        self._remote_clients: frozenset[str] = frozenset()
        if not reject_remote_clients:
            self._remote_tls, self._remote_clients = _remote.check_server_context(tls, remote_clients)
        elif tls is not None or remote_clients:
            raise W.InvalidParameter("tls and remote_clients apply only with reject_remote_clients=False")
        oname = pipe_name(name)
        if not oname.is_local:
            raise W.NotSupported(f"{oname.raw}: a server can only create pipes on this machine")
        try:
            mode = OpenMode(int(open_mode))
        except ValueError:
            raise W.InvalidParameter(f"open_mode must be 1 (inbound), 2 (outbound) or 3 (duplex), not {open_mode!r}") from None
        if read_message is None:
            read_message = message
        if read_message and not message:
            raise W.InvalidParameter("read_message=True (PIPE_READMODE_MESSAGE) needs message=True (PIPE_TYPE_MESSAGE)")
        if not isinstance(max_instances, int) or not 1 <= max_instances <= UNLIMITED_INSTANCES:
            raise W.InvalidParameter(f"max_instances must be 1..255 (255 = unlimited), not {max_instances!r}")
        for arg, val in (("out_buffer_size", out_buffer_size), ("in_buffer_size", in_buffer_size)):
            if not isinstance(val, int) or not 0 <= val <= 0x7FFF_FFFF:
                raise W.InvalidParameter(f"{arg} must be 0..2**31-1 bytes, not {val!r}")
        timeout = seconds(default_timeout, "default_timeout") or DEFAULT_TIMEOUT
        if not isinstance(max_message_size, int) or not 0 <= max_message_size <= 0x7FFF_FFFF:
            raise W.InvalidParameter(f"max_message_size must be 0..2**31-1 bytes, not {max_message_size!r}")
        sec = security if security is not None else SecurityAttributes()
        attrs = {
            "open_mode": int(mode),
            "message": bool(message),
            "max_instances": max_instances,
            "default_timeout": timeout,
            "out_buffer_size": out_buffer_size,
            "in_buffer_size": in_buffer_size,
            "reject_remote_clients": bool(reject_remote_clients),
            "wire": 1,
        }
        ref, created = namespace.create(oname, "pipe", attrs, sec)
        try:
            if not created:
                self._check_join(oname, ref.record, attrs, first_instance)
                others = B.count_holders(ref.fd) or 0
                limit = int(ref.record.attrs.get("max_instances", UNLIMITED_INSTANCES))
                if others + 1 > limit:
                    raise W.PipeBusy(f"{oname.display}: all {limit} instances exist already")
        except BaseException:
            ref.release()
            raise
        self._ref = ref
        self._oname = oname
        self._security = SecurityAttributes.from_record(ref.record.security)
        self._owner = ref.record.owner
        self.open_mode = OpenMode(int(ref.record.attrs["open_mode"]))
        self.max_instances = int(ref.record.attrs["max_instances"])
        self.default_timeout = float(ref.record.attrs["default_timeout"])
        self.out_buffer_size = out_buffer_size
        self.in_buffer_size = in_buffer_size
        self._fast_ok = _fast.enabled(fast_path)
        suffix = _fast.SLOT_SUFFIX if self._fast_ok else ".sock"
        self._slot_name = f"{os.getpid()}.{next(_instance_ids)}{suffix}"
        self._offered: tuple[int, Any] | None = None
        self._listener: socket.socket | None = None
        self._state = _State.DISCONNECTED
        placeholder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        super().__init__(
            placeholder,
            name=oname.display,
            message_type=bool(ref.record.attrs["message"]),
            can_read=self.open_mode != OpenMode.OUTBOUND,
            can_write=self.open_mode != OpenMode.INBOUND,
            is_client=False,
            max_message_size=max_message_size,
        )
        self._has_client = False
        self._pending_remote: tuple[_remote.RemotePeer, Any] | None = None
        self.read_message_mode = bool(read_message)
        self.nowait = nowait
        self._registered = False
        try:
            self._listen()
            if self._remote_tls is not None:
                _remote.register(self, oname)
                self._registered = True
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check_join(oname: ObjectName, rec: namespace.ObjectRecord, attrs: dict[str, Any], first: bool) -> None:
        if first:
            raise W.AccessDenied(f"{oname.display} exists already (first_instance=True)")
        if rec.type != "pipe":
            raise W.AccessDenied(f"{oname.display} is a {rec.type}, not a pipe")
        if rec.owner != B.uid():
            raise W.AccessDenied(f"{oname.display} belongs to uid {rec.owner}; only its owner adds instances")
        for key in ("open_mode", "message"):
            if rec.attrs.get(key) != attrs[key]:
                raise W.AccessDenied(f"{oname.display} exists with {key}={rec.attrs.get(key)!r}, not {attrs[key]!r}")

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """``"listening"``, ``"connected"`` or ``"disconnected"``."""
        return self._state.value

    @property
    def path(self) -> str:
        """The pipe's directory on the file system."""
        return self._ref.path

    @property
    def socket_path(self) -> str | None:
        """Where this instance listens, while it does (for socat and friends)."""
        return os.path.join(self._ref.path, self._slot_name) if self._listener else None

    def _wait_fd(self) -> int:
        """For wait_any: while listening, readable when a client is there; else the data."""
        self._check_open()
        return self._listener.fileno() if self._listener is not None else self._sock.fileno()

    def _listen(self) -> None:
        mode = self._security.file_mode(socket_file=True)
        self._listener = B.listen_unix(self._ref.path, self._slot_name, mode, backlog=0)
        self._state = _State.LISTENING

    def _stop_listening(self) -> None:
        if self._listener is not None:
            B.unlink(os.path.join(self._ref.path, self._slot_name))
            self._listener.close()
            self._listener = None

    def _wanted_rights(self) -> Access:
        rights = Access.CONNECT
        if self.open_mode & OpenMode.INBOUND:
            rights |= Access.WRITE
        if self.open_mode & OpenMode.OUTBOUND:
            rights |= Access.READ
        return rights

    def connect(self, timeout: float | None = None) -> bool:
        """Wait for a client (Win32: ConnectNamedPipe).

        Peers whose credentials the pipe's security refuses are closed before a byte
        of their data is read, and the wait goes on.

        Args:
            timeout: seconds; None waits forever.

        Returns:
            True if a client had already connected before this call (the case Windows
            reports as ERROR_PIPE_CONNECTED), False if it came during the wait.

        Raises:
            PipeListening: (536) PIPE_NOWAIT and no client is there.
            NoData: (232) the previous client closed and the instance was not
                disconnected yet.
            SemTimeout: (121) no client within ``timeout``.
            OperationAborted: cancelled with :meth:`cancel_io`.
        """
        self._check_open()
        timeout = seconds(timeout, "timeout")
        if self._state is _State.CONNECTED:
            if self._peer_gone() and self._has_client:
                raise W.NoData(f"{self.name}: the client has closed; call disconnect() first")
            return True
        if self._state is _State.DISCONNECTED:
            self._listen()
        assert self._listener is not None
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        poller.register(self._cancel_r, select.POLLIN)
        already = bool(poller.poll(0)) and not self._cancel_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._begin_wait()
        try:
            return self._connect_loop(poller, already, deadline, timeout)
        finally:
            self._waiting -= 1

    def _connect_loop(
        self, poller: Any, already: bool, deadline: float | None, timeout: float | None
    ) -> bool:
        while True:
            if self.nowait:
                events = poller.poll(0)
                if not events:
                    raise W.PipeListening(f"{self.name}: no client has connected (PIPE_NOWAIT)")
            else:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = poller.poll(None if remaining is None else remaining * 1000)
            if any(fd == self._cancel_r for fd, _ in events):
                self._drain_cancel()
                raise W.OperationAborted(f"{self.name}: ConnectNamedPipe was cancelled")
            if not events:
                if deadline is not None and time.monotonic() >= deadline:
                    raise W.SemTimeout(f"{self.name}: no client within {timeout} s")
                continue
            conn = self._take_client()
            if conn is not None:
                self._attach(conn)
                return already
            already = False
            self._listen()
            poller = select.poll()
            assert self._listener is not None
            poller.register(self._listener, select.POLLIN)
            poller.register(self._cancel_r, select.POLLIN)

    def _cancel_pending(self) -> bool:
        p = select.poll()
        p.register(self._cancel_r, select.POLLIN)
        return bool(p.poll(0))

    def _take_client(self) -> socket.socket | None:
        """Stop listening, accept the queued client, and vet it; None if refused."""
        listener = self._listener
        assert listener is not None
        try:
            listener.shutdown(socket.SHUT_RD)  # no one else may queue behind this client
        except OSError:
            pass
        listener.setblocking(False)
        try:
            conn, addr = listener.accept()
        except BlockingIOError:
            conn = None
        except OSError as exc:
            self._stop_listening()
            raise W.WinIPCError(f"{self.name}: accept failed: {exc}", winerror=W.ERROR_BROKEN_PIPE) from None
        self._stop_listening()
        if conn is None:
            return None
        conn.setblocking(True)
        cred = B.peer_credentials(conn)
        if _remote.is_marker(addr):  # a remote client our intake vetted for this instance
            claimed = _remote.claim(addr, cred.pid)
            if claimed is None:
                conn.close()
                return None
            self._pending_remote = claimed
            return conn
        if not self._security.check(self._owner, cred.uid, cred.gid, self._wanted_rights()):
            conn.close()  # refused before reading a byte
            return None
        if self._fast_ok and _fast.is_offer(addr):
            fd = -1
            try:
                fd = _fast.receive_offer(conn)
                ring = _fast.endpoint(fd, 0, conn, self.max_message_size)
            except W.InvalidData:
                if fd >= 0:
                    os.close(fd)
                conn.close()  # no region, or a hostile or broken one: not served
                return None
            self._offered = (fd, ring)
        return conn

    def _attach(self, conn: socket.socket) -> None:
        old = self._sock
        self._sock = conn
        old.close()
        if self.out_buffer_size:
            try:  # only ever raise the system default
                current = conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                if self.out_buffer_size > current:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.out_buffer_size)
            except OSError:
                pass
        if not self.can_read:
            conn.shutdown(socket.SHUT_RD)
        if not self.can_write:
            conn.shutdown(socket.SHUT_WR)
        self._rbuf.clear()
        self._in_msg = False
        self._msg_left = 0
        self._eof = False
        offered, self._offered = self._offered, None
        if offered is not None:
            self._attach_ring(offered[0], 0, offered[1])
        claimed, self._pending_remote = self._pending_remote, None
        self.remote, self._remote_pump = claimed if claimed is not None else (None, None)
        self._has_client = True
        self._state = _State.CONNECTED

    def _check_read(self) -> None:
        super()._check_read()
        self._require_client()

    def _check_write(self) -> None:
        super()._check_write()
        self._require_client()

    def _require_client(self) -> None:
        if self._state is not _State.CONNECTED:
            if self._state is _State.LISTENING:
                raise W.PipeListening(f"{self.name}: waiting for a client; call connect() first")
            raise W.PipeNotConnected(f"{self.name}: no client is connected")

    @property
    def client_pid(self) -> int:
        """The connected client's process id (Win32: GetNamedPipeClientProcessId).

        A remote client's is the one it reported.
        """
        self._require_client()
        return self.peer.pid

    @property
    def client_computer_name(self) -> str:
        """A remote client's computer name, as it sent it (Win32: GetNamedPipeClientComputerName).

        Raises:
            PipeLocal: (229) the client is on this machine.
            PipeNotConnected / PipeListening: no client.
        """
        self._require_client()
        if self.remote is None:
            raise W.PipeLocal(f"{self.name}: the client is on this machine")
        return str(self.remote.computer_name)

    def disconnect(self) -> None:
        """Drop the client (Win32: DisconnectNamedPipe).

        Data not yet read by either side is discarded; the client's next read or write
        fails with ERROR_PIPE_NOT_CONNECTED. Call :meth:`connect` to serve the next.
        """
        self._check_open()
        if self._state is _State.LISTENING:
            self._stop_listening()
        elif self._state is _State.CONNECTED:
            try:
                # room for the mark even when the client left our send buffer full
                size = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)  # doubles it
                self._sock.send(b"D", socket.MSG_OOB | socket.MSG_DONTWAIT)
            except OSError:
                pass
            try:
                self._detach_ring()  # after the mark: the woken client finds it
            except Exception:
                pass
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._rbuf.clear()
        self.remote = self._remote_pump = None
        self._has_client = False
        self._state = _State.DISCONNECTED

    def _close(self) -> None:
        try:
            if self._registered:
                self._registered = False
                _remote.unregister(self, self._oname)
            self._stop_listening()
            super()._close()
        finally:
            self._ref.release()

    def _export(self) -> tuple[list[int], dict[str, Any]]:
        raise W.NotSupported("a pipe instance stays in the process that created it; "
                             "duplicate a client connection instead")


def _access_for(open_mode: OpenMode, read: bool, write: bool, oname: ObjectName) -> None:
    if read and not open_mode & OpenMode.OUTBOUND:
        raise W.AccessDenied(f"{oname.display} is inbound (clients may only write); open it for writing only")
    if write and not open_mode & OpenMode.INBOUND:
        raise W.AccessDenied(f"{oname.display} is outbound (clients may only read); open it for reading only")


def connect(
    name: str,
    *,
    read: bool = True,
    write: bool = True,
    read_message: bool = False,
    nowait: bool = False,
    expect_server_uid: int | None = None,
    max_message_size: int = MAX_MESSAGE_DEFAULT,
    fast_path: bool | None = None,
    tls: ssl.SSLContext | None = None,
) -> PipeConnection:
    """Open the client end of a named pipe (Win32: CreateFile on ``\\\\.\\pipe\\name``).

    ``\\\\server\\pipe\\name`` reaches a pipe on another machine over TLS, through that
    machine's pipe port (docs/pipes.md, "Remote pipes"); the connection then works as a
    local one, except that handles cannot be passed and it cannot be duplicated.

    Args:
        name: the pipe's name.
        read / write: the access wanted (GENERIC_READ / GENERIC_WRITE); must fit the
            pipe's direction.
        read_message: start in message-read mode (Windows starts in byte-read mode and
            needs SetNamedPipeHandleState; this saves the call).
        nowait: PIPE_NOWAIT for this handle.
        expect_server_uid: refuse a server not running as this user id.
        max_message_size: largest message (bytes) accepted from the server.
        fast_path: None or True (default None) moves payloads through shared memory
            when the server is a local winipc process that speaks it, the extension is
            built and ``WINIPC_FASTPATH`` is not 0; False never does. The API is the
            same either way; ``conn.fast_path`` says which was taken.
        tls: for a remote pipe: the client-side :class:`ssl.SSLContext` (with this
            client's certificate loaded, since servers admit remote clients by it). The
            default verifies the server against the system's CAs and presents no
            certificate. Unused for local pipes.

    Returns:
        The connected :class:`PipeConnection` (``.remote`` describes a remote server).

    Raises:
        BadNetPath: (53) a remote pipe: nothing answers on that host's pipe port.
        FileNotFound: (2) no such pipe.
        PipeBusy: (231) every instance is busy; see :func:`wait_named_pipe`.
        AccessDenied: (5) the pipe's security or direction refuses us, or the server is
            not ``expect_server_uid``.
    """
    oname = pipe_name(name)
    if not (read or write):
        raise W.InvalidParameter("open a pipe for read, write, or both")
    if not oname.is_local:
        return _connect_remote(oname, read, write, read_message, nowait, expect_server_uid, max_message_size, tls)
    path, rec = namespace.lookup(oname)
    mode = OpenMode(int(rec.attrs["open_mode"]))
    _access_for(mode, read, write, oname)
    sec = rec.security_attributes
    wanted = Access.CONNECT | (Access.READ if read else 0) | (Access.WRITE if write else 0)
    me = B.uid()
    if expect_server_uid is not None and rec.owner != expect_server_uid:
        raise W.AccessDenied(
            f"{oname.display}: the pipe belongs to uid {rec.owner}, not the expected {expect_server_uid}"
        )
    if rec.owner != me and not sec.check(rec.owner, me, os.getegid(), Access(wanted)):
        raise W.AccessDenied(f"{oname.display}: the pipe's security does not let uid {me} connect")
    sock = _connect_any(path, oname, _fast.enabled(fast_path))
    ring_fd = -1
    try:
        cred = B.peer_credentials(sock)
        if expect_server_uid is not None and cred.uid != expect_server_uid:
            raise W.AccessDenied(
                f"{oname.display}: server runs as uid {cred.uid}, not the expected {expect_server_uid}"
            )
        if cred.uid != rec.owner:
            raise W.AccessDenied(f"{oname.display}: the listening process is not the pipe's owner")
        if not read:
            sock.shutdown(socket.SHUT_RD)
        if _fast.is_offer(sock.getsockname()):
            ring_fd = _fast.make_region()
            try:
                _fast.send_offer(sock, ring_fd)
            except OSError as exc:
                raise translate(exc, "connect", oname.display) from None
    except BaseException:
        if ring_fd >= 0:
            os.close(ring_fd)
        sock.close()
        raise
    conn = PipeConnection(
        sock,
        name=oname.display,
        message_type=bool(rec.attrs["message"]),
        can_read=read,
        can_write=write,
        is_client=True,
        max_message_size=max_message_size,
        ring_fd=ring_fd,
    )
    if read_message:
        conn.set_read_mode(True)
    conn.nowait = nowait
    return conn


def _connect_remote(oname: ObjectName, read: bool, write: bool, read_message: bool, nowait: bool,
                    expect_server_uid: int | None, max_message_size: int, tls: ssl.SSLContext | None) -> PipeConnection:
    if oname.server == "*":
        raise W.InvalidName(f"{oname.raw}: pipes have no broadcast form (that is for mailslots)")
    if expect_server_uid is not None:
        raise W.InvalidParameter("expect_server_uid: a remote server is identified by its TLS certificate, not a uid")
    opened = _remote.open_remote(oname, read=read, write=write, tls=tls)
    sock = opened.sock
    if not read:
        sock.shutdown(socket.SHUT_RD)
    conn = PipeConnection(
        sock,
        name=oname.display,
        message_type=opened.message_type,
        can_read=read,
        can_write=write,
        is_client=True,
        max_message_size=max_message_size,
    )
    conn.remote = opened.peer
    conn._remote_pump = opened.pump
    if read_message:
        conn.set_read_mode(True)
    conn.nowait = nowait
    return conn


def _instance_sockets(path: str) -> list[str]:
    return sorted(os.path.join(path, f) for f in B.list_dir(path) if f.endswith(".sock"))


def _connect_any(path: str, oname: ObjectName, fast: bool) -> socket.socket:
    denied = False
    for sock_path in _instance_sockets(path):
        try:
            offer = fast and sock_path.endswith(_fast.SLOT_SUFFIX)
            return B.connect_unix(sock_path, sock=_fast.client_socket() if offer else None)
        except (W.PipeBusy, W.FileNotFound):
            continue
        except W.AccessDenied:
            denied = True
    if denied:
        raise W.AccessDenied(f"{oname.display}: the pipe's file modes refuse us")
    raise W.PipeBusy(f"{oname.display}: all pipe instances are busy")


def wait_named_pipe(name: str, timeout: float | None = USE_DEFAULT_WAIT) -> None:
    """Wait until an instance of the pipe is listening (Win32: WaitNamedPipe).

    A connect right after may still find it busy if another client was faster. For a
    remote pipe the other machine's pipe port answers (no TLS: it says only whether an
    instance that takes remote clients is listening).

    Args:
        name: the pipe's name.
        timeout: seconds; None waits forever; ``USE_DEFAULT_WAIT`` takes the pipe's
            default time-out.

    Raises:
        FileNotFound: (2) no such pipe, at once.
        SemTimeout: (121) no instance listened within the time-out (never early).
        BadNetPath: (53) a remote pipe: nothing answers on that host's pipe port.
        AccessDenied: (5) a remote pipe that takes no remote clients.
    """
    oname = pipe_name(name)
    if not oname.is_local:
        if timeout is USE_DEFAULT_WAIT:
            _remote.wait_remote(oname, None, True)
        else:
            _remote.wait_remote(oname, seconds(timeout, "timeout"), False)
        return
    path, rec = namespace.lookup(oname)
    limit = float(rec.attrs["default_timeout"]) if timeout is USE_DEFAULT_WAIT else seconds(timeout, "timeout")
    deadline = None if limit is None else time.monotonic() + limit
    delay = 0.0005
    while True:
        if _instance_sockets(path):
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise W.SemTimeout(f"{oname.display}: no instance became free within {limit} s")
        if not os.path.isdir(path):
            raise W.FileNotFound(f"{oname.display} no longer exists")
        pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        delay = min(delay * 2, 0.02)


def call_named_pipe(name: str, data: bytes, size: int = 65536, timeout: float | None = USE_DEFAULT_WAIT,
                    *, tls: ssl.SSLContext | None = None) -> bytes:
    """Connect, write one message, read the reply, close (Win32: CallNamedPipe).

    ``tls``: for a remote pipe, as :func:`connect`'s.

    Raises:
        MoreData: the reply is longer than ``size`` (``.data`` holds its first part).
        and what :func:`wait_named_pipe`, :func:`connect` and ``transact`` raise.
    """
    for attempt in range(2):
        try:
            conn = connect(name, read_message=True, tls=tls)
            break
        except W.PipeBusy:
            if attempt:
                raise
            wait_named_pipe(name, timeout)
    with conn:
        return conn.transact(data, size)
