"""OS calls for synchronization objects: state-file locks, wake sockets, pidfds, polling.

Waiters sleep in ``poll`` on a datagram socket of their own, bound to an abstract
address (Linux; nothing on the file system, nothing to clean up) whose random token they
register in the objects they wait for; whoever changes an object's state sends one byte
to each registered token. A mutex owner's death is seen through its pidfd.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import select
import socket
import time

from winipc import errors as W
from winipc._backends.errors import translate
from winipc._backends.posix import HAS_OFD_LOCKS, LINUX, _lock

STATE_LOCK = 0  # byte of the state file whose lock guards the state
OWNER_LOCK = 1  # byte a mutex's owning thread keeps locked while it owns it


def open_rw(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise translate(exc, "open", path) from None


def lock_byte(fd: int, offset: int, *, wait: bool) -> bool:
    """Write-lock one byte (open-file-description lock); False if busy and not waiting."""
    if not HAS_OFD_LOCKS:  # pragma: no cover - macOS
        raise W.NotSupported("synchronization objects need open-file-description locks (Linux)")
    while True:
        try:
            _lock(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, fcntl.F_WRLCK, offset)
            return True
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES) and not wait:
                return False
            raise translate(exc, "lock") from None


def unlock_byte(fd: int, offset: int) -> None:
    with contextlib.suppress(OSError):
        _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, offset)


def byte_locked(fd: int, offset: int) -> bool:
    """True when another open file description holds a lock on the byte."""
    try:
        return _lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, offset)[0] != fcntl.F_UNLCK
    except OSError as exc:
        raise translate(exc, "lock") from None


def pread(fd: int, size: int, offset: int) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise translate(exc, "read") from None


def pwrite(fd: int, data: bytes, offset: int) -> None:
    try:
        os.pwrite(fd, data, offset)
    except OSError as exc:
        raise translate(exc, "write") from None


def close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _address(token: int) -> str | bytes:
    return b"\0winipc-w-%016x" % token


class WakeSocket:
    """A waiting thread's doorbell: a datagram socket at an abstract address."""

    def __init__(self) -> None:
        if not LINUX:  # pragma: no cover
            raise W.NotSupported("wake sockets use Linux abstract addresses")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        while True:
            self.token = secrets.randbits(63) or 1
            try:
                self.sock.bind(_address(self.token))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    self.sock.close()
                    raise translate(exc, "bind") from None
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        try:
            while self.sock.recv(64):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:  # a thread's doorbell goes with the thread
        self.sock.close()


_sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if LINUX else None
if _sender is not None:
    _sender.setblocking(False)
    atexit.register(_sender.close)  # process-lifetime; closed at exit so -X dev stays quiet


def wake(token: int) -> bool:
    """Ring a waiter's doorbell. False when no such waiter exists any more."""
    assert _sender is not None
    try:
        _sender.sendto(b"w", _address(token))
    except BlockingIOError:
        return True  # its queue is full of wakes already
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` exits (None if gone or unsupported)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or pid <= 0:
        return None
    try:
        fd: int = opener(pid)
        return fd
    except OSError:
        return None


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def poll(fds: list[int], timeout: float | None) -> list[int]:
    """The descriptors among ``fds`` that are readable (or hung up) within ``timeout`` seconds."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    while True:
        try:
            return [fd for fd, _ev in p.poll(ms)]
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue


def now_ns() -> int:
    """Wall-clock time (CLOCK_REALTIME) in ns: timers' absolute due times use it."""
    return time.time_ns()
