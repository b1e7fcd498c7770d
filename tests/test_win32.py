"""The pywin32-shaped face (winipc.win32): shapes, codes and overlapped I/O, across processes.

Each test has a real process at the other end of the pipe (conftest.run_py). Scripts
that run in those processes are written the way pywin32 scripts are: ``import
win32pipe`` etc. after ``winipc.win32.install()``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator

import pytest

import winipc.win32
from winipc.win32 import (
    _handles,
    pywintypes,
    win32api,
    win32con,
    win32event,
    win32file,
    win32pipe,
    winerror,
)

from conftest import run_py, wait_line

PRELUDE = """\
import sys
import winipc.win32
assert winipc.win32.install(), "pywin32 is installed here"
import pywintypes, win32api, win32con, win32event, win32file, win32pipe, winerror
"""

RW = win32con.GENERIC_READ | win32con.GENERIC_WRITE


def script(code: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    """Run ``code`` (written as for pywin32) in a new Python process."""
    return run_py(PRELUDE + textwrap.dedent(code), *args, **kw)


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Wait for ``proc``; fail with its stderr unless it exited 0. Returns the rest of stdout.

    Reads through the text streams (not communicate()), so lines wait_line() left in
    their buffers are not lost. The scripts write little, so the pipes cannot fill.
    """
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"process did not end; stderr:\n{err}") from None
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{err}"
    return out


def send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def client(name: str, flags: int = 0) -> pywintypes.PyHANDLE:
    return win32file.CreateFile(name, RW, 0, None, win32con.OPEN_EXISTING, flags, None)


def new_event(manual: bool = False) -> pywintypes.PyHANDLE:
    return win32event.CreateEvent(None, manual, False, None)


@pytest.fixture(autouse=True)
def no_handle_leaks() -> Iterator[None]:
    """Every handle a test opens in this process is closed by its end."""
    before = _handles.open_count()
    yield
    assert _handles.open_count() == before, "a PyHANDLE was left open"


# ---------------------------------------------------------------- a pywin32 script


SERVER = r"""
PIPE = r"\\.\pipe\pywin32-echo"
h = win32pipe.CreateNamedPipe(
    PIPE,
    win32pipe.PIPE_ACCESS_DUPLEX,
    win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_WAIT,
    1, 65536, 65536, 0, None)
print("READY", flush=True)
for _ in range(2):
    hr = win32pipe.ConnectNamedPipe(h, None)
    assert hr in (0, winerror.ERROR_PIPE_CONNECTED), hr
    print("CLIENT", win32pipe.GetNamedPipeClientProcessId(h), flush=True)
    while True:
        try:
            hr, data = win32file.ReadFile(h, 4096)
        except pywintypes.error as e:
            if e.winerror != winerror.ERROR_BROKEN_PIPE:
                raise
            break
        win32file.WriteFile(h, data.upper())
    win32pipe.DisconnectNamedPipe(h)
win32file.CloseHandle(h)
print("DONE", flush=True)
"""

CLIENT = r"""
PIPE = r"\\.\pipe\pywin32-echo"
while True:
    try:
        h = win32file.CreateFile(PIPE, win32con.GENERIC_READ | win32con.GENERIC_WRITE, 0, None,
                                 win32con.OPEN_EXISTING, 0, None)
        break
    except pywintypes.error as e:
        if e.winerror != winerror.ERROR_PIPE_BUSY:
            raise
        win32pipe.WaitNamedPipe(PIPE, 2000)
win32pipe.SetNamedPipeHandleState(h, win32pipe.PIPE_READMODE_MESSAGE, None, None)
hr, data = win32pipe.TransactNamedPipe(h, b"hello", 4096, None)
print("REPLY", hr, data.decode())
win32file.WriteFile(h, b"second")
hr, data = win32file.ReadFile(h, 4096)
print("REPLY", hr, data.decode())
print("SERVER", win32pipe.GetNamedPipeServerProcessId(h))
h.Close()
print("CALL", win32pipe.CallNamedPipe(PIPE, b"call me", 4096, win32pipe.NMPWAIT_WAIT_FOREVER).decode())
"""


def test_pywin32_script_server_and_client_in_two_processes() -> None:
    server = script(SERVER)
    wait_line(server, "READY")
    client_proc = script(CLIENT)
    out = finish(client_proc)
    assert "REPLY 0 HELLO" in out
    assert "REPLY 0 SECOND" in out
    assert f"SERVER {server.pid}" in out
    assert "CALL CALL ME" in out
    assert wait_line(server, "CLIENT") == f"CLIENT {client_proc.pid}"
    assert "DONE" in finish(server)


# ---------------------------------------------------------------- messages, busy, waits


def test_readfile_more_data_then_the_rest() -> None:
    name = r"\\.\pipe\w32-more"
    server = script(
        r"""
        h = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-more", win32pipe.PIPE_ACCESS_OUTBOUND,
                                      win32pipe.PIPE_TYPE_MESSAGE, 1, 0, 0, 0, None)
        print("READY", flush=True)
        win32pipe.ConnectNamedPipe(h)
        win32file.WriteFile(h, b"0123456789")
        win32file.WriteFile(h, b"next")
        print("SENT", flush=True)
        win32file.FlushFileBuffers(h)
        h.Close()
        """
    )
    wait_line(server, "READY")
    h = win32file.CreateFile(name, win32con.GENERIC_READ, 0, None, win32con.OPEN_EXISTING, 0, None)
    try:
        wait_line(server, "SENT")
        # a new client handle reads in byte mode; switch, as on Windows
        assert win32pipe.GetNamedPipeHandleState(h)[0] == 0
        win32pipe.SetNamedPipeHandleState(h, win32pipe.PIPE_READMODE_MESSAGE, None, None)
        assert win32pipe.PeekNamedPipe(h, 4) == (b"0123", 14, 6)
        assert win32file.ReadFile(h, 4) == (winerror.ERROR_MORE_DATA, b"0123")
        assert win32file.ReadFile(h, 4) == (winerror.ERROR_MORE_DATA, b"4567")
        assert win32file.ReadFile(h, 4) == (0, b"89")
        buf = bytearray(16)
        hr, data = win32file.ReadFile(h, buf)
        assert (hr, data) == (0, b"next")
        assert bytes(buf[:4]) == b"next"
    finally:
        h.Close()
    finish(server)


def test_pipe_busy_and_wait_named_pipe_timeout() -> None:
    name = r"\\.\pipe\w32-busy"
    server = script(
        r"""
        h = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-busy", win32pipe.PIPE_ACCESS_DUPLEX,
                                      win32pipe.PIPE_TYPE_BYTE, 1, 0, 0, 0, None)
        print("READY", flush=True)
        print("CONNECTED", win32pipe.ConnectNamedPipe(h), flush=True)
        try:
            win32file.ReadFile(h, 10)
        except pywintypes.error as e:
            print("END", e.winerror, flush=True)
        h.Close()
        """
    )
    wait_line(server, "READY")
    first = client(name)
    try:
        # winipc's WaitNamedPipe still sees an instance whose client connected before
        # ConnectNamedPipe (a core limitation); wait until the server took its client
        wait_line(server, "CONNECTED")
        with pytest.raises(pywintypes.error) as busy:
            client(name)
        assert busy.value.args == (
            winerror.ERROR_PIPE_BUSY,
            "CreateFile",
            "All pipe instances are busy.",
        )
        start = time.monotonic()
        with pytest.raises(pywintypes.error) as waited:
            win32pipe.WaitNamedPipe(name, 300)
        elapsed = time.monotonic() - start
        assert waited.value.winerror == winerror.ERROR_SEM_TIMEOUT == 121
        assert waited.value.funcname == "WaitNamedPipe"
        assert elapsed >= 0.29  # never early
    finally:
        first.Close()
    assert wait_line(server, "END") == "END 109"
    finish(server)


def test_wait_named_pipe_missing_name_fails_at_once() -> None:
    start = time.monotonic()
    with pytest.raises(pywintypes.error) as missing:
        win32pipe.WaitNamedPipe(r"\\.\pipe\w32-nobody", win32pipe.NMPWAIT_WAIT_FOREVER)
    assert missing.value.winerror == winerror.ERROR_FILE_NOT_FOUND == 2
    assert time.monotonic() - start < 5.0
    with pytest.raises(pywintypes.error) as opened:
        client(r"\\.\pipe\w32-nobody")
    assert opened.value.args[:2] == (2, "CreateFile")


def test_connect_named_pipe_reports_535_when_the_client_came_first() -> None:
    server = script(
        r"""
        for name, flags in ((r"\\.\pipe\w32-first", 0),
                            (r"\\.\pipe\w32-first-ov", win32con.FILE_FLAG_OVERLAPPED)):
            h = win32pipe.CreateNamedPipe(name, win32pipe.PIPE_ACCESS_DUPLEX | flags,
                                          win32pipe.PIPE_TYPE_BYTE, 1, 0, 0, 0, None)
            print("READY", flush=True)
            sys.stdin.readline()               # the client has opened the pipe
            if flags:
                ov = pywintypes.OVERLAPPED()
                ov.hEvent = win32event.CreateEvent(None, True, False, None)
                hr = win32pipe.ConnectNamedPipe(h, ov)
                # as on Windows, the event is not signalled for 535
                print("RESULT", hr, win32event.WaitForSingleObject(ov.hEvent, 0), flush=True)
                ov.hEvent.Close()
            else:
                print("RESULT", win32pipe.ConnectNamedPipe(h, None), flush=True)
            win32file.WriteFile(h, b"hi")
            win32file.FlushFileBuffers(h)
            h.Close()
        """,
        stdin=subprocess.PIPE,
    )
    for name, expected in (
        (r"\\.\pipe\w32-first", "RESULT 535"),
        (r"\\.\pipe\w32-first-ov", "RESULT 535 258"),
    ):
        wait_line(server, "READY")
        h = client(name)
        try:
            send(server, "go")
            assert wait_line(server, "RESULT") == expected
            assert win32file.ReadFile(h, 10) == (0, b"hi")
        finally:
            h.Close()
    finish(server)


# ---------------------------------------------------------------- overlapped I/O


WRITER = r"""
name = sys.argv[1]
win32pipe.WaitNamedPipe(name, win32pipe.NMPWAIT_WAIT_FOREVER)
h = win32file.CreateFile(name, win32con.GENERIC_READ | win32con.GENERIC_WRITE, 0, None,
                         win32con.OPEN_EXISTING, 0, None)
print("OPEN", flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "quit":
        break
    win32file.WriteFile(h, word.encode())
    print("WROTE", word, flush=True)
h.Close()
"""


def overlapped_server(name: str, pipe_mode: int = win32pipe.PIPE_TYPE_BYTE) -> pywintypes.PyHANDLE:
    return win32pipe.CreateNamedPipe(
        name,
        win32pipe.PIPE_ACCESS_DUPLEX | win32file.FILE_FLAG_OVERLAPPED,
        pipe_mode,
        1,
        0,
        0,
        0,
        None,
    )


def test_overlapped_connect_and_read_pending_then_completed() -> None:
    name = r"\\.\pipe\w32-ov"
    h = overlapped_server(name)
    event = new_event()
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = event
    writer = None
    try:
        assert win32pipe.ConnectNamedPipe(h, ov) == winerror.ERROR_IO_PENDING
        assert win32event.WaitForSingleObject(event, 0) == win32event.WAIT_TIMEOUT
        writer = script(WRITER, name, stdin=subprocess.PIPE)
        assert win32event.WaitForSingleObject(event, 20_000) == win32event.WAIT_OBJECT_0
        assert win32pipe.GetOverlappedResult(h, ov, False) == 0
        wait_line(writer, "OPEN")

        hr, buf = win32file.ReadFile(h, 64, ov)
        assert hr == winerror.ERROR_IO_PENDING == 997
        assert len(buf) == 64
        assert ov.Internal == 0x103  # STATUS_PENDING: HasOverlappedIoCompleted() is false
        with pytest.raises(pywintypes.error) as incomplete:
            win32file.GetOverlappedResult(h, ov, False)
        assert incomplete.value.args[:2] == (winerror.ERROR_IO_INCOMPLETE, "GetOverlappedResult")
        assert win32event.WaitForSingleObject(event, 50) == win32event.WAIT_TIMEOUT

        send(writer, "ping")
        assert win32event.WaitForSingleObject(event, 20_000) == win32event.WAIT_OBJECT_0
        n = win32file.GetOverlappedResult(h, ov, True)
        assert n == 4
        assert bytes(buf[:n]) == b"ping"
        assert (ov.Internal, ov.InternalHigh) == (0, 4)

        # a buffer of our own is filled and returned as is
        mine = win32file.AllocateReadBuffer(8)
        hr, same = win32file.ReadFile(h, mine, ov)
        assert hr == 997 and same is mine
        send(writer, "pong")
        assert win32file.GetOverlappedResult(h, ov, True) == 4
        assert bytes(mine[:4]) == b"pong"

        hr, n_written = win32file.WriteFile(h, b"back", ov)
        assert (hr, n_written) == (997, 0)
        assert win32file.GetOverlappedResult(h, ov, True) == 4
        send(writer, "quit")
        hr, buf = win32file.ReadFile(h, 8, ov)
        assert hr == 997
        with pytest.raises(pywintypes.error) as ended:
            win32file.GetOverlappedResult(h, ov, True)
        assert ended.value.winerror == winerror.ERROR_BROKEN_PIPE
    finally:
        h.Close()
        event.Close()
        if writer is not None:
            finish(writer)


def test_overlapped_read_of_a_longer_message_fails_with_more_data() -> None:
    name = r"\\.\pipe\w32-ov-more"
    h = overlapped_server(name, win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE)
    writer = script(WRITER, name, stdin=subprocess.PIPE)
    ov = pywintypes.OVERLAPPED()
    try:
        assert win32pipe.ConnectNamedPipe(h, None) in (0, winerror.ERROR_PIPE_CONNECTED)
        wait_line(writer, "OPEN")
        send(writer, "abcdefgh")
        hr, buf = win32file.ReadFile(h, 5, ov)
        assert hr == 997
        with pytest.raises(pywintypes.error) as more:
            win32file.GetOverlappedResult(h, ov, True)
        assert more.value.winerror == winerror.ERROR_MORE_DATA
        assert ov.InternalHigh == 5 and bytes(buf) == b"abcde"
        assert win32file.ReadFile(h, 10) == (0, b"fgh")
        send(writer, "quit")
    finally:
        h.Close()
        finish(writer)


def test_cancel_io_aborts_pending_operations_with_995() -> None:
    name = r"\\.\pipe\w32-cancel"
    h = overlapped_server(name)
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = new_event(manual=True)
    writer = None
    try:
        # a pending ConnectNamedPipe
        assert win32pipe.ConnectNamedPipe(h, ov) == 997
        win32file.CancelIo(h)
        assert win32event.WaitForSingleObject(ov.hEvent, 10_000) == win32event.WAIT_OBJECT_0
        with pytest.raises(pywintypes.error) as aborted:
            win32file.GetOverlappedResult(h, ov, True)
        assert aborted.value.args == (
            winerror.ERROR_OPERATION_ABORTED,
            "GetOverlappedResult",
            win32api.FormatMessage(995).rstrip("\r\n"),
        )
        # the instance still takes a client
        assert win32pipe.ConnectNamedPipe(h, ov) == 997
        writer = script(WRITER, name, stdin=subprocess.PIPE)
        assert win32file.GetOverlappedResult(h, ov, True) == 0
        wait_line(writer, "OPEN")

        # a pending ReadFile on the server end
        hr, _buf = win32file.ReadFile(h, 16, ov)
        assert hr == 997
        win32file.CancelIo(h)
        with pytest.raises(pywintypes.error) as read_aborted:
            win32file.GetOverlappedResult(h, ov, True)
        assert read_aborted.value.winerror == 995

        # nothing is left over: the next read gets the next data
        send(writer, "after")
        assert wait_line(writer, "WROTE") == "WROTE after"
        hr, buf = win32file.ReadFile(h, 16, ov)
        assert win32file.GetOverlappedResult(h, ov, True) == 5
        assert bytes(buf[:5]) == b"after"
        win32file.CancelIo(h)  # nothing pending: harmless
        send(writer, "quit")
    finally:
        h.Close()
        ov.hEvent.Close()
        if writer is not None:
            finish(writer)


def test_cancel_io_on_a_client_and_close_with_a_read_pending() -> None:
    name = r"\\.\pipe\w32-client-cancel"
    server = script(
        r"""
        h = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-client-cancel", win32pipe.PIPE_ACCESS_DUPLEX,
                                      win32pipe.PIPE_TYPE_BYTE, 1, 0, 0, 0, None)
        print("READY", flush=True)
        win32pipe.ConnectNamedPipe(h)
        sys.stdin.readline()
        win32file.WriteFile(h, b"late")
        print("WROTE", flush=True)
        try:
            win32file.ReadFile(h, 10)
        except pywintypes.error as e:
            print("END", e.winerror, flush=True)
        h.Close()
        """,
        stdin=subprocess.PIPE,
    )
    wait_line(server, "READY")
    h = client(name, win32file.FILE_FLAG_OVERLAPPED)
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = new_event()
    try:
        hr, _ = win32file.ReadFile(h, 16, ov)
        assert hr == 997
        win32file.CancelIo(h)
        with pytest.raises(pywintypes.error) as aborted:
            win32file.GetOverlappedResult(h, ov, True)
        assert aborted.value.winerror == winerror.ERROR_OPERATION_ABORTED
        send(server, "go")
        wait_line(server, "WROTE")
        assert win32file.ReadFile(h, 16) == (0, b"late")

        hr, _ = win32file.ReadFile(h, 16, ov)
        assert hr == 997
        event = ov.hEvent
        h.Close()  # closing cancels what is in flight
        assert win32event.WaitForSingleObject(event, 10_000) == win32event.WAIT_OBJECT_0
        with pytest.raises(pywintypes.error) as closed:
            win32file.GetOverlappedResult(h, ov, True)
        assert closed.value.winerror == winerror.ERROR_INVALID_HANDLE
        assert ov.Internal != 0x103 and ov._op is not None
        assert ov._op.code == winerror.ERROR_OPERATION_ABORTED
    finally:
        h.Close()
        ov.hEvent.Close()
    assert wait_line(server, "END") == "END 109"
    finish(server)


def test_overlapped_transact_on_a_client() -> None:
    name = r"\\.\pipe\w32-transact"
    server = script(
        r"""
        h = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-transact", win32pipe.PIPE_ACCESS_DUPLEX,
                                      win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE,
                                      1, 0, 0, 0, None)
        print("READY", flush=True)
        win32pipe.ConnectNamedPipe(h)
        hr, data = win32file.ReadFile(h, 100)
        win32file.WriteFile(h, data[::-1])
        try:
            win32file.ReadFile(h, 10)
        except pywintypes.error as e:
            print("END", e.winerror, flush=True)
        h.Close()
        """
    )
    wait_line(server, "READY")
    h = client(name, win32file.FILE_FLAG_OVERLAPPED)
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = new_event()
    try:
        with pytest.raises(pywintypes.error) as bad:
            win32pipe.TransactNamedPipe(h, b"x", 10, ov)
        assert bad.value.args[:2] == (winerror.ERROR_BAD_PIPE, "TransactNamedPipe")
        win32pipe.SetNamedPipeHandleState(h, win32pipe.PIPE_READMODE_MESSAGE, None, None)
        buf = win32file.AllocateReadBuffer(64)
        hr, got = win32pipe.TransactNamedPipe(h, b"stressed", buf, ov)
        assert hr == 997 and got is buf
        assert win32event.WaitForSingleObject(ov.hEvent, 20_000) == win32event.WAIT_OBJECT_0
        n = win32pipe.GetOverlappedResult(h, ov, False)
        assert buf[:n] == b"desserts"
    finally:
        h.Close()
        ov.hEvent.Close()
    assert wait_line(server, "END") == "END 109"
    finish(server)


# ---------------------------------------------------------------- types and errors


def test_error_shape_and_module_aliases() -> None:
    for mod in (win32pipe, win32file, win32api, win32event):
        assert mod.error is pywintypes.error
    with pytest.raises(pywintypes.error) as missing:
        win32file.CreateFile(r"\\.\pipe\w32-none", RW, 0, None, win32con.OPEN_EXISTING, 0, None)
    err = missing.value
    assert err.args == (2, "CreateFile", "The system cannot find the file specified.")
    assert (err.winerror, err.funcname, err.strerror) == err.args
    assert isinstance(err.__cause__, winipc.errors.FileNotFound)
    assert win32api.GetLastError() == 2
    built = pywintypes.error(5, "X", "Access is denied.")
    assert built.args == (5, "X", "Access is denied.") and built.winerror == 5
    with pytest.raises(pywintypes.error) as not_pipe:
        win32file.CreateFile("/etc/passwd", RW, 0, None, win32con.OPEN_EXISTING, 0, None)
    assert not_pipe.value.winerror == winerror.ERROR_NOT_SUPPORTED
    with pytest.raises(TypeError):
        win32file.ReadFile("not a handle", 10)


def test_closed_handle_gives_error_6() -> None:
    h = win32pipe.CreateNamedPipe(
        r"\\.\pipe\w32-closed", win32pipe.PIPE_ACCESS_DUPLEX, 0, 1, 0, 0, 0, None
    )
    value = int(h)
    assert value and h.handle == value and bool(h)
    assert h == value and str(h) == f"<PyHANDLE:{value}>"
    h.Close()
    assert int(h) == 0 and not h
    h.Close()  # closing a closed PyHANDLE does nothing, as in pywin32
    for call in (
        lambda: win32file.ReadFile(h, 1),
        lambda: win32file.WriteFile(h, b"x"),
        lambda: win32pipe.ConnectNamedPipe(h),
        lambda: win32file.ReadFile(value, 1),
        lambda: win32file.CloseHandle(value),
    ):
        with pytest.raises(pywintypes.error) as bad:
            call()
        assert bad.value.winerror == winerror.ERROR_INVALID_HANDLE == 6
    # Detach gives up ownership; the number stays usable until closed
    h2 = win32pipe.CreateNamedPipe(
        r"\\.\pipe\w32-closed", win32pipe.PIPE_ACCESS_DUPLEX, 0, 1, 0, 0, 0, None
    )
    number = h2.Detach()
    assert int(h2) == 0
    del h2
    assert win32pipe.GetNamedPipeInfo(number)[3] == 1
    win32api.CloseHandle(number)
    with pytest.raises(pywintypes.error):
        win32api.CloseHandle(number)


def test_dword_constants_signed_and_unsigned() -> None:
    name = r"\\.\pipe\w32-dword"
    server = script(
        r"""
        h = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-dword", win32pipe.PIPE_ACCESS_DUPLEX,
                                      win32pipe.PIPE_TYPE_BYTE, 2, 0, 0, 0, None)
        h2 = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-dword", win32pipe.PIPE_ACCESS_DUPLEX,
                                       win32pipe.PIPE_TYPE_BYTE, 2, 0, 0, 0, None)
        print("READY", flush=True)
        for inst in (h, h2):
            win32pipe.ConnectNamedPipe(inst)
        sys.stdin.readline()
        h.Close(); h2.Close()
        """,
        stdin=subprocess.PIPE,
    )
    wait_line(server, "READY")
    assert win32con.GENERIC_READ == -2147483648 and win32pipe.NMPWAIT_WAIT_FOREVER == -1
    win32pipe.WaitNamedPipe(name, -1)
    win32pipe.WaitNamedPipe(name, 0xFFFFFFFF)
    signed = win32file.CreateFile(name, win32con.GENERIC_READ, 0, None, 3, 0, None)
    unsigned = win32file.CreateFile(name, 0x80000000 | 0x40000000, 0, None, 3, 0, None)
    try:
        assert win32pipe.GetNamedPipeInfo(signed) == (win32pipe.PIPE_CLIENT_END, 0, 0, 2)
        assert win32pipe.GetNamedPipeHandleState(unsigned)[:2] == (0, 2)
        with pytest.raises(pywintypes.error) as readonly:
            win32file.WriteFile(signed, b"x")
        assert readonly.value.winerror == winerror.ERROR_ACCESS_DENIED
    finally:
        signed.Close()
        unsigned.Close()
        send(server, "done")
    finish(server)


def test_pipe_info_state_and_process_ids() -> None:
    name = r"\\.\pipe\w32-info"
    h = win32pipe.CreateNamedPipe(
        name,
        win32pipe.PIPE_ACCESS_DUPLEX,
        win32pipe.PIPE_TYPE_MESSAGE | win32pipe.PIPE_READMODE_MESSAGE | win32pipe.PIPE_NOWAIT,
        4,
        1024,
        2048,
        100,
        None,
    )
    writer = None
    try:
        flags, out_size, in_size, max_inst = win32pipe.GetNamedPipeInfo(h)
        assert flags == win32pipe.PIPE_SERVER_END | win32pipe.PIPE_TYPE_MESSAGE
        assert (out_size, in_size, max_inst) == (1024, 2048, 4)
        state = win32pipe.GetNamedPipeHandleState(h)
        assert state == (win32pipe.PIPE_NOWAIT | win32pipe.PIPE_READMODE_MESSAGE, 1, None, None, "")
        with pytest.raises(pywintypes.error) as listening:
            win32pipe.ConnectNamedPipe(h)  # PIPE_NOWAIT and no client
        assert listening.value.winerror == winerror.ERROR_PIPE_LISTENING
        writer = script(WRITER, name, stdin=subprocess.PIPE)
        wait_line(writer, "OPEN")
        assert win32pipe.ConnectNamedPipe(h) == winerror.ERROR_PIPE_CONNECTED
        assert win32pipe.GetNamedPipeClientProcessId(h) == writer.pid
        assert win32pipe.GetNamedPipeServerProcessId(h) == win32api.GetCurrentProcessId()
        user = win32pipe.GetNamedPipeHandleState(h, False, True)[4]
        assert user and isinstance(user, str)
        with pytest.raises(pywintypes.error) as empty:
            win32file.ReadFile(h, 10)  # PIPE_NOWAIT, nothing yet
        assert empty.value.winerror == winerror.ERROR_NO_DATA
        win32pipe.SetNamedPipeHandleState(h, win32pipe.PIPE_READMODE_MESSAGE, None, None)
        send(writer, "hello")
        assert win32file.ReadFile(h, 10) == (0, b"hello")
        with pytest.raises(pywintypes.error) as bad_mode:
            win32pipe.SetNamedPipeHandleState(h, 0x100, None, None)
        assert bad_mode.value.winerror == winerror.ERROR_INVALID_PARAMETER
        send(writer, "quit")
    finally:
        h.Close()
        if writer is not None:
            finish(writer)


# ---------------------------------------------------------------- anonymous pipes


def test_create_pipe_with_a_child_process() -> None:
    sa = pywintypes.SECURITY_ATTRIBUTES()
    sa.bInheritHandle = 1
    r, w = win32pipe.CreatePipe(sa, 0)
    try:
        fd = w.object.fileno()
        child = run_py(
            "import os, sys; os.write(int(sys.argv[1]), b'from the child')",
            str(fd),
            pass_fds=(fd,),
        )
        finish(child)
        w.Close()
        data, total, left = win32pipe.PeekNamedPipe(r, 4)
        assert (data, total, left) == (b"from", 14, 0)
        assert win32file.ReadFile(r, 100) == (0, b"from the child")
        with pytest.raises(pywintypes.error) as ended:
            win32file.ReadFile(r, 100)
        assert ended.value.winerror == winerror.ERROR_BROKEN_PIPE
        assert win32pipe.GetNamedPipeInfo(r) == (win32pipe.PIPE_SERVER_END, 0, 0, 1)
    finally:
        r.Close()
        w.Close()


# ---------------------------------------------------------------- events


def test_events_auto_manual_and_multiple_waits() -> None:
    auto = win32event.CreateEvent(None, 0, 0, None)
    manual = win32event.CreateEvent(None, 1, 1, None)
    try:
        assert win32event.WaitForSingleObject(manual, 0) == win32event.WAIT_OBJECT_0
        assert win32event.WaitForSingleObject(manual, 0) == win32event.WAIT_OBJECT_0
        start = time.monotonic()
        assert win32event.WaitForSingleObject(auto, 100) == win32event.WAIT_TIMEOUT
        assert time.monotonic() - start >= 0.099

        woken: list[int] = []

        def waiter() -> None:
            woken.append(win32event.WaitForSingleObject(auto, 10_000))

        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for t in threads:
            t.start()
        win32event.SetEvent(auto)
        deadline = time.monotonic() + 10
        while not woken and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert woken == [0]  # an auto-reset event releases one waiter per set
        win32event.SetEvent(auto)
        for t in threads:
            t.join(10)
        assert woken == [0, 0]

        assert win32event.WaitForMultipleObjects([auto, manual], False, 0) == 1
        assert win32event.WaitForMultipleObjects([auto, manual], True, 0) == win32event.WAIT_TIMEOUT
        win32event.SetEvent(auto)
        assert win32event.WaitForMultipleObjects([auto, manual], True, win32event.INFINITE) == 0
        assert win32event.WaitForSingleObject(auto, 0) == win32event.WAIT_TIMEOUT
        win32event.ResetEvent(manual)
        assert win32event.WaitForMultipleObjects([auto, manual], False, 0) == 258
        with pytest.raises(pywintypes.error) as empty:
            win32event.WaitForMultipleObjects([], False, 0)
        assert empty.value.winerror == winerror.ERROR_INVALID_PARAMETER
    finally:
        auto.Close()
        manual.Close()


def test_named_event_and_a_pipe_server_handle() -> None:
    named = win32event.CreateEvent(None, 0, 0, "Local\\w32-named")
    again = win32event.CreateEvent(None, 0, 0, "Local\\w32-named")
    assert win32api.GetLastError() == winerror.ERROR_ALREADY_EXISTS
    pipe = win32pipe.CreateNamedPipe(r"\\.\pipe\w32-ev", 3, 0, 1, 0, 0, 0, None)
    try:
        win32event.SetEvent(named)
        assert win32event.WaitForSingleObject(again, 0) == win32event.WAIT_OBJECT_0
        with pytest.raises(pywintypes.error) as not_waitable:
            win32event.WaitForSingleObject(pipe, 0)  # Windows signals it on I/O completion
        assert not_waitable.value.winerror == winerror.ERROR_INVALID_HANDLE
    finally:
        pipe.Close()
        named.Close()
        again.Close()


# ---------------------------------------------------------------- install()


def test_install_registers_modules_unless_pywin32_is_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in winipc.win32.MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "pywintypes", types.ModuleType("pywintypes"))
    assert winipc.win32.install() is False
    assert "win32pipe" not in sys.modules
    monkeypatch.delitem(sys.modules, "pywintypes")
    try:
        assert winipc.win32.install() is True
        import win32pipe as imported  # type: ignore[import-not-found]

        assert imported is win32pipe
        assert winipc.win32.install() is True
    finally:
        winipc.win32.uninstall()
    assert "win32pipe" not in sys.modules
