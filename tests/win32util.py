"""Helpers the win32 face tests share: child scripts' end, kill, pywin32 error codes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from winipc.win32 import pywintypes


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Close stdin, wait for ``proc``; fail with its stderr unless it exited 0."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{err}"
    return out


def kill(proc: subprocess.Popen[str]) -> None:
    """End ``proc`` if it runs, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def code_of(call: Callable[[], Any]) -> int:
    """The winerror of the pywintypes.error ``call`` raises."""
    with pytest.raises(pywintypes.error) as info:
        call()
    assert isinstance(info.value.winerror, int)
    return info.value.winerror


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling) until ``cond()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)
