"""The OS calls of winipc.messages (POSIX backend).

Everything in this module talks to the operating system and translates ``OSError`` to
``winipc.errors`` (through ``_backends.errors.translate``); ``winipc.messages`` calls only
these functions and ``winipc._backends.os_backend``.

* readiness: a poller (epoll on Linux, kqueue elsewhere) whose descriptor is itself
  waitable, and ``wait_readable`` over plain descriptors;
* the window's SOCK_SEQPACKET socket: non-blocking accept, send of one packet (with an
  optional descriptor), receive of one packet;
* WM_COPYDATA's memory: a memfd sealed against writes and resizes (Linux), an unlinked
  file elsewhere; the receiver's check of the seals and its read-only map;
* the small files of a window: its title (replaced atomically) and its hung stamp (mtime).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import secrets
import select
import socket
import struct
import sys
import tempfile
from typing import Any

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends.errors import translate

LINUX = sys.platform.startswith("linux")
_SEALS = (
    getattr(fcntl, "F_SEAL_SEAL", 0)
    | getattr(fcntl, "F_SEAL_SHRINK", 0)
    | getattr(fcntl, "F_SEAL_GROW", 0)
    | getattr(fcntl, "F_SEAL_WRITE", 0)
)
_NEEDED_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0) | getattr(fcntl, "F_SEAL_WRITE", 0)
_SNDBUF = 4 * 1024 * 1024
_ANC = socket.CMSG_SPACE(struct.calcsize("i"))
_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class Poller:
    """A set of descriptors watched for input; its own descriptor is readable when one is."""

    def __init__(self) -> None:
        self._ep: select.epoll | None = None
        self._kq: Any = None
        try:
            if LINUX:
                self._ep = select.epoll()
            else:  # pragma: no cover - macOS
                self._kq = getattr(select, "kqueue")()  # noqa: B009
        except OSError as exc:
            raise translate(exc, "create", "message queue poller") from None

    def fileno(self) -> int:
        if self._ep is not None:
            return self._ep.fileno()
        return int(self._kq.fileno())  # pragma: no cover - macOS

    def _kevent(self, fd: int, flag: str) -> Any:  # pragma: no cover - macOS
        return getattr(select, "kevent")(fd, getattr(select, "KQ_FILTER_READ"), getattr(select, flag))  # noqa: B009

    def register(self, fd: int) -> None:
        try:
            if self._ep is not None:
                self._ep.register(fd, select.EPOLLIN)
            else:  # pragma: no cover - macOS
                self._kq.control([self._kevent(fd, "KQ_EV_ADD")], 0)
        except OSError as exc:
            raise translate(exc, "register") from None

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._ep is not None:
                self._ep.unregister(fd)
            else:  # pragma: no cover - macOS
                self._kq.control([self._kevent(fd, "KQ_EV_DELETE")], 0)

    def ready(self) -> list[int]:
        """Descriptors with input (or hang-up) now; never blocks."""
        try:
            if self._ep is not None:
                return [fd for fd, _ev in self._ep.poll(0)]
            return [int(e.ident) for e in self._kq.control(None, 64, 0)]  # pragma: no cover - macOS
        except InterruptedError:
            return []
        except OSError as exc:
            raise translate(exc, "poll") from None

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
        if self._kq is not None:  # pragma: no cover - macOS
            self._kq.close()


def wait_readable(fds: list[int], timeout: float | None) -> None:
    """Sleep until one of ``fds`` is readable (or hung up) or ``timeout`` seconds pass."""
    wait_io(fds, None, timeout)


def wait_io(readable: list[int], writable: int | None, timeout: float | None) -> None:
    """Sleep until one of ``readable`` has input, ``writable`` has room, or ``timeout`` passes."""
    p = select.poll()
    for fd in readable:
        p.register(fd, select.POLLIN)
    if writable is not None:
        p.register(writable, select.POLLOUT)
    try:
        p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
    except InterruptedError:
        pass


# --------------------------------------------------------------------------- sockets


def listen(dir_path: str, name: str, mode: int) -> socket.socket:
    """The window's listening SOCK_SEQPACKET socket at ``dir_path/name``, non-blocking."""
    sock = B.listen_unix(dir_path, name, mode, backlog=socket.SOMAXCONN, kind=socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    return sock


def connect(path: str) -> socket.socket:
    """A non-blocking connection to a window's socket.

    Raises:
        FileNotFound: nothing listens there any more.
        AccessDenied: the socket's mode refuses us.
        PipeBusy: the window's backlog is full (its thread is not accepting).
    """
    sock = B.connect_unix(path, socket.SOCK_SEQPACKET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
    except OSError:
        pass
    sock.setblocking(False)
    return sock


def accept(listener: socket.socket) -> socket.socket | None:
    """The next waiting connection (non-blocking), or None."""
    try:
        conn, _addr = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
            return None
        raise translate(exc, "accept") from None
    conn.setblocking(False)
    return conn


def send_packet(sock: socket.socket, data: bytes, fd: int | None = None) -> bool:
    """Send one packet without blocking; False when the socket has no room now.

    Raises:
        BrokenPipe: the other end is gone.
    """
    try:
        if fd is None:
            sock.send(data)
        else:
            sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
            raise W.BrokenPipe("the other end of the window connection is gone") from None
        raise translate(exc, "write") from None


def discard_input(sock: socket.socket, limit: int = 64) -> None:
    """Throw away up to ``limit`` waiting packets unread (descriptors with them are closed by
    the kernel), so that closing does not reset the peer before it reads our last packet."""
    for _ in range(limit):
        try:
            if not sock.recv(1, socket.MSG_DONTWAIT):
                return
        except OSError:
            return


def recv_packet(sock: socket.socket, size: int) -> tuple[bytes, list[int], bool] | None:
    """One packet (non-blocking): (data, received descriptors, truncated), or None if none waits.

    ``(b"", [], False)`` is the end of the connection (also on a reset).
    """
    reset = False
    while True:
        try:
            data, anc, flags, _addr = sock.recvmsg(size + 1, _ANC, _CMSG_CLOEXEC)
            break
        except (BlockingIOError, InterruptedError):
            return (b"", [], False) if reset else None
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE) and not reset:
                reset = True  # reported once; packets the peer sent before it went may still wait
                continue
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EBADF):
                return b"", [], False
            raise translate(exc, "read") from None
    fds: list[int] = []
    for level, typ, blob in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            k = len(blob) // 4
            fds.extend(struct.unpack(f"{k}i", blob[: k * 4]))
    for fd in fds:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)) or len(data) > size
    return data, fds, truncated


# --------------------------------------------------------------------------- shared memory


def sealed_memory(data: memoryview) -> int:
    """A descriptor of an anonymous file holding ``data``, sealed so nobody can change it.

    Linux: a memfd with F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_SEAL, so the
    receiver maps bytes that cannot change or vanish under it. Elsewhere: an unlinked file
    in the temp directory (no seals).
    """
    try:
        if hasattr(os, "memfd_create") and _SEALS:
            fd = os.memfd_create("winipc-copydata", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        else:  # pragma: no cover - macOS
            fd, path = tempfile.mkstemp(prefix=".winipc-copydata.")
            os.unlink(path)
    except OSError as exc:
        raise translate(exc, "create", "WM_COPYDATA memory") from None
    try:
        os.ftruncate(fd, len(data))
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        if hasattr(os, "memfd_create") and _SEALS:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except OSError as exc:
        os.close(fd)
        raise translate(exc, "write", "WM_COPYDATA memory") from None
    return fd


def check_sealed(fd: int, length: int) -> None:
    """Refuse memory that is not a sealed file of at least ``length`` bytes.

    Raises:
        InvalidData: not a regular/memory file, too short, or (Linux) missing a seal, so
            the sender could still change or shrink it under the reader.
    """
    size = B.regular_file_size(fd)
    if size is None:
        raise W.InvalidData("the descriptor passed with the message is not a memory file")
    if size < length:
        raise W.InvalidData(f"the message's memory holds {size} bytes; the frame says {length}")
    if LINUX and _NEEDED_SEALS:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            raise W.InvalidData("the message's memory is not a sealed memfd") from None
        if seals & _NEEDED_SEALS != _NEEDED_SEALS:
            raise W.InvalidData("the message's memory is not sealed against writes and resizes")


def map_readonly(fd: int, length: int) -> mmap.mmap:
    """Map the first ``length`` (> 0) bytes of ``fd`` read-only."""
    try:
        return mmap.mmap(fd, length, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise translate(exc, "map", "WM_COPYDATA memory") from None


def read_all(fd: int, length: int) -> bytes:
    """The first ``length`` bytes of ``fd`` (a sealed memory file)."""
    out = bytearray(length)
    view = memoryview(out)
    done = 0
    try:
        while done < length:
            n = os.preadv(fd, [view[done:]], done)
            if n <= 0:
                raise W.InvalidData("short read from the message's memory")
            done += n
    except OSError as exc:
        raise translate(exc, "read", "message memory") from None
    return bytes(out)


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        B.close_fd(fd)


# --------------------------------------------------------------------------- small files


def replace_file(dir_path: str, name: str, data: bytes, mode: int) -> None:
    """Write ``dir_path/name`` atomically (a new file renamed over the old one)."""
    tmp = f".{name}.{secrets.token_hex(6)}"
    fd = B.write_new_file(dir_path, tmp, data, mode)
    B.close_fd(fd)
    try:
        os.rename(os.path.join(dir_path, tmp), os.path.join(dir_path, name))
    except OSError as exc:
        B.unlink(os.path.join(dir_path, tmp))
        raise translate(exc, "rename", os.path.join(dir_path, name)) from None


def read_small(path: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a small file (not following a symlink), or None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def set_mtime(fd: int, when: float) -> None:
    """Set a file's modification time (seconds since the epoch); errors are ignored."""
    with contextlib.suppress(OSError):
        os.utime(fd, (when, when))


def mtime(path: str) -> float | None:
    """A file's modification time, or None when it is gone or unreadable."""
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return None
