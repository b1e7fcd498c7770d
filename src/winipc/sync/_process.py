"""Process handles: wait for a process to exit (Win32: OpenProcess + WaitForSingleObject)."""

from __future__ import annotations

from winipc import errors as W
from winipc._backends import posix_sync as S
from winipc._core.handles import Handle


class ProcessHandle(Handle):
    """A handle to a running process, signaled when it exits (a pidfd underneath).

    Use it with :func:`winipc.sync.wait_any` / ``wait_all`` or :meth:`wait`. Processes
    started with :func:`winipc.spawn` are waitable the same way.
    """

    kind = "process"

    def __init__(self, pid: int) -> None:
        self._closed = True
        fd = S.pidfd(pid)
        if fd is None:
            raise W.InvalidParameter(f"no process {pid} (or this kernel has no pidfd)")
        self.pid = pid
        self._fd = fd
        self._closed = False

    def _fileno(self) -> int:
        return self._fd

    def _close(self) -> None:
        S.close(self._fd)

    def _wait_fd(self) -> int:
        return self.fileno()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the process to exit; False on time-out."""
        from winipc.sync._wait import wait_any

        return wait_any([self], timeout) is not None


def open_process(pid: int) -> ProcessHandle:
    """A waitable handle to process ``pid`` (Win32: OpenProcess(SYNCHRONIZE, ...)).

    Raises:
        InvalidParameter: (87) no such process.
    """
    return ProcessHandle(pid)
