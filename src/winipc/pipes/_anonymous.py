"""Anonymous pipes (Win32: CreatePipe): a one-way pair of handles, made to be inherited.

The main use, from the seeds: redirect a child's standard input or output, through
:func:`winipc.spawn`. Two pipes make a duplex channel.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import termios
import time
from typing import Any

from winipc import errors as W
from winipc._backends.errors import translate
from winipc._core.handles import Handle
from winipc.pipes._connection import PeekResult


class PipeEnd(Handle):
    """One end of an anonymous pipe: the read end or the write end."""

    kind = "anonymous-pipe"

    def __init__(self, fd: int, *, readable: bool) -> None:
        self._fd = fd
        self.readable = readable
        self._pushback = bytearray()  # what peek() took out of the OS pipe; read first
        self._closed = False

    def _fileno(self) -> int:
        return self._fd

    def _close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass

    @property
    def inheritable(self) -> bool:
        """Whether a child started by :func:`winipc.spawn` or exec gets this handle."""
        self._check_open()
        return os.get_inheritable(self._fd)

    @inheritable.setter
    def inheritable(self, value: bool) -> None:
        """Win32: SetHandleInformation(HANDLE_FLAG_INHERIT)."""
        self._check_open()
        os.set_inheritable(self._fd, bool(value))

    def read(self, size: int, timeout: float | None = None) -> bytes:
        """Read 1..``size`` bytes (Win32: ReadFile).

        Raises:
            BrokenPipe: (109) every write end is closed and the pipe is empty.
            SemTimeout: (121) nothing within ``timeout`` seconds.
            AccessDenied: this is the write end.
        """
        self._check_open()
        if not self.readable:
            raise W.AccessDenied("this is the write end of the pipe")
        if not isinstance(size, int) or size < 0:
            raise W.InvalidParameter(f"size must be an int >= 0, not {size!r}")
        if size == 0:
            return b""
        if self._pushback:  # what peek() took out comes first, then what is there
            data = bytes(self._pushback[:size])
            del self._pushback[:size]
            more = min(size - len(data), self._in_pipe())
            return data + os.read(self._fd, more) if more > 0 else data
        if timeout is not None:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                raise W.SemTimeout(f"no data within {timeout} s")
        try:
            data = os.read(self._fd, size)
        except OSError as exc:
            raise translate(exc, "read", "anonymous pipe") from None
        if not data:
            raise W.BrokenPipe("the write end of the pipe is closed")
        return data

    def read_exact(self, size: int, timeout: float | None = None) -> bytes:
        """Read exactly ``size`` bytes (loops over :meth:`read`)."""
        parts, have = [], 0
        while have < size:
            chunk = self.read(size - have, timeout)
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write all of ``data`` (Win32: WriteFile); returns its length.

        Raises:
            PipeClosing: (232) every read end is closed.
            AccessDenied: this is the read end.
        """
        self._check_open()
        if self.readable:
            raise W.AccessDenied("this is the read end of the pipe")
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += os.write(self._fd, view[done:])
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise W.PipeClosing("the read end of the pipe is closed") from None
                raise translate(exc, "write", "anonymous pipe") from None
        return done

    def available(self) -> int:
        """Bytes waiting in the pipe (PeekNamedPipe's total on an anonymous pipe)."""
        self._check_open()
        return len(self._pushback) + self._in_pipe()

    def _in_pipe(self) -> int:
        try:
            buf = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError as exc:
            raise translate(exc, "peek", "anonymous pipe") from None
        return int.from_bytes(buf, "little")

    def _other_end_gone(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN if self.readable else select.POLLOUT)
        return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in poller.poll(0))

    def peek(self, size: int = 0) -> PeekResult:
        """Look at waiting data without removing it (Win32: PeekNamedPipe); never blocks.

        Returns:
            ``PeekResult(data, total_available, 0)``: up to ``size`` bytes.

        Raises:
            BrokenPipe: (109) the pipe is empty and every write end is closed.
            AccessDenied: this is the write end.
        """
        self._check_open()
        if not self.readable:
            raise W.AccessDenied("this is the write end of the pipe")
        waiting = self._in_pipe()
        if size > len(self._pushback) and waiting:
            try:
                self._pushback += os.read(self._fd, min(size - len(self._pushback), waiting))
            except OSError as exc:
                raise translate(exc, "peek", "anonymous pipe") from None
        total = len(self._pushback) + self._in_pipe()
        if not total and self._other_end_gone():
            raise W.BrokenPipe("the write end of the pipe is closed")
        return PeekResult(bytes(self._pushback[:size]), total, 0)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the reader has taken everything written (FlushFileBuffers).

        Raises:
            PipeClosing: (232) every read end closed with data unread.
            SemTimeout: (121) data still waits after ``timeout`` seconds.
        """
        self._check_open()
        if self.readable:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0001
        while self._in_pipe():
            if self._other_end_gone():
                raise W.PipeClosing("the read end of the pipe is closed")
            if deadline is not None and time.monotonic() >= deadline:
                raise W.SemTimeout(f"data still unread after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _wait_ready(self) -> bool:
        """Bytes peek() took out of the OS pipe are waiting too (for wait_any)."""
        return bool(self._pushback)

    def _export(self) -> tuple[list[int], dict[str, Any]]:
        return [self._fd], {"readable": self.readable}

    @classmethod
    def _import(cls, fds: list[int], meta: dict[str, Any]) -> PipeEnd:
        return cls(fds[0], readable=bool(meta["readable"]))


def create_pipe(size: int = 0, *, inheritable: bool = False) -> tuple[PipeEnd, PipeEnd]:
    """Create an anonymous pipe (Win32: CreatePipe).

    Args:
        size: suggested buffer size in bytes (0 = the system default); applied with
            F_SETPIPE_SZ where the OS has it.
        inheritable: both ends are inherited by children (bInheritHandle). Handles
            passed to :func:`winipc.spawn` are inherited whatever this says.

    Returns:
        (read_end, write_end).
    """
    if not isinstance(size, int) or size < 0:
        raise W.InvalidParameter(f"size must be bytes >= 0, not {size!r}")
    r, w = os.pipe()
    if size and hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass
    if inheritable:
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
    return PipeEnd(r, readable=True), PipeEnd(w, readable=False)
