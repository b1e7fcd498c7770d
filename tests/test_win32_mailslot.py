"""Mailslots through the pywin32-shaped face: CreateMailslot, Get/SetMailslotInfo, and
CreateFile / WriteFile / ReadFile / CloseHandle on mailslot handles.

The sequence follows Wine's conformance test (dlls/kernel32/tests/mailslot.c), which
runs against real Windows, as far as it applies here: the info of a fresh slot, reads
of an empty slot (121), writes on the server handle (5), two writers, a zero-length
message, order and sizes, a short read (122, the message stays), a read time-out that
does not return early, a second CreateMailslot (183) and a missing name (2). Every
writer is a real process, written as a pywin32 script would be.
"""

from __future__ import annotations

import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from winipc.win32 import pywintypes, win32api, win32con, win32event, win32file, winerror

from conftest import run_py, wait_line

NAME = r"\\.\mailslot\wine_mailslot_test"

WRITER = """\
import sys
import winipc.win32
assert winipc.win32.install(), "pywin32 is installed here"
import pywintypes, win32con, win32file

h = win32file.CreateFile(sys.argv[1], int(sys.argv[2]), win32con.FILE_SHARE_READ, None,
                         win32con.OPEN_EXISTING, 0, None)
print("open", flush=True)
for line in sys.stdin:
    verb, _, arg = line.rstrip("\\n").partition(" ")
    try:
        if verb == "write":                      # the message, in hex ("" is empty)
            hr, n = win32file.WriteFile(h, bytes.fromhex(arg))
            print("wrote", hr, n, flush=True)
        elif verb == "read":
            hr, data = win32file.ReadFile(h, int(arg))
            print("read", hr, data.hex(), flush=True)
        elif verb == "close":
            win32file.CloseHandle(h)
            print("closed", flush=True)
    except pywintypes.error as e:
        print("error", e.winerror, e.funcname, flush=True)
"""


class Writer:
    """A process holding a CreateFile handle to a mailslot, acting on command."""

    def __init__(self, proc: subprocess.Popen[str], procs: list[subprocess.Popen[str]]) -> None:
        self.proc = proc
        self.procs = procs

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"writer ended; stderr:\n{self.proc.stderr.read() if self.proc.stderr else ''}"
        return line.strip()

    def write(self, data: bytes) -> str:
        return self.ask(f"write {data.hex()}")

    def finish(self) -> None:
        """End of commands: the process closes its handle (if still open) and exits 0.

        Reads the rest through the streams, not communicate(): readline() above may
        have left data in their buffers.
        """
        p = self.proc
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        p.stdin.close()
        p.wait(15)
        p.stdout.read()
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        self.procs.remove(p)  # reaped: the procs fixture has nothing left to do
        assert p.returncode == 0, err


@pytest.fixture
def writers(procs: list[subprocess.Popen[str]]) -> Iterator[Callable[..., Writer]]:
    """Start writer processes: ``writers(name, access=GENERIC_WRITE)``."""

    def start(name: str = NAME, access: int = win32con.GENERIC_WRITE) -> Writer:
        p = run_py(WRITER, name, str(access), stdin=subprocess.PIPE)
        procs.append(p)
        wait_line(p, "open")
        return Writer(p, procs)

    yield start


@pytest.fixture
def slot() -> Iterator[pywintypes.PyHANDLE]:
    """``CreateMailslot(NAME, 0, 0, None)``: any size, reads return at once."""
    h = win32file.CreateMailslot(NAME, 0, 0, None)
    yield h
    h.Close()


def fails(code: int, fn: Callable[..., Any], *args: Any) -> pywintypes.error:
    """Call ``fn``; it must raise pywintypes.error ``code`` (and set GetLastError)."""
    with pytest.raises(pywintypes.error) as info:
        fn(*args)
    assert info.value.winerror == code, info.value.args
    assert info.value.args == (code, info.value.funcname, info.value.strerror)
    assert win32api.GetLastError() == code
    return info.value


# --------------------------------------------------------------------------- info


@pytest.mark.parametrize("spelling", [-1, 0xFFFF_FFFF])
def test_wacky_parameters_read_back_as_pywin32_returns_dwords(spelling: int) -> None:
    # Wine: CreateMailslot(name, -1, -1) reports dwMax == ~0U and dwTimeout == ~0U;
    # pywin32 returns its output DWORDs through a C long: -1.
    h = win32file.CreateMailslot(NAME, spelling, spelling, None)
    try:
        info = win32file.GetMailslotInfo(h)
        assert info == (-1, win32con.MAILSLOT_NO_MESSAGE, 0, win32con.MAILSLOT_WAIT_FOREVER)
        assert info == (-1, -1, 0, -1)
        assert isinstance(info, tuple)
    finally:
        win32file.CloseHandle(h)


def test_fresh_slot_info_and_empty_reads(slot: pywintypes.PyHANDLE) -> None:
    assert win32file.GetMailslotInfo(slot) == (0, win32con.MAILSLOT_NO_MESSAGE, 0, 0)
    fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 0)
    e = fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 16)
    assert e.funcname == "ReadFile"
    e = fails(winerror.ERROR_ACCESS_DENIED, win32file.WriteFile, slot, b"x" * 16)
    assert e.funcname == "WriteFile"


def test_info_on_other_handles() -> None:
    fails(winerror.ERROR_INVALID_HANDLE, win32file.GetMailslotInfo, 0x7FFF_FFF0)
    event = win32event.CreateEvent(None, True, False, None)
    try:
        fails(winerror.ERROR_INVALID_HANDLE, win32file.GetMailslotInfo, event)
        fails(winerror.ERROR_INVALID_HANDLE, win32file.SetMailslotInfo, event, 0)
    finally:
        event.Close()


# --------------------------------------------------------------------------- one writer


def test_a_writer_process_writes_and_cannot_read(
    slot: pywintypes.PyHANDLE, writers: Callable[..., Writer]
) -> None:
    w = writers(NAME, win32con.GENERIC_READ | win32con.GENERIC_WRITE)
    # opening a writer changes nothing for the server
    fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 8)
    fails(winerror.ERROR_ACCESS_DENIED, win32file.WriteFile, slot, b"x" * 8)
    # the writer cannot read, before and after writing (Wine accepts 87 or 5)
    assert w.ask("read 8") == "error 5 ReadFile"
    assert w.write(b"12345678") == "wrote 0 8"
    assert w.ask("read 8") == "error 5 ReadFile"
    # the message is read once, whole
    assert win32file.ReadFile(slot, 16) == (0, b"12345678")
    fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 16)
    assert w.ask("close") == "closed"
    w.finish()


def test_two_writers_zero_length_order_and_sizes(
    slot: pywintypes.PyHANDLE, writers: Callable[..., Writer]
) -> None:
    w1, w2 = writers(), writers()
    assert win32file.GetMailslotInfo(slot) == (0, -1, 0, 0)
    fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 16)

    assert w1.write(b"a") == "wrote 0 1"
    assert win32file.GetMailslotInfo(slot)[1:3] == (1, 1)
    assert w2.write(b"bc") == "wrote 0 2"
    assert win32file.GetMailslotInfo(slot)[1:3] == (1, 2)
    assert w2.write(b"") == "wrote 0 0"  # a zero-length message counts
    assert win32file.GetMailslotInfo(slot)[1:3] == (1, 3)

    assert win32file.ReadFile(slot, 16) == (0, b"a")
    assert win32file.GetMailslotInfo(slot)[1:3] == (2, 2)
    assert win32file.ReadFile(slot, 16) == (0, b"bc")
    assert win32file.GetMailslotInfo(slot)[1:3] == (0, 1)
    assert win32file.ReadFile(slot, 16) == (0, b"")
    assert win32file.GetMailslotInfo(slot)[1:3] == (win32con.MAILSLOT_NO_MESSAGE, 0)
    fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, slot, 16)
    w1.finish()
    w2.finish()


def test_a_short_read_fails_and_the_message_stays(
    slot: pywintypes.PyHANDLE, writers: Callable[..., Writer]
) -> None:
    w = writers()
    assert w.write(b"xy") == "wrote 0 2"
    fails(winerror.ERROR_INSUFFICIENT_BUFFER, win32file.ReadFile, slot, 1)
    fails(winerror.ERROR_INSUFFICIENT_BUFFER, win32file.ReadFile, slot, bytearray(1))
    assert win32file.GetMailslotInfo(slot) == (0, 2, 1, 0)
    buf = bytearray(8)
    hr, data = win32file.ReadFile(slot, buf)
    assert (hr, data, bytes(buf[:2])) == (0, b"xy", b"xy")
    assert win32file.GetMailslotInfo(slot) == (0, -1, 0, 0)
    w.finish()


def test_an_overlapped_read_completes_and_signals_its_event(
    slot: pywintypes.PyHANDLE, writers: Callable[..., Writer]
) -> None:
    w = writers()
    assert w.write(b"hello") == "wrote 0 5"
    ov = pywintypes.OVERLAPPED()
    ov.hEvent = win32event.CreateEvent(None, True, False, None)
    try:
        buf = win32file.AllocateReadBuffer(64)
        hr, got = win32file.ReadFile(slot, buf, ov)
        assert hr == 0 and got is buf
        assert win32event.WaitForSingleObject(ov.hEvent, 0) == win32event.WAIT_OBJECT_0
        n = win32file.GetOverlappedResult(slot, ov, False)
        assert bytes(buf[:n]) == b"hello"
    finally:
        ov.hEvent.Close()
    w.finish()


def test_an_oversize_message_is_refused_and_nothing_is_sent(
    writers: Callable[..., Writer],
) -> None:
    h = win32file.CreateMailslot(NAME, 4, 0, None)
    try:
        w = writers()
        assert w.write(b"12345") == "error 87 WriteFile"
        assert win32file.GetMailslotInfo(h) == (4, -1, 0, 0)
        assert w.write(b"1234") == "wrote 0 4"
        assert win32file.ReadFile(h, 4) == (0, b"1234")
        w.finish()
    finally:
        h.Close()


# --------------------------------------------------------------------------- time-outs


def test_a_read_time_out_does_not_return_early() -> None:
    h = win32file.CreateMailslot(NAME, 0, 1000, None)
    try:
        assert win32file.GetMailslotInfo(h)[3] == 1000
        start = time.monotonic()
        fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, h, 16)
        assert time.monotonic() - start >= 1.0
        win32file.SetMailslotInfo(h, 0)
        assert win32file.GetMailslotInfo(h)[3] == 0
        fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, h, 16)
        win32file.SetMailslotInfo(h, win32con.MAILSLOT_WAIT_FOREVER)
        assert win32file.GetMailslotInfo(h)[3] == -1
        win32file.SetMailslotInfo(h, 0xFFFF_FFFF)
        assert win32file.GetMailslotInfo(h)[3] == -1
    finally:
        h.Close()


def test_a_read_waiting_forever_gets_a_later_message(writers: Callable[..., Writer]) -> None:
    h = win32file.CreateMailslot(NAME, 0, win32con.MAILSLOT_WAIT_FOREVER, None)
    try:
        w = writers()
        replies: list[str] = []
        later = threading.Timer(0.3, lambda: replies.append(w.write(b"late")))
        later.start()
        try:
            assert win32file.ReadFile(h, 64) == (0, b"late")
        finally:
            later.join()
        assert replies == ["wrote 0 4"]
        w.finish()
    finally:
        h.Close()


# --------------------------------------------------------------------------- names, lifetime


def test_a_second_create_fails_and_names_are_checked(slot: pywintypes.PyHANDLE) -> None:
    fails(winerror.ERROR_ALREADY_EXISTS, win32file.CreateMailslot, NAME, 0, 0, None)
    fails(winerror.ERROR_ALREADY_EXISTS, win32file.CreateMailslot, NAME.upper(), 0, 0, None)
    fails(winerror.ERROR_INVALID_NAME, win32file.CreateMailslot, "blah", 0, 0, None)
    fails(winerror.ERROR_INVALID_NAME, win32file.CreateMailslot, r"\\host\mailslot\x", 0, 0, None)
    with pytest.raises(TypeError):
        win32file.CreateMailslot(None, 0, 0, None)
    # pseudo-directories are part of a name
    h = win32file.CreateMailslot(r"\\.\mailslot\app\events", 0, 0, None)
    h.Close()


def test_a_missing_mailslot_is_not_found() -> None:
    e = fails(
        winerror.ERROR_FILE_NOT_FOUND,
        win32file.CreateFile,
        r"\\.\mailslot\nosuchslot",
        win32con.GENERIC_READ | win32con.GENERIC_WRITE,
        win32con.FILE_SHARE_READ,
        None,
        win32con.OPEN_EXISTING,
        0,
        None,
    )
    assert e.funcname == "CreateFile"


def test_closing_ends_the_mailslot(writers: Callable[..., Writer]) -> None:
    h = win32file.CreateMailslot(NAME, 0, 0, None)
    w = writers()
    assert w.write(b"unread") == "wrote 0 6"
    win32file.CloseHandle(h)
    fails(winerror.ERROR_INVALID_HANDLE, win32file.ReadFile, h, 16)
    # the writer learns the mailslot is gone; the name is free again
    assert w.write(b"more") == "error 2 WriteFile"
    h = win32file.CreateMailslot(NAME, 0, 0, None)
    try:
        fails(winerror.ERROR_SEM_TIMEOUT, win32file.ReadFile, h, 16)  # nothing carried over
        assert w.ask("close") == "closed"
    finally:
        h.Close()
    w.finish()


def test_a_handle_without_write_access_neither_writes_nor_reads(
    slot: pywintypes.PyHANDLE, writers: Callable[..., Writer]
) -> None:
    w = writers(NAME, win32con.GENERIC_READ)
    assert w.write(b"x") == "error 5 WriteFile"
    assert w.ask("read 8") == "error 5 ReadFile"
    assert win32file.GetMailslotInfo(slot)[2] == 0
    w.finish()


def test_writer_handles_in_this_process_and_remote_names(
    slot: pywintypes.PyHANDLE, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WINIPC_NATS_URL", raising=False)
    w = win32file.CreateFile(
        NAME.upper(), win32con.GENERIC_WRITE, win32con.FILE_SHARE_READ, None,
        win32con.OPEN_EXISTING, win32con.FILE_FLAG_OVERLAPPED, None,
    )  # fmt: skip
    try:
        fails(winerror.ERROR_INVALID_PARAMETER, win32file.GetMailslotInfo, w)
        ov = pywintypes.OVERLAPPED()
        assert win32file.WriteFile(w, b"over", ov) == (winerror.ERROR_IO_PENDING, 0)
        assert win32file.GetOverlappedResult(w, ov, True) == 4
        assert win32file.ReadFile(slot, 8) == (0, b"over")
    finally:
        w.Close()
    # a broadcast name opens without contacting anyone; Windows' 424-byte limit holds
    b = win32file.CreateFile(
        r"\\*\mailslot\wine_mailslot_test", win32con.GENERIC_WRITE, win32con.FILE_SHARE_READ,
        None, win32con.OPEN_EXISTING, 0, None,
    )  # fmt: skip
    try:
        assert b.object.transport == "udp"
        fails(winerror.ERROR_INVALID_PARAMETER, win32file.WriteFile, b, b"x" * 425)
    finally:
        win32file.CloseHandle(b)


def test_constants_and_install() -> None:
    assert win32con.MAILSLOT_NO_MESSAGE == -1
    assert win32con.MAILSLOT_WAIT_FOREVER == -1
    assert winerror.ERROR_INSUFFICIENT_BUFFER == 122
    assert winerror.ERROR_SEM_TIMEOUT == 121
    assert win32file.error is pywintypes.error
    proc = run_py(
        textwrap.dedent(
            """
            import winipc.win32
            assert winipc.win32.install()
            import win32con, win32file
            h = win32file.CreateMailslot(r"\\\\.\\mailslot\\installed", 0, 0, None)
            print(win32file.GetMailslotInfo(h) == (0, win32con.MAILSLOT_NO_MESSAGE, 0, 0))
            h.Close()
            """
        )
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "True"
