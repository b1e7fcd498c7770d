"""Mailslot writers: CreateFile on a mailslot name, then WriteFile.

A local writer is a connection to the mailslot's ``slot.sock``; each write is one packet
(``_local``). A remote writer sends datagrams (``_wire.mailslot``) over UDP, or over NATS
when a NATS server is configured (``_network``).
"""

from __future__ import annotations

import array
import os
import socket
import threading
import time
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core import namespace
from winipc._core.handles import Handle
from winipc._core.names import ObjectName, mailslot_name
from winipc._core.security import Access
from winipc._wire import mailslot as wire
from winipc.mailslots import _local as L
from winipc.mailslots._network import Route, route

_TARGETS_TTL = 5.0  # seconds a writer keeps the interfaces' broadcast addresses
_SNDBUF = 4 * 1024 * 1024  # bytes asked for a local writer's socket (the kernel caps it at wmem_max)


def _as_bytes(data: Any) -> bytes | memoryview:
    if isinstance(data, str):
        raise W.InvalidParameter("data must be bytes-like, not str (encode it first)")
    try:
        view = memoryview(data)
    except TypeError:
        raise W.InvalidParameter(f"data must be bytes-like, not {type(data).__name__}") from None
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


class MailslotWriter(Handle):
    """A handle that writes to a mailslot (Win32: CreateFile on a mailslot name + WriteFile).

    Get one with :func:`open_mailslot`. Writes never merge or split messages; each
    writer's messages arrive in the order it wrote them.

    Attributes:
        name: the name as opened (``\\\\.\\mailslot\\x``, ``\\\\host\\mailslot\\x``,
            ``\\\\*\\mailslot\\x``).
        transport: ``"local"``, ``"udp"`` or ``"nats"``.
        max_message_size: the largest message this handle may write, in bytes (the
            mailslot's maximum locally; 424 for broadcasts; the UDP or NATS limit for a
            host).
    """

    kind = "mailslot-writer"

    def __init__(self, oname: ObjectName, transport: str, limit: int) -> None:
        self._closed = True
        self._oname = oname
        self.transport = transport
        self.max_message_size = limit
        self._sock: socket.socket | None = None
        self._route: Route | None = None
        self._link: Any = None
        self._subject = ""
        self._lock = threading.Lock()
        self._targets: list[str] | None = None
        self._targets_at = 0.0

    @property
    def name(self) -> str:
        return self._oname.display

    def _fileno(self) -> int:
        if self._sock is None:
            raise W.NotSupported(f"{self.name}: a {self.transport} writer has no descriptor")
        return self._sock.fileno()

    # ------------------------------------------------------------------ write
    def write(self, data: Any) -> int:
        """Send one message (Win32: WriteFile on the mailslot handle).

        Args:
            data: bytes-like; may be empty (a zero-length message).

        Returns:
            The number of bytes written (the message's length).

        Raises:
            InvalidParameter: (87) the message is longer than :attr:`max_message_size`;
                nothing is sent.
            FileNotFound: (2) a local mailslot that was closed since this handle opened.
            AccessDenied: (5) the mailslot's server refused this writer.
            BadNetPath: (53) the NATS server cannot be reached.
            InvalidHandle: (6) the handle is closed.
        """
        self._check_open()
        payload = _as_bytes(data)
        n = len(payload)
        if n > self.max_message_size:
            raise W.InvalidParameter(
                f"message is {n} bytes; {self.name} takes at most {self.max_message_size} bytes "
                f"({self._limit_reason()}); nothing was sent"
            )
        if self.transport == "local":
            self._write_local(payload)
        else:
            self._write_network(bytes(payload))
        return n

    def _limit_reason(self) -> str:
        if self.transport == "local":
            return "the mailslot's max_message_size"
        if self._route is not None and self._route.broadcast:
            return f"Windows' limit for broadcasts is {wire.MAX_BROADCAST_MESSAGE} bytes"
        return f"the {self.transport.upper()} datagram limit"

    def _write_local(self, payload: bytes | memoryview) -> None:
        sock = self._sock
        assert sock is not None
        n = len(payload)
        stamp = time.monotonic_ns()
        try:
            if n <= L.INLINE_MAX:
                sock.sendmsg([L.HEADER.pack(L.MAGIC, L.VERSION, L.KIND_INLINE, n, stamp), payload])
                return
            fd = B.memfd(n, "winipc-mailslot-message")
            try:
                B.pwrite(fd, bytes(payload), 0)
                sock.sendmsg(
                    [L.HEADER.pack(L.MAGIC, L.VERSION, L.KIND_MEMFD, n, stamp)],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())],
                )
            finally:
                B.close_fd(fd)
        except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
            raise self._why_gone() from None
        except OSError as exc:
            raise W.from_winerror(W.ERROR_INVALID_PARAMETER, f"{self.name}: write failed: {exc}", "WriteFile") from None

    def _why_gone(self) -> W.WinIPCError:
        sock = self._sock
        assert sock is not None
        note = b""
        sock.setblocking(False)
        for _ in range(2):  # the first recv may report the reset; the refusal comes after it
            try:
                note = sock.recv(64)
                break
            except ConnectionResetError:
                continue
            except OSError:
                break
        if note == L.REFUSED:
            return W.AccessDenied(f"{self.name}: the mailslot's security refused this writer")
        return W.FileNotFound(f"{self.name}: the mailslot was closed by its server")

    def _write_network(self, payload: bytes) -> None:
        r = self._route
        assert r is not None
        datagram = wire.encode(
            wire.Datagram(
                self._oname.name, payload, broadcast=r.broadcast, domain=r.domain,
                sender_host=B.host_name(), sender_pid=os.getpid(),
            )
        )
        if self.transport == "nats":
            self._link.publish(self._subject, datagram)
            if not r.broadcast and len(payload) <= wire.MAX_BROADCAST_MESSAGE:
                # NATS has no name service to say whether \\X is a host or a domain: the
                # message also goes to domain X's mailslots, as a broadcast (docs/mailslots.md)
                self._link.publish(
                    wire.nats_subject(self._oname.name, domain=r.host),
                    wire.encode(wire.Datagram(
                        self._oname.name, payload, broadcast=True, domain=r.host,
                        sender_host=B.host_name(), sender_pid=os.getpid(),
                    )),
                )
            return
        sock = self._sock
        assert sock is not None
        port = wire.udp_port(self._oname.name)
        targets = self._broadcast_targets() if r.broadcast else [r.address or ""]
        with self._lock:
            for addr in targets:
                try:
                    sock.sendto(datagram, (addr, port))
                except OSError as exc:
                    if not r.broadcast:
                        raise W.BadNetPath(f"{self.name}: cannot send to {r.host} ({addr}): {exc}") from None
        # a broadcast with no interface to go out of reaches nobody: best effort, as on Windows

    def _broadcast_targets(self) -> list[str]:
        """The interfaces' broadcast addresses, looked up again at most every few seconds."""
        now = time.monotonic()
        if self._targets is None or now - self._targets_at > _TARGETS_TTL:
            self._targets = B.broadcast_addresses()
            self._targets_at = now
        return self._targets

    # ------------------------------------------------------------------ close
    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._link is not None:
            self._link.release()
            self._link = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MailslotWriter {self.name} via {self.transport} {state}>"


def open_mailslot(name: str, *, nats_url: str | None = None) -> MailslotWriter:
    """Open a mailslot for writing (Win32: CreateFile(name, GENERIC_WRITE, FILE_SHARE_READ)).

    Args:
        name: ``\\\\.\\mailslot\\x`` (this machine), ``\\\\host\\mailslot\\x`` (one host),
            ``\\\\*\\mailslot\\x`` or ``\\\\DOMAIN\\mailslot\\x`` (broadcast), or a bare ``x``.
        nats_url: send remote messages through this NATS server (``nats://host:port``);
            default ``WINIPC_NATS_URL``; without one, remote messages go over UDP.

    Returns:
        A :class:`MailslotWriter`. Remote names open without contacting anyone, as on
        Windows: whether a mailslot listens there is never known.

    Raises:
        FileNotFound: (2) no local mailslot has the name.
        AccessDenied: (5) the mailslot's security refuses this user, or the name is squatted.
        InvalidName: (123) a malformed name.
        NotSupported: (50) a NATS URL but no nats-py (install ``winipc[nats]``).
        BadNetPath: (53) the NATS server cannot be reached.
    """
    oname = mailslot_name(name)
    if oname.is_local:
        return _open_local(oname)
    from winipc._backends import nats as N

    url = N.nats_url(nats_url)
    r = route(oname, over_nats=url is not None)
    limit = wire.max_message(oname.name, broadcast=r.broadcast, domain=r.domain, sender_host=B.host_name())
    writer = MailslotWriter(oname, "nats" if url else "udp", limit)
    writer._route = r
    if url is not None:
        writer._link = N.NatsLink.acquire(url)
        if r.broadcast:
            writer._subject = wire.nats_subject(oname.name, domain=r.domain) if r.domain else wire.nats_subject(oname.name)
        else:
            writer._subject = wire.nats_subject(oname.name, host=r.host)
    else:
        writer._sock = B.udp_socket(broadcast=r.broadcast)
    writer._closed = False
    return writer


def _open_local(oname: ObjectName) -> MailslotWriter:
    path, rec = namespace.lookup(oname)
    if rec.type != "mailslot":
        raise W.InvalidHandle(f"{oname.display} is a {rec.type}, not a mailslot")
    me = B.uid()
    if not rec.security_attributes.check(rec.owner, me, os.getegid(), Access.WRITE):
        raise W.AccessDenied(f"{oname.display}: the mailslot's security does not let uid {me} write")
    try:
        sock = B.connect_unix(os.path.join(path, L.SOCKET_NAME), kind=socket.SOCK_SEQPACKET)
    except W.PipeBusy:
        raise W.FileNotFound(f"{oname.display} does not exist (its server is gone)") from None
    try:
        cred = B.peer_credentials(sock)
        if cred.uid != rec.owner:
            raise W.AccessDenied(f"{oname.display}: the listening process is not the mailslot's owner")
    except BaseException:
        sock.close()
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)  # room for unread messages
    except OSError:
        pass
    limit = L.effective_limit(int(rec.attrs.get("max_message_size", 0)))
    writer = MailslotWriter(oname, "local", limit)
    writer._sock = sock
    writer._closed = False
    return writer


def write_mailslot(name: str, data: Any, *, nats_url: str | None = None) -> int:
    """Open, write one message, close. Args, returns and errors as :func:`open_mailslot`
    and :meth:`MailslotWriter.write`."""
    w = open_mailslot(name, nats_url=nats_url)
    try:
        return w.write(data)
    finally:
        w.close()
