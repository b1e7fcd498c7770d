"""``winipc msg find|send|post|listen``: a listener process, senders in-process and as processes.

The listener (``winipc msg listen``) always runs as a real process and ends as a user
would end it (WM_CLOSE, WM_QUIT, --count, SIGTERM); ``find``, ``send`` and ``post`` run
through click's CliRunner in this process (a real other process for the listener) and
as ``python -m winipc`` processes. conftest checks that no window is left behind.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
import zlib
from typing import IO, Any

from click.testing import CliRunner, Result

from winipc._core import atoms
from winipc.cli import cli
from winipc.cli._msg import message_name, parse_message

from conftest import child_env, run_py, wait_line

WAIT = 10.0  # seconds to wait for a line before calling it lost (never a timing assert)
Procs = list[subprocess.Popen[str]]


class Listener:
    """``winipc msg listen --json ARGS`` as a process; its lines through queues."""

    def __init__(self, procs: Procs, *args: str, as_json: bool = True) -> None:
        self.class_name = f"winipc-test-{uuid.uuid4().hex[:10]}"
        cmd = [sys.executable, "-m", "winipc", "msg", "listen", "--class", self.class_name, *args]
        self.proc = subprocess.Popen(
            [*cmd, "--json"] if as_json else cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        procs.append(self.proc)
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()
        first = self.err.get(timeout=WAIT)
        assert first is not None and first.startswith("listening 0x"), first
        self.hwnd = int(first.split()[1], 16)

    @staticmethod
    def _pump(stream: IO[str] | None, q: queue.Queue[str | None]) -> None:
        assert stream is not None
        for line in stream:
            q.put(line.rstrip("\n"))
        q.put(None)

    def line(self) -> str:
        got = self.out.get(timeout=WAIT)
        assert got is not None, "the listener ended"
        return got

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = json.loads(self.line())
        return rec

    def wait(self) -> int:
        return self.proc.wait(WAIT)


def invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["msg", *args], input=input, catch_exceptions=False)


def winipc(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", "msg", *args],
        capture_output=True,
        env=child_env(),
        input=input,
        timeout=30,
    )


def test_send_post_and_find(procs: Procs) -> None:
    lis = Listener(procs, "--title", "Test Window")
    found = json.loads(invoke("find", "--class", lis.class_name.upper(), "--json").output)
    assert [(w["hwnd"], w["pid"], w["title"], w["message_only"]) for w in found] == [
        (lis.hwnd, lis.proc.pid, "Test Window", False)
    ]
    assert json.loads(invoke("find", "--class", lis.class_name, "--message-only", "--json").output) == []
    table = invoke("find", "--title", "test window").output
    assert f"0x{lis.hwnd:X}" in table and lis.class_name in table

    done = invoke("send", f"0x{lis.hwnd:X}", "WM_USER+1", "5", "7")
    assert done.exit_code == 0 and done.output == "0\n"
    rec = lis.record()
    assert (rec["msg"], rec["name"], rec["wparam"], rec["lparam"], rec["kind"]) == (0x401, "WM_USER+1", 5, 7, "sent")
    assert rec["hwnd"] == lis.hwnd

    assert invoke("post", "--class", lis.class_name, "WM_APP+2", "0x10", "--", "-3").exit_code == 0
    rec = lis.record()
    assert (rec["msg"], rec["wparam"], rec["lparam"], rec["kind"]) == (0x8002, 16, -3, "posted")
    assert rec["sender_pid"] == os.getpid()

    name = f"winipc test message {uuid.uuid4().hex[:8]}"
    assert invoke("send", "--title", "Test Window", "--register", name, "3").output == "0\n"
    rec = lis.record()
    assert rec["msg"] == atoms.find(name) and 0xC000 <= rec["msg"] <= 0xFFFF
    assert rec["name"] == json.dumps(name) and rec["wparam"] == 3

    # a send from another process, with a byte LPARAM
    done_p = winipc("send", str(lis.hwnd), "WM_SETTEXT", "--lparam-text", "héllo")
    assert done_p.returncode == 0, done_p.stderr
    rec = lis.record()
    assert rec["name"] == "WM_SETTEXT" and rec["lparam"] is None
    assert rec["lparam_size"] == len("héllo".encode()) and rec["lparam_crc32"] == f"{zlib.crc32('héllo'.encode()):08x}"

    # WM_CLOSE ends it, and the window is gone
    assert invoke("post", str(lis.hwnd), "wm_close").exit_code == 0
    assert lis.record()["name"] == "WM_CLOSE"
    assert lis.wait() == 0
    assert json.loads(invoke("find", "--class", lis.class_name, "--json").output) == []
    gone = invoke("send", str(lis.hwnd), "WM_NULL")
    assert gone.exit_code == 1 and "[WinError 1400 ERROR_INVALID_WINDOW_HANDLE]" in gone.output


def test_copydata_from_a_file_and_stdin(procs: Procs, tmp_path: Any) -> None:
    lis = Listener(procs, "--message-only", "--dump", "--count", "3")
    found = json.loads(invoke("find", "--message-only", "--class", lis.class_name, "--json").output)
    assert [(w["hwnd"], w["message_only"]) for w in found] == [(lis.hwnd, True)]
    data = bytes(range(256)) * 300  # above 64 KiB: through shared memory
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    done = winipc("send", "--class", lis.class_name, "--copydata", str(path), "--dwdata", "0x2A")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"0\n"
    rec = lis.record()
    assert rec["name"] == "WM_COPYDATA" and rec["dwdata"] == 42 and rec["size"] == len(data)
    assert rec["crc32"] == f"{zlib.crc32(data):08x}"
    assert isinstance(rec["sender_pid"], int) and rec["sender_pid"] != os.getpid()  # the child
    assert base64.b64decode(rec["data_b64"]) == data  # --dump: not UTF-8, so base64
    assert invoke("send", str(lis.hwnd), "--copydata", "-", input=b"from stdin").output == "0\n"
    rec = lis.record()
    assert rec["data"] == "from stdin" and rec["dwdata"] == 0 and rec["sender_pid"] == os.getpid()
    assert invoke("send", str(lis.hwnd), "--lparam-hex", "00 ff", "WM_USER").exit_code == 0
    rec = lis.record()
    assert rec["lparam_data_b64"] == "AP8=" and rec["lparam_size"] == 2
    assert lis.wait() == 0  # --count 3


def test_text_lines_and_quit(procs: Procs) -> None:
    lis = Listener(procs, as_json=False)
    assert invoke("send", str(lis.hwnd), "WM_USER+3", "1", "2").exit_code == 0
    assert lis.line() == "WM_USER+3 (0x0403) sent: wparam=1 lparam=2"
    assert invoke("send", str(lis.hwnd), "--copydata", "-", input=b"abc").exit_code == 0
    line = lis.line()
    assert line.startswith("WM_COPYDATA (0x004A) sent") and f"size=3 crc32={zlib.crc32(b'abc'):08x}" in line
    assert invoke("post", str(lis.hwnd), "WM_QUIT", "4").exit_code == 0
    assert lis.line().startswith("WM_QUIT (0x0012) posted")
    assert lis.wait() == 0


def test_sigterm_ends_listen_and_destroys_the_window(procs: Procs) -> None:
    lis = Listener(procs)
    lis.proc.send_signal(signal.SIGTERM)
    assert lis.wait() == 0
    assert json.loads(invoke("find", "--class", lis.class_name, "--json").output) == []


def test_hung_window_times_out(procs: Procs) -> None:
    """A window whose thread never retrieves messages: --timeout gives ERROR_TIMEOUT."""
    hung = run_py(
        """
        import sys, time
        from winipc import messages as M
        M.register_class("winipc-test-hung")
        w = M.create_window("winipc-test-hung", "hung")
        print(w.hwnd, flush=True)
        sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
    )
    procs.append(hung)
    hwnd = int(wait_line(hung, ""))
    done = winipc("send", str(hwnd), "WM_NULL", "--timeout", "0.3")
    assert done.returncode == 1
    assert b"[WinError 1460 ERROR_TIMEOUT]" in done.stderr
    hung.communicate("", timeout=WAIT)  # end of its stdin: it exits
    assert hung.returncode == 0


def test_usage_errors() -> None:
    assert invoke("send", "0x10000", "WM_NO_SUCH").exit_code == 2
    assert invoke("send").exit_code == 2  # no window
    assert invoke("send", "0x10000").exit_code == 2  # no message
    assert invoke("send", "nohwnd", "WM_NULL").exit_code == 2
    assert invoke("send", "0x10000", "WM_NULL", "-1").exit_code == 2  # a negative WPARAM
    assert invoke("send", "0x10000", "WM_NULL", "0", "1", "2").exit_code == 2
    missing = invoke("send", "--class", f"winipc-none-{uuid.uuid4().hex}", "WM_NULL")
    assert missing.exit_code == 1 and "ERROR_INVALID_WINDOW_HANDLE" in missing.output


def test_message_names() -> None:
    assert parse_message("WM_USER+5") == 0x405 and parse_message("wm_app") == 0x8000
    assert parse_message("0x4A") == 0x4A and parse_message("16") == 16
    assert message_name(0x10) == "WM_CLOSE" and message_name(0x8001) == "WM_APP+1"
    assert message_name(0x0401) == "WM_USER+1" and message_name(0x0123) == "0x0123"
    atom = atoms.add("winipc cli test name")
    assert message_name(atom) == '"winipc cli test name"'
