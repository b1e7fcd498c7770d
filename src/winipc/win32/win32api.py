"""pywin32's ``win32api``, the part pipe and event scripts use (``win32api`` after install())."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from winipc.sync import ProcessHandle
from winipc.win32._handles import PyHANDLE, register
from winipc.win32._support import api, dword, error, get_last_error, message, set_last_error
from winipc.win32.win32file import CloseHandle
from winipc.win32.win32gui import (  # pywin32 has them here too
    GetModuleHandle,
    PostMessage,
    SendMessage,
)


def GetLastError() -> int:
    """This thread's last error code (Win32: GetLastError).

    The code of the last error the face raised in this thread, or what the last
    ``CreateEvent`` / ``CreateMutex`` / ``CreateSemaphore`` / ``CreateWaitableTimer(Ex)``
    left: ERROR_ALREADY_EXISTS (183) when it opened an existing object, 0 when it
    created a new one.
    """
    return get_last_error()


def SetLastError(errVal: int) -> None:
    """Set this thread's last error code (Win32: SetLastError)."""
    set_last_error(dword(errVal, "errVal"))


def FormatMessage(*args: Any) -> str:
    """Windows' text for an error code (Win32: FormatMessage).

    Takes ``FormatMessage(code)`` or pywin32's long form
    ``FormatMessage(flags, source, messageId, languageId, inserts)``; the text ends with
    CR LF, as Windows writes it.
    """
    if len(args) == 1:
        code = args[0]
    elif len(args) >= 3:
        code = args[2]
    else:
        raise TypeError("FormatMessage takes (errCode) or (flags, source, messageId, ...)")
    return message(dword(code, "messageId")) + "\r\n"


def GetCurrentProcessId() -> int:
    """This process's id (Win32: GetCurrentProcessId)."""
    return os.getpid()


def GetCurrentThreadId() -> int:
    """This thread's native id (Win32: GetCurrentThreadId)."""
    return threading.get_native_id()


@api("OpenProcess")
def OpenProcess(reqdAccess: Any, bInherit: Any, pid: Any) -> PyHANDLE:
    """A handle to a running process, signaled when it ends (Win32: OpenProcess).

    Wait on it with ``win32event.WaitForSingleObject`` / ``WaitForMultipleObjects``.

    Args:
        reqdAccess: accepted (SYNCHRONIZE, PROCESS_ALL_ACCESS, ...); the handle can wait.
        bInherit: accepted.
        pid: the process id.

    Raises:
        pywintypes.error: (87 ERROR_INVALID_PARAMETER) no such process.
    """
    dword(reqdAccess, "reqdAccess")
    return register(ProcessHandle(dword(pid, "pid")), "process")


@api("Sleep")
def Sleep(time_ms: int, bAlertable: int = 0) -> int:
    """Sleep ``time_ms`` milliseconds (Win32: SleepEx); INFINITE is refused here.

    Returns:
        0, as SleepEx does when no APC ran.
    """
    ms = dword(time_ms, "time")
    if ms == 0xFFFF_FFFF:
        raise ValueError("Sleep(INFINITE) would never return")
    time.sleep(ms / 1000.0)
    return 0


__all__ = [
    "CloseHandle",
    "FormatMessage",
    "GetCurrentProcessId",
    "GetCurrentThreadId",
    "GetLastError",
    "GetModuleHandle",
    "OpenProcess",
    "PostMessage",
    "SendMessage",
    "SetLastError",
    "Sleep",
    "error",
]
