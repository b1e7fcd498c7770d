"""winipc.win32.win32clipboard over winipc.clipboard: pywin32's conversions and codes.

Data set in one real process is read in another, through scripts written as for pywin32.
The desktop bridge is off (WINIPC_CLIPBOARD_BRIDGE=0): these tests are about the winipc
clipboard itself.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from collections.abc import Iterator

import pytest

from win32util import code_of, finish, kill
from winipc import clipboard
from winipc import errors as W
from winipc.win32 import pywintypes, win32clipboard, win32con, win32gui

from conftest import run_py, wait_line

PRELUDE = """\
import sys, time
import winipc.win32
assert winipc.win32.install(), "pywin32 is installed here"
import pywintypes, win32api, win32clipboard, win32con, win32gui, winerror
"""

_children: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_bridge(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No desktop clipboard sync, here and in the child processes; this test's clipboard
    (the per-process default handle is bound to the root it was made in); children reaped."""
    monkeypatch.setenv("WINIPC_CLIPBOARD_BRIDGE", "0")
    clipboard._default = None
    yield
    while _children:
        kill(_children.pop())
    try:
        win32clipboard.CloseClipboard()  # a failed test must not leave it open
    except pywintypes.error:
        pass
    if clipboard._default is not None:
        clipboard._default.release()
        clipboard._default = None


def script(code: str, *args: str) -> subprocess.Popen[str]:
    proc = run_py(PRELUDE + textwrap.dedent(code), *args, stdin=subprocess.PIPE)
    _children.append(proc)
    return proc


def send_line(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()








def formats_by_enum() -> list[int]:
    """EnumClipboardFormats' iteration, as pywin32 scripts write it."""
    out: list[int] = []
    fmt = win32clipboard.EnumClipboardFormats(0)
    while fmt:
        out.append(fmt)
        fmt = win32clipboard.EnumClipboardFormats(fmt)
    return out


# ---------------------------------------------------------------- across processes


def test_data_set_in_one_process_is_read_in_another() -> None:
    text = "héllo wörld ✓"
    blob_fmt = win32clipboard.RegisterClipboardFormat("WinIPC Test Blob")
    win32clipboard.OpenClipboard()
    win32clipboard.EmptyClipboard()
    assert win32clipboard.SetClipboardText(text, win32con.CF_UNICODETEXT) != 0
    assert win32clipboard.SetClipboardData(blob_fmt, bytearray(b"\x00\x01raw")) != 0
    win32clipboard.CloseClipboard()

    child = script(
        r"""
        fmt = win32clipboard.RegisterClipboardFormat("winipc test blob")
        print("SAME", fmt == win32gui.RegisterWindowMessage("WINIPC TEST BLOB"), fmt, flush=True)
        print("NAME", win32clipboard.GetClipboardFormatName(fmt), flush=True)
        win32clipboard.OpenClipboard()
        print("TEXT", ascii(win32clipboard.GetClipboardData()), flush=True)
        print("ANSI", ascii(win32clipboard.GetClipboardData(win32con.CF_TEXT)), flush=True)
        print("OEM", ascii(win32clipboard.GetClipboardData(win32con.CF_OEMTEXT)), flush=True)
        print("BLOB", win32clipboard.GetClipboardData(fmt).hex(), flush=True)
        formats, f = [], win32clipboard.EnumClipboardFormats(0)
        while f:
            formats.append(f)
            f = win32clipboard.EnumClipboardFormats(f)
        print("FORMATS", *formats, flush=True)
        print("COUNT", win32clipboard.CountClipboardFormats(), flush=True)
        win32clipboard.CloseClipboard()
        """
    )
    assert wait_line(child, "SAME") == f"SAME True {blob_fmt}"
    assert wait_line(child, "NAME") == "NAME WinIPC Test Blob"
    assert wait_line(child, "TEXT") == f"TEXT {text!a}"
    assert wait_line(child, "ANSI") == f"ANSI {text.encode('cp1252', errors='replace')!a}"
    assert wait_line(child, "OEM") == f"OEM {text.encode('cp437', errors='replace')!a}"
    assert wait_line(child, "BLOB") == "BLOB 0001726177"  # a bytearray gets no terminator
    formats = [int(f) for f in wait_line(child, "FORMATS").split()[1:]]
    assert formats[:2] == [win32con.CF_UNICODETEXT, blob_fmt]  # the order they were set
    assert {win32con.CF_TEXT, win32con.CF_OEMTEXT, win32con.CF_LOCALE} <= set(formats[2:])
    assert wait_line(child, "COUNT") == f"COUNT {len(formats)}"
    finish(child)


def test_open_by_another_process_is_access_denied_at_once() -> None:
    win32clipboard.OpenClipboard()
    child = script(
        r"""
        for attempt in ("FIRST", "SECOND"):
            sys.stdin.readline()
            try:
                win32clipboard.OpenClipboard()
            except pywintypes.error as e:
                print(attempt, e.winerror, e.funcname, flush=True)
            else:
                win32clipboard.EmptyClipboard()
                win32clipboard.SetClipboardText(b"from the child")
                win32clipboard.CloseClipboard()
                print(attempt, "OK", flush=True)
        """
    )
    send_line(child, "go")
    assert wait_line(child, "FIRST") == "FIRST 5 OpenClipboard"
    win32clipboard.CloseClipboard()
    send_line(child, "go")
    assert wait_line(child, "SECOND") == "SECOND OK"
    finish(child)
    win32clipboard.OpenClipboard()
    try:
        assert win32clipboard.GetClipboardData(win32con.CF_TEXT) == b"from the child"
        assert win32clipboard.GetClipboardData() == "from the child"
    finally:
        win32clipboard.CloseClipboard()


RENDERER = r"""
fmt = win32clipboard.RegisterClipboardFormat(sys.argv[1])

def on_render(hwnd, msg, wparam, lparam):
    win32clipboard.SetClipboardData(wparam, b"rendered %d" % wparam)
    print("RENDER", wparam, flush=True)
    return 0

def on_destroy(hwnd, msg, wparam, lparam):
    win32gui.PostQuitMessage(0)
    return 0

wc = win32gui.WNDCLASS()
wc.lpszClassName = "W32ClipRenderer"
wc.lpfnWndProc = {win32con.WM_RENDERFORMAT: on_render, win32con.WM_DESTROY: on_destroy}
win32gui.RegisterClass(wc)
hwnd = win32gui.CreateWindowEx(0, "W32ClipRenderer", "r", 0, 0, 0, 0, 0,
                               win32con.HWND_MESSAGE, 0, 0, None)
win32clipboard.OpenClipboard(hwnd)
win32clipboard.EmptyClipboard()
print("DELAYED", win32clipboard.SetClipboardData(fmt, None), flush=True)
win32clipboard.CloseClipboard()
print("READY", hwnd, flush=True)
win32gui.PumpMessages()
print("DONE", flush=True)
"""


def test_delayed_rendering_through_the_owners_window_procedure() -> None:
    fmt = win32clipboard.RegisterClipboardFormat("WinIPC Delayed")
    child = script(RENDERER, "WinIPC Delayed")
    assert wait_line(child, "DELAYED") == "DELAYED 0"
    hwnd = int(wait_line(child, "READY").split()[1])
    assert win32clipboard.GetClipboardOwner() == hwnd
    assert win32clipboard.IsClipboardFormatAvailable(fmt) == 1
    win32clipboard.OpenClipboard()
    try:
        assert win32clipboard.GetClipboardData(fmt) == b"rendered %d\0" % fmt
    finally:
        win32clipboard.CloseClipboard()
    assert wait_line(child, "RENDER") == f"RENDER {fmt}"
    win32gui.PostMessage(hwnd, win32con.WM_CLOSE, 0, 0)
    assert wait_line(child, "DONE") == "DONE"
    finish(child)


def test_listener_window_gets_clipboard_update_on_each_change() -> None:
    hwnd = win32gui.CreateWindowEx(0, "STATIC", "listener", 0, 0, 0, 0, 0, win32con.HWND_MESSAGE, 0, 0, None)
    upd = win32con.WM_CLIPBOARDUPDATE
    try:
        win32clipboard.AddClipboardFormatListener(hwnd)
        child = script('win32clipboard.OpenClipboard(); win32clipboard.EmptyClipboard(); '
                       'win32clipboard.SetClipboardText("x", win32con.CF_UNICODETEXT); '
                       'win32clipboard.CloseClipboard()')
        finish(child)
        deadline = time.monotonic() + 10
        got: list[int] = []
        while not got and time.monotonic() < deadline:
            rc, msg = win32gui.PeekMessage(hwnd, upd, upd, win32con.PM_REMOVE)
            if rc:
                got.append(msg[1])
            else:
                time.sleep(0.01)
        assert got == [upd]
        assert win32gui.PeekMessage(hwnd, upd, upd, win32con.PM_REMOVE)[0] == 0  # once per change
        win32clipboard.RemoveClipboardFormatListener(hwnd)
        assert code_of(lambda: win32clipboard.RemoveClipboardFormatListener(hwnd)) == 87
        finish(script('win32clipboard.OpenClipboard(); win32clipboard.EmptyClipboard(); '
                      'win32clipboard.CloseClipboard()'))
        time.sleep(0.2)
        assert win32gui.PeekMessage(hwnd, upd, upd, win32con.PM_REMOVE)[0] == 0
    finally:
        win32gui.DestroyWindow(hwnd)


# ---------------------------------------------------------------- in this process


def test_conversions_are_pywin32s() -> None:
    fmt = win32clipboard.RegisterClipboardFormat("WinIPC Bytes")
    win32clipboard.OpenClipboard()
    try:
        win32clipboard.EmptyClipboard()
        win32clipboard.SetClipboardData(fmt, b"abc")  # bytes: pywin32 adds a NUL
        assert win32clipboard.GetClipboardData(fmt) == b"abc\0"
        h = win32clipboard.SetClipboardData(win32con.CF_TEXT, b"xyz")
        assert win32clipboard.GetGlobalMemory(h) == b"xyz\0"
        assert win32clipboard.GetClipboardData(win32con.CF_TEXT) == b"xyz"
        assert win32clipboard.GetClipboardData(win32con.CF_UNICODETEXT) == "xyz"
        h2 = win32clipboard.GetClipboardDataHandle(win32con.CF_UNICODETEXT)
        assert win32clipboard.GetGlobalMemory(h2) == "xyz".encode("utf-16-le") + b"\0\0"
        # a handle from this module can be placed again, in another format
        other = win32clipboard.RegisterClipboardFormat("WinIPC Copy")
        win32clipboard.SetClipboardData(other, h2)
        assert win32clipboard.GetClipboardData(other) == "xyz".encode("utf-16-le") + b"\0\0"
        assert code_of(lambda: win32clipboard.SetClipboardData(other, 0x7FFF0000)) == 6

        paths = ["/tmp/a b.txt", "/tmp/ü/x"]
        win32clipboard.SetClipboardData(win32con.CF_HDROP, clipboard.encode_hdrop(paths))
        assert win32clipboard.GetClipboardData(win32con.CF_HDROP) == tuple(paths)

        with pytest.raises(TypeError, match="not available"):
            win32clipboard.GetClipboardData(win32con.CF_DIB)
        with pytest.raises(ValueError):
            win32clipboard.SetClipboardText("x", win32con.CF_OEMTEXT)
        assert win32clipboard.IsClipboardFormatAvailable(win32con.CF_DIB) == 0
        assert win32clipboard.IsClipboardFormatAvailable(win32con.CF_OEMTEXT) == 1  # synthesized
        assert win32clipboard.GetPriorityClipboardFormat([win32con.CF_DIB, fmt]) == fmt
        assert win32clipboard.GetPriorityClipboardFormat([win32con.CF_DIB]) == -1
        assert set(formats_by_enum()) >= {fmt, win32con.CF_TEXT, other, win32con.CF_HDROP}
        assert win32clipboard.EnumClipboardFormats(win32con.CF_DIB) == 0  # not there
    finally:
        win32clipboard.CloseClipboard()


def test_errors_and_counters_follow_windows_and_pywin32() -> None:
    assert code_of(win32clipboard.CloseClipboard) == W.ERROR_CLIPBOARD_NOT_OPEN
    assert code_of(win32clipboard.EmptyClipboard) == 1418
    assert code_of(lambda: win32clipboard.EnumClipboardFormats(0)) == 1418
    assert code_of(lambda: win32clipboard.SetClipboardData(win32con.CF_TEXT, b"x")) == 1418
    assert code_of(lambda: win32clipboard.GetClipboardFormatName(win32con.CF_TEXT)) == 87
    assert code_of(lambda: win32clipboard.OpenClipboard(0x7FFF_FFF0)) == 1400

    hwnd = win32gui.CreateWindowEx(0, "STATIC", "owner", 0, 0, 0, 0, 0, win32con.HWND_MESSAGE, 0, 0, None)
    try:
        seq = win32clipboard.GetClipboardSequenceNumber()
        win32clipboard.OpenClipboard(hwnd)
        try:
            assert win32clipboard.GetOpenClipboardWindow() == hwnd
            win32clipboard.EmptyClipboard()
            assert win32clipboard.GetClipboardOwner() == hwnd
            # pywin32 treats CountClipboardFormats' 0 as a failure
            assert code_of(win32clipboard.CountClipboardFormats) == 0
            assert win32clipboard.GetPriorityClipboardFormat([win32con.CF_TEXT]) == 0
            win32clipboard.SetClipboardText("one", win32con.CF_UNICODETEXT)
            assert win32clipboard.CountClipboardFormats() >= 1
        finally:
            win32clipboard.CloseClipboard()
        assert win32clipboard.GetClipboardSequenceNumber() > seq
        assert code_of(win32clipboard.GetOpenClipboardWindow) == 0
        win32clipboard.OpenClipboard()
        win32clipboard.EmptyClipboard()  # emptied without a window: no owner
        win32clipboard.CloseClipboard()
        assert code_of(win32clipboard.GetClipboardOwner) == 0
    finally:
        win32gui.DestroyWindow(hwnd)
    assert os.environ["WINIPC_CLIPBOARD_BRIDGE"] == "0"
