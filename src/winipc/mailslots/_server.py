"""The mailslot server: CreateMailslot, ReadFile, GetMailslotInfo, SetMailslotInfo.

The server listens on ``slot.sock`` (SOCK_SEQPACKET, see ``_local``); every writer handle
is a connection whose packets wait in the kernel until the server reads. A read takes in
everything waiting (new writers, their packets, network datagrams) into one queue ordered
by the writers' send times, and hands out its head; so ``info()`` can count the messages
and size the next one exactly, as GetMailslotInfo does.

With ``accept_network=True`` the mailslot also takes datagrams from other hosts: on the
UDP port of its name (``_wire.mailslot.udp_port``) and, when a NATS server is configured,
on the mailslot's NATS subjects.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import socket
import struct
import threading
import time
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import namespace
from winipc._core.handles import Handle
from winipc._core.names import fold, mailslot_name
from winipc._core.security import Access, SecurityAttributes
from winipc._core.timeouts import seconds
from winipc._wire import mailslot as wire
from winipc.mailslots import _local as L
from winipc.mailslots._network import domain_name, nats_subjects

log = logging.getLogger("winipc.mailslots")

_RECV_BUF = L.HEADER.size + L.INLINE_MAX
_ANC_BUF = socket.CMSG_SPACE(4 * 4)
_UDP_RCVBUF = 4 * 1024 * 1024  # bytes asked for the network socket's receive buffer
_INJECT_BUF = 4 * 1024 * 1024  # bytes the NATS bridge may hold for a server not reading
_PUMP_ROUNDS = 4


class _UseDefault:
    def __repr__(self) -> str:
        return "the mailslot's read timeout"


_DEFAULT: Any = _UseDefault()



class _Writer:
    """One connected writer handle, as the server sees it."""

    __slots__ = ("pid", "serial", "sock", "uid")

    def __init__(self, sock: socket.socket, pid: int, uid: int, serial: int) -> None:
        self.sock = sock
        self.pid = pid
        self.uid = uid
        self.serial = serial


class Mailslot(Handle):
    """A mailslot, on the server side (Win32: CreateMailslot); only its creator reads it.

    Args:
        name: ``\\\\.\\mailslot\\name`` (pseudo-directories allowed:
            ``\\\\.\\mailslot\\app\\events``) or a bare ``name``.
        max_message_size: the largest message writers may send, in bytes; 0 = any size
            (up to 256 MiB locally, the UDP limit across machines). 0..2**32-1.
        read_timeout: seconds a read waits for a message: 0 returns at once, None waits
            forever (MAILSLOT_WAIT_FOREVER).
        security: who may write; owner only by default.
        accept_network: also take messages sent from other hosts (UDP unicast to this
            host, broadcasts to ``*`` or this host's domain, and NATS when configured).
            Off by default, as remote mailslots are off by default on Windows 11.
        nats_url: ``nats://host:port`` for network mode; default ``WINIPC_NATS_URL``.

    Raises:
        InvalidName: (123) a bad name, or not a name on this machine.
        InvalidParameter: (87) an argument out of range (named in the message).
        AlreadyExists: (183) a mailslot of that name exists already.
        AccessDenied: (5) the name is squatted, or the UDP port is held by another program.
    """

    kind = "mailslot"

    def __init__(
        self,
        name: str,
        max_message_size: int = 0,
        read_timeout: float | None = None,
        *,
        security: SecurityAttributes | None = None,
        accept_network: bool = False,
        nats_url: str | None = None,
    ) -> None:
        self._closed = True
        oname = mailslot_name(name)
        if not oname.is_local:
            raise W.InvalidName(
                f"{oname.raw}: a mailslot is created on this machine (\\\\.\\mailslot\\name); "
                "remote and broadcast names are for writers"
            )
        if isinstance(max_message_size, bool) or not isinstance(max_message_size, int) or not 0 <= max_message_size <= L.MAX_DWORD:
            raise W.InvalidParameter(f"max_message_size must be 0..{L.MAX_DWORD} bytes (0 = any size), not {max_message_size!r}")
        self._read_timeout = seconds(read_timeout, "read_timeout")
        sec = security if security is not None else SecurityAttributes()
        listeners: list[socket.socket] = []

        def populate(tmp: str) -> None:
            listeners.append(
                B.listen_unix(tmp, L.SOCKET_NAME, sec.file_mode(socket_file=True),
                              backlog=socket.SOMAXCONN, kind=socket.SOCK_SEQPACKET)
            )

        attrs = {"max_message_size": max_message_size, "accept_network": bool(accept_network), "wire": L.VERSION}
        try:
            ref, created = namespace.create(oname, "mailslot", attrs, sec, populate=populate)
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
        if not created:
            for sock in listeners:
                sock.close()
            ref.release()
            raise W.AlreadyExists(f"{oname.display} exists already (CreateMailslot does not open an existing mailslot)")
        self._listener = listeners[-1]
        for sock in listeners[:-1]:
            sock.close()
        self._ref = ref
        self._oname = oname
        self._security = sec
        self._owner = ref.record.owner
        self.max_message_size = max_message_size
        self._limit = L.effective_limit(max_message_size)
        self._lock = threading.RLock()
        self._queue: list[tuple[int, int, int, L.MailslotMessage]] = []
        self._seq = 0
        self._serials = 0
        self._writers: dict[int, _Writer] = {}
        self._ep = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # close() wakes readers
        self._listener.setblocking(False)
        self._ep.register(self._listener.fileno(), select.EPOLLIN)
        self._udp: socket.socket | None = None
        self._inject_r: socket.socket | None = None
        self._inject_w: socket.socket | None = None
        self._subscriptions: list[Any] = []
        self._link: Any = None
        #: network datagrams dropped: malformed, for another name or domain, over the maximum,
        #: or arriving while the NATS bridge's buffer was full
        self.dropped = 0
        self.accept_network = bool(accept_network)
        self._closed = False
        try:
            if accept_network:
                self._open_network(nats_url)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """The canonical name, ``\\\\.\\mailslot\\name``."""
        return self._oname.display

    @property
    def path(self) -> str:
        """The mailslot's directory on the file system."""
        return self._ref.path

    @property
    def socket_path(self) -> str:
        """The socket local writers connect to."""
        return os.path.join(self._ref.path, L.SOCKET_NAME)

    @property
    def read_timeout(self) -> float | None:
        """Seconds a read waits; None = forever."""
        return self._read_timeout

    def set_read_timeout(self, read_timeout: float | None) -> None:
        """Change the read timeout (Win32: SetMailslotInfo).

        Args:
            read_timeout: seconds; 0 returns at once, None waits forever.

        Raises:
            InvalidParameter: a negative or non-numeric timeout.
        """
        self._check_open()
        self._read_timeout = seconds(read_timeout, "read_timeout")

    # ------------------------------------------------------------------ network
    def _open_network(self, nats_url: str | None) -> None:
        from winipc._backends import nats as N

        self._udp = B.udp_socket(wire.udp_port(self._oname.name))
        try:  # a burst of datagrams waits here for the next read (the kernel caps it at rmem_max)
            self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
        except OSError:
            pass
        self._udp.setblocking(False)
        self._ep.register(self._udp.fileno(), select.EPOLLIN)
        url = N.nats_url(nats_url)
        if url is None:
            return
        self._inject_r, self._inject_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._inject_w.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _INJECT_BUF)
        self._inject_w.setblocking(False)
        self._inject_r.setblocking(False)
        self._ep.register(self._inject_r.fileno(), select.EPOLLIN)
        self._link = N.NatsLink.acquire(url)
        for subject in nats_subjects(self._oname.name):
            self._subscriptions.append(self._link.subscribe(subject, self._from_nats))

    def _from_nats(self, data: bytes) -> None:
        """On the NATS link's thread: hand the datagram to the reader without blocking."""
        w = self._inject_w
        if w is None:
            return
        try:
            w.send(data)
        except OSError:
            self.dropped += 1

    def _accept_datagram(self, raw: bytes, transport: str, address: tuple[str, int] | None) -> None:
        try:
            d = wire.decode(raw)
        except W.InvalidData as exc:
            self.dropped += 1
            log.debug("%s: dropped a malformed datagram from %s: %s", self.name, address, exc)
            return
        if fold(d.name) != fold(self._oname.name):
            self.dropped += 1  # another name sharing the port (crc collision)
            return
        if d.broadcast and d.domain and fold(d.domain) != fold(domain_name()):
            self.dropped += 1  # a broadcast to another domain
            return
        if len(d.payload) > self._limit:
            self.dropped += 1
            return
        msg = L.MailslotMessage(d.payload, d.sender_pid, None, d.sender_host or None, address, transport)
        self._push(time.monotonic_ns(), 0, msg)

    # ------------------------------------------------------------------ intake
    def _push(self, stamp: int, serial: int, msg: L.MailslotMessage) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (stamp, serial, self._seq, msg))

    def _accept_writers(self) -> None:
        while True:
            try:
                conn, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: accept failed: %s", self.name, exc)
                return
            try:
                cred = B.peer_credentials(conn)
            except W.WinIPCError:  # gone already
                conn.close()
                continue
            if not self._security.check(self._owner, cred.uid, cred.gid, Access.WRITE):
                try:
                    conn.send(L.REFUSED)
                except OSError:
                    pass
                conn.close()
                continue
            conn.setblocking(False)
            self._serials += 1
            w = _Writer(conn, cred.pid, cred.uid, self._serials)
            self._writers[conn.fileno()] = w
            self._ep.register(conn.fileno(), select.EPOLLIN)
            self._drain_writer(w)

    def _drop_writer(self, w: _Writer) -> None:
        fd = w.sock.fileno()
        self._writers.pop(fd, None)
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass
        w.sock.close()

    def _drain_writer(self, w: _Writer) -> None:
        while True:
            try:
                data, anc, flags, _addr = w.sock.recvmsg(_RECV_BUF, _ANC_BUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop_writer(w)
                return
            fds = _fds_of(anc)
            try:
                if not data and not fds:
                    self._drop_writer(w)  # the writer closed its handle
                    return
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise W.InvalidData(f"packet over {_RECV_BUF} bytes or with too many descriptors")
                stamp, payload = self._unpack(data, fds)
            except W.WinIPCError as exc:  # InvalidData, or the memfd could not be read
                log.warning("%s: writer pid %d broke the protocol (%s); dropped it", self.name, w.pid, exc)
                self._drop_writer(w)
                return
            finally:
                for fd in fds:
                    B.close_fd(fd)
            self._push(stamp, w.serial, L.MailslotMessage(payload, w.pid, w.uid))

    def _unpack(self, data: bytes, fds: list[int]) -> tuple[int, bytes]:
        if len(data) < L.HEADER.size:
            raise W.InvalidData(f"packet of {len(data)} bytes is shorter than the {L.HEADER.size}-byte header")
        magic, version, kind, length, stamp = L.HEADER.unpack_from(data)
        if magic != L.MAGIC or version != L.VERSION:
            raise W.InvalidData(f"bad magic {magic!r} or version {version}")
        if length > self._limit:
            raise W.InvalidData(f"message of {length} bytes; the maximum is {self._limit}")
        if kind == L.KIND_INLINE:
            if fds or len(data) != L.HEADER.size + length:
                raise W.InvalidData("inline packet length does not match its header")
            return stamp, data[L.HEADER.size:]
        if kind == L.KIND_MEMFD:
            if len(fds) != 1 or len(data) != L.HEADER.size:
                raise W.InvalidData("memfd packet without exactly one descriptor")
            size = B.regular_file_size(fds[0])
            if size is None:
                raise W.InvalidData("the descriptor passed with the packet is not a memory file")
            if size < length:
                raise W.InvalidData(f"memfd holds fewer than the announced {length} bytes")
            payload = B.pread(fds[0], length, 0)
            if len(payload) != length:
                raise W.InvalidData("short read from the message's memfd")
            return stamp, payload
        raise W.InvalidData(f"unknown packet kind {kind}")

    def _drain_datagrams(self, sock: socket.socket, transport: str) -> None:
        while True:
            try:
                raw, addr = sock.recvfrom(wire.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%s: %s receive failed: %s", self.name, transport, exc)
                return
            address = (str(addr[0]), int(addr[1])) if transport == "udp" and isinstance(addr, tuple) else None
            self._accept_datagram(raw, transport, address)

    def _pump(self) -> None:
        """Take in whatever is waiting, without blocking."""
        for _ in range(_PUMP_ROUNDS):
            events = self._ep.poll(0)
            if not events:
                return
            for fd, _ev in events:
                if fd == self._listener.fileno():
                    self._accept_writers()
                elif self._udp is not None and fd == self._udp.fileno():
                    self._drain_datagrams(self._udp, "udp")
                elif self._inject_r is not None and fd == self._inject_r.fileno():
                    self._drain_datagrams(self._inject_r, "nats")
                else:
                    w = self._writers.get(fd)
                    if w is not None:
                        self._drain_writer(w)

    # ------------------------------------------------------------------ reading
    def read_message(self, size: int | None = None, timeout: float | None = _DEFAULT) -> L.MailslotMessage:
        """Read the next message with its sender (Win32: ReadFile on the mailslot handle).

        Args:
            size: the reader's buffer in bytes; None takes a message of any size.
            timeout: seconds to wait for a message; default the mailslot's read timeout;
                0 returns at once; None waits forever.

        Returns:
            :class:`MailslotMessage`.

        Raises:
            SemTimeout: (121) no message within the timeout.
            OperationAborted: (995) another thread closed the mailslot during the wait.
            InsufficientBuffer: (122) the next message is longer than ``size``; it stays
                queued.
            InvalidHandle: (6) the mailslot is closed.
        """
        self._check_open()
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise W.InvalidParameter(f"size must be bytes >= 0 or None, not {size!r}")
        wait = self._read_timeout if timeout is _DEFAULT else seconds(timeout, "timeout")
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            with self._lock:
                self._check_open()
                self._pump()
                if self._queue:
                    head = self._queue[0][3]
                    if size is not None and len(head.data) > size:
                        raise W.InsufficientBuffer(
                            f"{self.name}: the next message is {len(head.data)} bytes; the buffer is {size}"
                        )
                    heapq.heappop(self._queue)
                    return head
                fds = (self._ep.fileno(), self._wake_r)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise W.SemTimeout(f"{self.name}: no message within {wait} s")
            _sleep_until_readable(fds, left)
            if self._closed:
                raise W.OperationAborted(f"{self.name}: the mailslot was closed during the read")

    def read(self, size: int | None = None, timeout: float | None = _DEFAULT) -> bytes:
        """Read the next message (Win32: ReadFile on the mailslot handle).

        Args and errors as :meth:`read_message`.

        Returns:
            The message's bytes (a zero-length message gives ``b""``).
        """
        return self.read_message(size, timeout).data

    def info(self) -> L.MailslotInfo:
        """The mailslot's state (Win32: GetMailslotInfo).

        Returns:
            :class:`MailslotInfo` (max message size, next size or None, message count,
            read timeout).
        """
        self._check_open()
        with self._lock:
            self._pump()
            nxt = len(self._queue[0][3].data) if self._queue else None
            return L.MailslotInfo(self.max_message_size, nxt, len(self._queue), self._read_timeout)

    def __iter__(self) -> Any:
        """Messages as they come (each read waits with the mailslot's read timeout)."""
        while True:
            try:
                yield self.read()
            except W.SemTimeout:
                return

    # ------------------------------------------------------------------ waits
    def _fileno(self) -> int:
        return self._ep.fileno()

    _wait_exact = True

    def _wait_fd(self) -> int:
        self._check_open()
        return self._ep.fileno()

    def _wait_ready(self) -> bool:
        """For wait_any: signalled while a message is waiting."""
        with self._lock:
            if self._closed:
                return False
            self._pump()
            return bool(self._queue)

    # ------------------------------------------------------------------ close
    def _close(self) -> None:
        try:
            os.write(self._wake_w, b"x")  # a read blocked in another thread ends (995)
        except OSError:
            pass
        for sub in self._subscriptions:
            try:
                sub.close()
            except Exception:  # pragma: no cover - the link is going anyway
                pass
        self._subscriptions = []
        if self._link is not None:
            self._link.release()
            self._link = None
        with self._lock:
            for w in list(self._writers.values()):
                self._drop_writer(w)
            for sock in (self._udp, self._inject_r, self._inject_w):
                if sock is not None:
                    sock.close()
            self._inject_w = None
            B.unlink(self.socket_path)
            self._listener.close()
            self._ep.close()
            self._queue = []
        for fd in (self._wake_r, self._wake_w):
            B.close_fd(fd)
        self._ref.release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Mailslot {self._oname.display} {state}>"


def _fds_of(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(struct.unpack(f"{n}i", data[: n * 4]))
    return fds


def _sleep_until_readable(fds: tuple[int, ...], timeout: float | None) -> None:
    """Sleep until one of ``fds`` is readable or ``timeout`` seconds pass."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))

