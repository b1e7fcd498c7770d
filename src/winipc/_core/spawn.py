"""Starting a child that inherits handles (Win32: CreateProcess with bInheritHandles)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Any

from winipc import errors as W
from winipc._core.handles import INHERIT_ENV, Handle, export_handle

Stream = Handle | int | IO[Any] | None


class Process:
    """A child process started by :func:`spawn`.

    Attributes:
        pid: its process id.
        popen: the underlying :class:`subprocess.Popen`.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None

    def _wait_fd(self) -> int:
        """A descriptor readable once the child exits (for winipc.sync.wait_any)."""
        if self._pidfd is None:
            opener = getattr(os, "pidfd_open", None)
            if opener is None:
                raise W.NotSupported("waiting on a process with other objects needs pidfd (Linux)")
            self._pidfd = opener(self.pid)
        return self._pidfd

    def _wait_ready(self) -> bool:
        return self.popen.poll() is not None

    def close(self) -> None:
        """Release the waitable descriptor (the process goes on)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    @property
    def returncode(self) -> int | None:
        """Exit status, or None while it runs (negative: killed by that signal)."""
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit (WaitForSingleObject on a process handle).

        Raises:
            WaitTimeout: (258) still running after ``timeout`` seconds.
        """
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise W.WaitTimeout(f"process {self.pid} still runs after {timeout} s") from None

    def kill(self) -> None:
        """End the child at once (TerminateProcess)."""
        if self.popen.poll() is None:
            self.popen.kill()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen.poll() is None:
            self.kill()
        self.popen.wait()
        self.close()


def _stream(value: Stream) -> Any:
    if isinstance(value, Handle):
        return value.fileno()
    return value


def spawn(
    argv: Sequence[str],
    *,
    inherit: Sequence[Handle] = (),
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Process:
    """Start ``argv`` with the given handles inherited.

    The child finds each handle with ``winipc.inherited_handle(value)``, where ``value``
    is ``int(handle)`` in the parent (pass it on the command line, as Windows programs
    do). ``stdin``/``stdout``/``stderr`` may be pipe ends (or files) to redirect.

    Args:
        argv: program and arguments.
        inherit: handles the child inherits (no other winipc handle is inherited).
        stdin, stdout, stderr: a handle, file descriptor, file object or None.
        env: the child's environment (default: ours).
        cwd: the child's working directory.

    Returns:
        The :class:`Process`.

    Raises:
        FileNotFound: the program does not exist.
        InvalidHandle: an inherited handle is closed.
    """
    table = []
    fds: list[int] = []
    for h in inherit:
        hfds, desc = export_handle(h)
        desc["fds"] = hfds
        table.append(desc)
        fds.extend(hfds)
    child_env = dict(os.environ if env is None else env)
    child_env[INHERIT_ENV] = json.dumps(table)
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=_stream(stdin),
            stdout=_stream(stdout),
            stderr=_stream(stderr),
            pass_fds=fds,
            env=child_env,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise W.FileNotFound(f"program not found: {argv[0]!r}") from None
    except PermissionError:
        raise W.AccessDenied(f"program not executable: {argv[0]!r}") from None
    return Process(popen)
