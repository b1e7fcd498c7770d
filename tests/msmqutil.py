"""Helpers for the winipc.msmq conformance suite: unique queues per test, and checks.

A :class:`Queues` hands out unique queue paths on one backend (the local store or the
NATS server) and deletes every queue it created when the test ends, so nothing is left
behind on either backend.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import uuid
from typing import Any

import pytest

from winipc import errors as W

NATS_URL = "nats://127.0.0.1:4222"

#: MSMQ's printed message id: "{GUID}\N".
ID_RE = re.compile(
    r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}\\[0-9]+$"
)

#: The local system dead-letter queue (non-transactional messages go there).
SYSTEM_DEADLETTER = r".\system$;deadletter"


class Queues:
    """Unique queue paths on one backend; :meth:`cleanup` deletes the ones created."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.created: list[str] = []
        self.used_system_deadletter = False

    @property
    def url(self) -> str:
        return NATS_URL

    def path(self) -> str:
        """A fresh, unused queue path (not created)."""
        name = "t" + uuid.uuid4().hex[:16]
        if self.kind == "local":
            return ".\\private$\\" + name
        return f"{NATS_URL}/{name}"

    def new(self, **kw: Any) -> str:
        """Create a queue (``msmq.create_queue`` keywords) and return its path."""
        from winipc import msmq

        path = self.path()
        msmq.create_queue(path, **kw)
        self.created.append(path)
        return path

    def deadletter(self, path: str, *, transactional: bool) -> str:
        """Where an expired message of ``path`` with use_dead_letter=True goes."""
        if self.kind == "local" and not transactional:
            self.used_system_deadletter = True
            return SYSTEM_DEADLETTER
        return path + ";deadletter"

    def cleanup(self) -> None:
        from winipc import msmq

        errors: list[str] = []
        for path in reversed(self.created):
            try:
                msmq.delete_queue(path)
            except W.QueueNotFound:
                pass  # the test deleted it itself
            except Exception as exc:  # keep deleting the others; report at the end
                errors.append(f"{path}: {exc!r}")
        if self.used_system_deadletter:
            # The system queue is made on first use; this test's store root is private.
            with contextlib.suppress(W.QueueNotFound):
                msmq.delete_queue(SYSTEM_DEADLETTER)
        assert not errors, f"could not delete test queues: {errors}"


def as_bytes(body: Any) -> bytes:
    """A received bytes body as ``bytes`` (never compare a memoryview with ``==``)."""
    assert isinstance(body, (bytes, bytearray, memoryview)), f"body is {type(body).__name__}"
    return bytes(body)


def assert_empty(q: Any) -> None:
    """Nothing is ready in ``q``: a zero-timeout peek times out, and stat agrees."""
    with pytest.raises(W.IoTimeout):
        q.peek(timeout=0)
    assert q.stat().messages == 0


def assert_invalid_handle(exc: BaseException) -> None:
    """A closed handle's error: InvalidHandle, or an MsmqError with MQ_ERROR_INVALID_HANDLE."""
    if isinstance(exc, W.InvalidHandle):
        return
    assert isinstance(exc, W.MsmqError), f"{type(exc).__name__}: {exc}"
    assert exc.winerror == W.MQ_ERROR_INVALID_HANDLE, str(exc)


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """Wait for ``proc`` (a hang fails the test) and return its stdout; it must exit 0."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"child did not finish within {timeout} s; stderr:\n{err}") from None
    assert proc.returncode == 0, f"child exited {proc.returncode}; stderr:\n{err}"
    return out
