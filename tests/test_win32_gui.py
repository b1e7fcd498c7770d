"""winipc.win32.win32gui over winipc.messages: pywin32's shapes and codes, across processes.

The other side is a real Python process written the way a pywin32 script is (``import
win32gui`` after ``winipc.win32.install()``): it registers a class, creates a window and
pumps; this process finds it and sends, posts and copies data to it.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

import winipc.messages
from win32util import code_of, finish, kill, until
from winipc import errors as W
from winipc.win32 import pywintypes, win32api, win32con, win32gui, winerror

from conftest import run_py, wait_line

PRELUDE = """\
import sys, time, zlib
import winipc.win32
assert winipc.win32.install(), "pywin32 is installed here"
import pywintypes, win32api, win32con, win32gui, winerror
"""

WM_ADD = win32con.WM_USER + 1
_children: list[subprocess.Popen[str]] = []


def script(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` (written as for pywin32) in a new Python process (killed at test end)."""
    proc = run_py(PRELUDE + textwrap.dedent(code), *args, stdin=subprocess.PIPE)
    _children.append(proc)
    return proc






@pytest.fixture(autouse=True)
def reap_children() -> Iterator[None]:
    """A failed test must not leave its other process (and its windows) behind."""
    yield
    while _children:
        kill(_children.pop())






_class_seq = iter(range(1_000_000))


def new_class(wndproc: Any = None) -> tuple[str, int]:
    """Register a fresh window class in this process; returns (name, atom)."""
    wc = win32gui.WNDCLASS()
    wc.lpszClassName = f"W32GuiLocal{os.getpid()}_{next(_class_seq)}"
    if wndproc is not None:
        wc.lpfnWndProc = wndproc
    return wc.lpszClassName, win32gui.RegisterClass(wc)


# ---------------------------------------------------------------- across processes

WINDOW_SCRIPT = r"""
cls, title = sys.argv[1], sys.argv[2]
WM_ADD = win32con.WM_USER + 1

def on_add(hwnd, msg, wparam, lparam):
    return wparam + lparam

def on_copydata(hwnd, msg, wparam, cd):
    print("COPY", wparam, cd.dwdata, bytes(cd.data[:16]).hex(), len(cd.data),
          cd.sender_pid == int(sys.argv[3]), flush=True)
    return zlib.crc32(cd.data) & 0x7FFFFFFF

def on_destroy(hwnd, msg, wparam, lparam):
    win32gui.PostQuitMessage(3)
    return 0

wc = win32gui.WNDCLASS()
wc.lpszClassName = cls
wc.hInstance = win32gui.GetModuleHandle(None)
wc.hCursor = win32gui.LoadCursor(0, win32con.IDC_ARROW)
wc.lpfnWndProc = {WM_ADD: on_add, win32con.WM_COPYDATA: on_copydata,
                  win32con.WM_DESTROY: on_destroy}
atom = win32gui.RegisterClass(wc)
hwnd = win32gui.CreateWindowEx(
    0, atom, title, win32con.WS_OVERLAPPEDWINDOW, 0, 0, win32con.CW_USEDEFAULT,
    win32con.CW_USEDEFAULT, 0, 0, wc.hInstance, None)
win32gui.UpdateWindow(hwnd)
print("READY", hwnd, flush=True)
rc = win32gui.PumpMessages()
print("EXIT", rc, win32gui.IsWindow(hwnd), flush=True)
win32gui.UnregisterClass(atom, wc.hInstance)
"""


def test_pywin32_window_script_talks_to_another_process() -> None:
    child = script(WINDOW_SCRIPT, "W32GuiRemote", "w32gui title", str(os.getpid()))
    hwnd = int(wait_line(child, "READY").split()[1])
    # found by class and title, case-insensitively; a wrong title finds nothing (0)
    assert win32gui.FindWindow("w32guiremote", None) == hwnd
    assert win32gui.FindWindow(None, "W32GUI TITLE") == hwnd
    assert win32gui.FindWindow("W32GuiRemote", "another title") == 0
    assert win32gui.FindWindowEx(None, None, "W32GuiRemote", "w32gui title") == hwnd
    assert win32gui.IsWindow(hwnd) == 1
    assert win32gui.GetWindowText(hwnd) == "w32gui title"
    assert win32gui.GetClassName(hwnd) == "W32GuiRemote"
    found: list[int] = []
    win32gui.EnumWindows(lambda h, acc: acc.append(h), found)
    assert hwnd in found

    # SendMessage / SendMessageTimeout give the procedure's result
    assert win32gui.SendMessage(hwnd, WM_ADD, 2, 40) == 42
    assert win32gui.SendMessageTimeout(hwnd, WM_ADD, 5, -7, win32con.SMTO_NORMAL, 20_000) == (1, -2)
    assert win32gui.SendMessageTimeout(hwnd, WM_ADD, 1, 1, win32con.SMTO_ABORTIFHUNG, 20_000) == (1, 2)

    # WM_COPYDATA, the Pythonic way: (dwData, bytes); the receiver knows the sender
    payload = os.urandom(300_000)
    result = win32gui.SendMessage(hwnd, win32con.WM_COPYDATA, 0, (7, payload))
    assert result == zlib.crc32(payload) & 0x7FFFFFFF
    assert wait_line(child, "COPY") == f"COPY 0 7 {payload[:16].hex()} 300000 True"
    result = win32gui.SendMessageTimeout(hwnd, win32con.WM_COPYDATA, 0, b"short", 0, 20_000)
    assert result == (1, zlib.crc32(b"short") & 0x7FFFFFFF)
    assert wait_line(child, "COPY") == f"COPY 0 0 {b'short'.hex()} 5 True"
    # WM_COPYDATA can only be sent (Windows: ERROR_MESSAGE_SYNC_ONLY)
    assert code_of(lambda: win32gui.PostMessage(hwnd, win32con.WM_COPYDATA, 0, b"x")) == 1159

    # SetWindowText on another process's window goes through its DefWindowProc
    win32gui.SetWindowText(hwnd, "renamed")
    assert win32gui.GetWindowText(hwnd) == "renamed"
    assert win32gui.FindWindow(None, "renamed") == hwnd

    # WM_CLOSE -> DefWindowProc destroys -> WM_DESTROY -> PostQuitMessage(3)
    win32gui.PostMessage(hwnd, win32con.WM_CLOSE, 0, 0)
    assert wait_line(child, "EXIT") == "EXIT 3 0"
    finish(child)

    # the dead window's HWND: 1400, and SendMessage returns 0 with GetLastError, as pywin32
    assert win32gui.IsWindow(hwnd) == 0
    assert win32gui.FindWindow("W32GuiRemote", None) == 0
    assert code_of(lambda: win32gui.SendMessageTimeout(hwnd, WM_ADD, 0, 0, 0, 1000)) == (
        winerror.ERROR_INVALID_WINDOW_HANDLE
    )
    assert code_of(lambda: win32gui.PostMessage(hwnd, WM_ADD, 0, 0)) == 1400
    win32api.SetLastError(0)
    assert win32gui.SendMessage(hwnd, WM_ADD, 1, 1) == 0
    assert win32api.GetLastError() == 1400
    assert code_of(lambda: win32gui.GetClassName(hwnd)) == 1400
    assert win32gui.GetWindowText(hwnd) == ""


HUNG_SCRIPT = r"""
import winipc.messages
from winipc import errors as W
winipc.messages.HUNG_TIMEOUT = 0.5
wc = win32gui.WNDCLASS()
wc.lpszClassName = sys.argv[1]
wc.lpfnWndProc = lambda hwnd, msg, wparam, lparam: 99
win32gui.RegisterClass(wc)
hwnd = win32gui.CreateWindow(sys.argv[1], "hung", 0, 0, 0, 0, 0, 0, 0, 0, None)
print("READY", hwnd, flush=True)
sys.stdin.readline()          # busy: never retrieves its messages
"""


def test_send_message_timeout_to_a_hung_window_fails_with_1460(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winipc.messages, "HUNG_TIMEOUT", 0.5)
    child = script(HUNG_SCRIPT, "W32GuiHung")
    hwnd = int(wait_line(child, "READY").split()[1])
    with pytest.raises(pywintypes.error) as info:
        win32gui.SendMessageTimeout(hwnd, win32con.WM_USER, 0, 0, win32con.SMTO_NORMAL, 300)
    assert info.value.args[:2] == (winerror.ERROR_TIMEOUT, "SendMessageTimeout")
    assert win32api.GetLastError() == 1460

    # SMTO_ABORTIFHUNG: with a message waiting longer than HUNG_TIMEOUT the thread is
    # hung, and the call fails without waiting for its (long) time-out
    win32gui.PostMessage(hwnd, win32con.WM_USER + 5, 0, 0)
    time.sleep(1.0)
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(
                win32gui.SendMessageTimeout(hwnd, win32con.WM_USER, 0, 0, win32con.SMTO_ABORTIFHUNG, 120_000)
            )
        except pywintypes.error as exc:
            outcome.append(exc.winerror)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    t.join(60)
    assert outcome == [1460], "SMTO_ABORTIFHUNG waited for the time-out"
    kill(child)
    until(lambda: not win32gui.IsWindow(hwnd))  # a killed process's window is gone


def test_message_only_window_is_found_by_find_window_ex_only() -> None:
    child = script(
        r"""
        wc = win32gui.WNDCLASS()
        wc.lpszClassName = "W32GuiMsgOnly"
        wc.lpfnWndProc = {win32con.WM_USER: lambda h, m, w, l: w * 2}
        win32gui.RegisterClass(wc)
        hwnd = win32gui.CreateWindowEx(0, "W32GuiMsgOnly", "hidden", 0, 0, 0, 0, 0,
                                       win32con.HWND_MESSAGE, 0, 0, None)
        print("READY", hwnd, flush=True)
        while not win32gui.PumpWaitingMessages():
            time.sleep(0.01)
        print("QUIT", flush=True)
        """
    )
    hwnd = int(wait_line(child, "READY").split()[1])
    assert win32gui.FindWindow("W32GuiMsgOnly", None) == 0
    assert win32gui.FindWindowEx(0, 0, "W32GuiMsgOnly", None) == 0
    assert win32gui.FindWindowEx(win32con.HWND_MESSAGE, None, "W32GuiMsgOnly", None) == hwnd
    assert win32gui.FindWindowEx(win32con.HWND_MESSAGE, hwnd, "W32GuiMsgOnly", None) == 0
    found: list[int] = []
    win32gui.EnumWindows(lambda h, acc: acc.append(h), found)
    assert hwnd not in found
    assert win32gui.SendMessage(hwnd, win32con.WM_USER, 21, 0) == 42
    win32gui.PostMessage(hwnd, win32con.WM_CLOSE, 0, 0)  # DefWindowProc: DestroyWindow
    until(lambda: not win32gui.IsWindow(hwnd))
    kill(child)


def test_registered_window_message_is_the_same_in_every_process() -> None:
    child = script('print("ID", win32gui.RegisterWindowMessage(sys.argv[1]), flush=True)', "WinIPC_Test_Msg")
    msg_id = win32gui.RegisterWindowMessage("winipc_test_MSG")
    assert 0xC000 <= msg_id <= 0xFFFF
    assert wait_line(child, "ID") == f"ID {msg_id}"
    assert win32gui.RegisterWindowMessage("another message") != msg_id
    finish(child)


# ---------------------------------------------------------------- in this process


def test_class_registration_errors_follow_windows() -> None:
    name, atom = new_class()
    assert 0 < atom <= 0xFFFF
    wc = win32gui.WNDCLASS()
    wc.lpszClassName = name
    assert code_of(lambda: win32gui.RegisterClass(wc)) == winerror.ERROR_CLASS_ALREADY_EXISTS
    hwnd = win32gui.CreateWindowEx(0, name, "t", 0, 0, 0, 0, 0, 0, 0, 0, None)
    assert code_of(lambda: win32gui.UnregisterClass(atom, 0)) == W.ERROR_CLASS_HAS_WINDOWS
    win32gui.DestroyWindow(hwnd)
    assert code_of(lambda: win32gui.DestroyWindow(hwnd)) == 1400
    win32gui.UnregisterClass(name, 0)
    assert code_of(lambda: win32gui.UnregisterClass(name, 0)) == W.ERROR_CLASS_DOES_NOT_EXIST
    assert code_of(lambda: win32gui.CreateWindowEx(0, name, "t", 0, 0, 0, 0, 0, 0, 0, 0, None)) == 1407
    with pytest.raises(TypeError):
        win32gui.RegisterClass(object())
    with pytest.raises(TypeError):
        wc.lpfnWndProc = 42
    with pytest.raises(TypeError):
        win32gui.CreateWindowEx(0, "STATIC", "t", 0, 0, 0, 0, 0, 0, 0, 0, "not None")


def test_window_procedure_sees_create_and_destroy() -> None:
    seen: list[int] = []

    def proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> Any:
        seen.append(msg)
        return win32gui.DefWindowProc(hwnd, msg, wparam, lparam)

    _name, atom = new_class(proc)
    hwnd = win32gui.CreateWindow(atom, "lifecycle", 0, 0, 0, 0, 0, win32con.HWND_MESSAGE, 0, 0, None)
    assert win32con.WM_CREATE in seen
    assert win32gui.SendMessage(hwnd, win32con.WM_GETTEXTLENGTH, 0, 0) == len("lifecycle")
    # DefWindowProc: WM_CLOSE destroys the window, which gets WM_DESTROY
    assert win32gui.SendMessage(hwnd, win32con.WM_CLOSE, 0, 0) == 0
    assert win32con.WM_DESTROY in seen
    assert not win32gui.IsWindow(hwnd)
    # a procedure failing WM_CREATE (-1) makes CreateWindowEx fail
    refuse, _atom = new_class({win32con.WM_CREATE: lambda h, m, w, lp: -1})
    with pytest.raises(pywintypes.error):
        win32gui.CreateWindowEx(0, refuse, "no", 0, 0, 0, 0, 0, 0, 0, 0, None)
    assert win32gui.FindWindow(refuse, None) == 0
    win32gui.UnregisterClass(atom, 0)


def test_message_loop_shapes_are_pywin32s(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[int, int, Any]] = []

    def proc(hwnd: int, msg: int, wparam: int, lparam: Any) -> Any:
        if msg >= win32con.WM_USER:
            calls.append((msg, wparam, lparam))
            if msg == win32con.WM_USER + 9:
                raise RuntimeError("boom in a procedure")
            return wparam * 10
        return win32gui.DefWindowProc(hwnd, msg, wparam, lparam)

    name, atom = new_class(proc)
    hwnd = win32gui.CreateWindowEx(0, name, "loop", 0, 0, 0, 0, 0, 0, 0, 0, None)
    try:
        assert win32gui.PeekMessage(hwnd, 0, 0, win32con.PM_REMOVE)[0] == 0
        win32gui.PostMessage(hwnd, win32con.WM_USER + 2, 4, -5)
        rc, msg = win32gui.PeekMessage(hwnd, 0, 0, win32con.PM_NOREMOVE)
        assert rc == 1 and msg[:4] == (hwnd, win32con.WM_USER + 2, 4, -5)
        assert isinstance(msg[4], int) and msg[5] == (0, 0)
        rc, msg = win32gui.GetMessage(0, 0, 0)  # PM_NOREMOVE left it there
        assert rc == 1 and msg[:4] == (hwnd, win32con.WM_USER + 2, 4, -5)
        assert win32gui.TranslateMessage(msg) == 0
        assert win32gui.DispatchMessage(msg) == 40
        assert calls == [(win32con.WM_USER + 2, 4, -5)]
        assert win32gui.PeekMessage(0, 0, 0, win32con.PM_REMOVE)[0] == 0

        # a str lparam travels as NUL-terminated UTF-16 bytes
        win32gui.PostMessage(hwnd, win32con.WM_USER + 3, 0, "hé")
        assert win32gui.PumpWaitingMessages() == 0
        assert calls[-1] == (win32con.WM_USER + 3, 0, "hé".encode("utf-16-le") + b"\0\0")

        # an exception in a procedure is printed and the result is 0
        assert win32gui.SendMessage(hwnd, win32con.WM_USER + 9, 1, 0) == 0
        assert "boom in a procedure" in capsys.readouterr().err

        # WM_QUIT: GetMessage returns 0 with the exit code in wparam
        win32gui.PostQuitMessage(7)
        rc, msg = win32gui.GetMessage(0, 0, 0)
        assert rc == 0 and msg[1] == win32con.WM_QUIT and msg[2] == 7
        # PumpWaitingMessages dispatches what waits, then reports WM_QUIT (1 for code 0)
        win32gui.PostMessage(hwnd, win32con.WM_USER + 4, 1, 0)
        win32gui.PostQuitMessage(0)
        assert win32gui.PumpWaitingMessages() == 1
        assert calls[-1] == (win32con.WM_USER + 4, 1, 0)
        win32gui.PostQuitMessage(5)
        assert win32gui.PumpMessages() == 5
    finally:
        win32gui.DestroyWindow(hwnd)
        win32gui.UnregisterClass(atom, 0)


def test_destroy_window_of_another_thread_is_refused() -> None:
    name, atom = new_class()
    hwnd = win32gui.CreateWindowEx(0, name, "mine", 0, 0, 0, 0, 0, win32con.HWND_MESSAGE, 0, 0, None)
    codes: list[int] = []

    def other() -> None:
        try:
            win32gui.DestroyWindow(hwnd)
        except pywintypes.error as exc:
            codes.append(exc.winerror)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert codes == [winerror.ERROR_ACCESS_DENIED]
    assert win32gui.IsWindow(hwnd)
    win32gui.DestroyWindow(hwnd)
    win32gui.UnregisterClass(atom, 0)


def test_enum_windows_stops_as_pywin32_does() -> None:
    name, atom = new_class()
    hwnds = [win32gui.CreateWindowEx(0, name, f"enum {i}", 0, 0, 0, 0, 0, 0, 0, 0, None) for i in range(3)]
    try:
        seen: list[int] = []
        win32gui.EnumWindows(lambda h, acc: acc.append(h), seen)
        assert set(hwnds) <= set(seen)

        # returning False stops, and pywin32's EnumWindows then raises with winerror 0
        first: list[int] = []

        def stop(h: int, acc: list[int]) -> bool:
            acc.append(h)
            return False

        assert code_of(lambda: win32gui.EnumWindows(stop, first)) == 0
        assert len(first) == 1

        def fail(h: int, extra: Any) -> None:
            raise LookupError("from the callback")

        with pytest.raises(LookupError):
            win32gui.EnumWindows(fail, None)
        with pytest.raises(TypeError):
            win32gui.EnumWindows("not callable", None)
    finally:
        for h in hwnds:
            win32gui.DestroyWindow(h)
        win32gui.UnregisterClass(atom, 0)


def test_system_class_names_need_no_registration() -> None:
    hwnd = win32gui.CreateWindow("STATIC", "plain", 0, 0, 0, 0, 0, 0, 0, 0, None)
    try:
        assert win32gui.FindWindow("static", "plain") == hwnd
        assert win32gui.SendMessage(hwnd, win32con.WM_USER, 0, 0) == 0
        assert win32gui.SendMessage(hwnd, win32con.WM_SETTEXT, 0, "new text") == 1
        assert win32gui.GetWindowText(hwnd) == "new text"
    finally:
        win32gui.DestroyWindow(hwnd)
