"""``winipc mailslot read|write``: a reader process, writers in-process and as processes.

The reader (``winipc mailslot read``) always runs as a real process and is stopped as a
user would stop it (SIGTERM, Ctrl-C) or ends by itself (--count, --timeout); writers run
through click's CliRunner in this process and as ``python -m winipc`` processes.
conftest checks that no mailslot is left behind.
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
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natsutil import server_answers
from winipc._backends import os_backend as B
from winipc.cli import cli

from conftest import child_env

WAIT = 10.0  # seconds to wait for a line before calling it lost (never a timing assert)
REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
NATS = "nats://127.0.0.1:4222"


class Reader:
    """``winipc mailslot read ARGS`` as a process; its output lines through queues."""

    def __init__(self, procs: list[subprocess.Popen[str]], *args: str) -> None:
        self.procs = procs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "winipc", "mailslot", "read", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env(),
        )
        procs.append(self.proc)
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.threads:
            t.start()
        first = self.err_line()
        assert first.startswith("listening "), first

    @staticmethod
    def _pump(stream: object, q: queue.Queue[str | None]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))
        q.put(None)

    @staticmethod
    def _line(q: queue.Queue[str | None], what: str) -> str:
        try:
            line = q.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no {what} line within {WAIT} s") from None
        assert line is not None, f"the reader's {what} ended"
        return line

    def out_line(self) -> str:
        return self._line(self.out, "stdout")

    def err_line(self) -> str:
        return self._line(self.err, "stderr")

    def rest(self, q: queue.Queue[str | None]) -> list[str]:
        lines = []
        while (line := q.get(timeout=WAIT)) is not None:
            lines.append(line)
        return lines

    def finish(self, sig: int | None = None) -> tuple[list[str], list[str]]:
        """Stop it (or let it end by itself); it must exit 0. Returns the remaining lines."""
        if sig is not None:
            self.proc.send_signal(sig)
        self.proc.wait(WAIT)
        out, err = self.rest(self.out), self.rest(self.err)
        for t in self.threads:
            t.join(WAIT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.procs.remove(self.proc)
        assert self.proc.returncode == 0, err
        return out, err


def winipc_cmd(
    *args: str, input: bytes | None = None, timeout: float = 15
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", *args],
        input=input,
        capture_output=True,
        env=child_env(),
        timeout=timeout,
    )


def invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


# --------------------------------------------------------------------------- read, write


def test_read_prints_each_message_from_every_kind_of_writer(
    procs: list[subprocess.Popen[str]],
) -> None:
    reader = Reader(procs, "Demo")
    result = invoke("mailslot", "write", "demo", "hello")
    assert (result.exit_code, result.output) == (0, "")
    assert reader.out_line() == "hello"

    done = winipc_cmd("mailslot", "write", r"\\.\mailslot\DEMO", "two words")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert reader.out_line() == "two words"

    assert winipc_cmd("mailslot", "write", "demo", "00 ff 1b", "--hex").returncode == 0
    assert reader.out_line() == "hex: 00 ff 1b"
    # text that would drive the terminal is shown in hex too
    assert invoke("mailslot", "write", "demo", "\x1b[2Jgotcha").exit_code == 0
    assert reader.out_line() == "hex: " + b"\x1b[2Jgotcha".hex(" ")
    assert invoke("mailslot", "write", "demo", "").exit_code == 0  # a zero-length message
    assert reader.out_line() == ""
    assert invoke("mailslot", "write", "demo", "tab\there, line\n").exit_code == 0
    assert reader.out_line() == "tab\there, line"

    out, err = reader.finish(signal.SIGTERM)
    assert out == []
    assert err == ["stopping"]


def test_ctrl_c_stops_the_reader_and_the_name_is_free_again(
    procs: list[subprocess.Popen[str]],
) -> None:
    reader = Reader(procs, "again")
    second = winipc_cmd("mailslot", "read", "again", "--timeout", "0")
    assert second.returncode == 1
    assert second.stderr.decode().startswith("error: [WinError 183 ERROR_ALREADY_EXISTS]")
    reader.finish(signal.SIGINT)
    # the mailslot went with its reader: writers no longer find it, a new reader may take it
    missing = winipc_cmd("mailslot", "write", "again", "x")
    assert missing.returncode == 1
    assert b"ERROR_FILE_NOT_FOUND" in missing.stderr
    Reader(procs, "again").finish(signal.SIGTERM)


def test_read_json_and_count(procs: list[subprocess.Popen[str]]) -> None:
    reader = Reader(procs, "jsondemo", "--json", "--count", "3")
    assert invoke("mailslot", "write", "jsondemo", "hi ü").exit_code == 0
    writer = subprocess.Popen(
        [sys.executable, "-m", "winipc", "mailslot", "write", "jsondemo", "00ff", "--hex"],
        env=child_env(),
    )
    assert writer.wait(15) == 0
    assert invoke("mailslot", "write", "jsondemo", "").exit_code == 0
    out, _ = reader.finish()  # ends by itself after three messages
    first, second, third = (json.loads(line) for line in out)
    assert first == {
        "data": "hi ü",
        "size": 5,
        "sender_pid": os.getpid(),
        "sender_uid": os.getuid(),
        "sender_host": None,
        "address": None,
        "transport": "local",
    }
    assert second["data_b64"] == "AP8=" and "data" not in second
    assert (second["size"], second["sender_pid"]) == (2, writer.pid)
    assert (third["data"], third["size"]) == ("", 0)


def test_read_timeout_ends_after_a_quiet_spell(procs: list[subprocess.Popen[str]]) -> None:
    out, err = Reader(procs, "quiet", "--timeout", "0.2").finish()
    assert (out, err) == ([], [])

    reader = Reader(procs, "quiet", "--timeout", "0.5")
    assert invoke("mailslot", "write", "quiet", "one").exit_code == 0
    assert reader.out_line() == "one"
    out, err = reader.finish()  # then nothing for 0.5 s: it ends, status 0
    assert (out, err) == ([], [])


def test_oversize_message_is_refused(procs: list[subprocess.Popen[str]]) -> None:
    reader = Reader(procs, "small", "--max-size", "4")
    refused = winipc_cmd("mailslot", "write", "small", "12345")
    assert refused.returncode == 1 and refused.stdout == b""
    assert refused.stderr.decode().startswith("error: [WinError 87 ERROR_INVALID_PARAMETER]")
    assert "nothing was sent" in refused.stderr.decode()
    result = invoke("mailslot", "write", "small", "abcde")
    assert result.exit_code == 1
    assert "ERROR_INVALID_PARAMETER" in result.output
    assert invoke("mailslot", "write", "small", "1234").exit_code == 0
    assert reader.out_line() == "1234"  # the refused ones never arrived
    reader.finish(signal.SIGTERM)


def test_write_to_a_missing_mailslot() -> None:
    result = winipc_cmd("mailslot", "write", "nosuchslot", "hello")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith("error: [WinError 2 ERROR_FILE_NOT_FOUND]")
    run = invoke("mailslot", "write", r"\\.\mailslot\nosuchslot", "hello")
    assert run.exit_code == 1
    assert run.output.startswith("error: [WinError 2 ERROR_FILE_NOT_FOUND]")


def test_write_from_a_file_and_stdin(procs: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    reader = Reader(procs, "files", "--json", "--count", "2")
    payload = bytes(range(256)) * 300  # larger than one socket packet
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    assert winipc_cmd("mailslot", "write", "files", "--file", str(path)).returncode == 0
    assert (
        winipc_cmd("mailslot", "write", "files", "--file", "-", input=b"from stdin").returncode == 0
    )
    out, _ = reader.finish()
    first, second = (json.loads(line) for line in out)
    assert base64.b64decode(first["data_b64"]) == payload and first["size"] == len(payload)
    assert second["data"] == "from stdin"


@pytest.mark.parametrize(
    "args",
    [
        ("mailslot", "write", "x"),  # neither MESSAGE nor --file
        ("mailslot", "write", "x", "msg", "--file", "-"),  # both
        ("mailslot", "write", "x", "zz", "--hex"),
        ("mailslot", "write", "x", "--hex", "--file", "-"),
        ("mailslot", "read", "x", "--count", "0"),
        ("mailslot", "read", "x", "--max-size", "-1"),
        ("mailslot", "read"),
    ],
)
def test_usage_errors(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, list(args), input=b"")
    assert result.exit_code == 2, result.output


def test_listed_in_the_help() -> None:
    result = invoke("--help")
    assert "mailslot" in result.output
    result = invoke("mailslot", "--help")
    assert "read" in result.output and "write" in result.output


# --------------------------------------------------------------------------- network



@pytest.fixture
def nats_server() -> str:
    try:
        import nats  # noqa: F401
    except ImportError:
        reason = "nats-py is not installed (pip install 'winipc[nats]')"
    else:
        if server_answers():
            return NATS
        reason = f"no NATS server answers at {NATS}"
    if REQUIRE:
        pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
    pytest.skip(reason)


def test_a_broadcast_over_nats_reaches_a_network_reader(
    procs: list[subprocess.Popen[str]], nats_server: str
) -> None:
    name = f"cli-{uuid.uuid4().hex[:12]}"  # NATS subjects are shared by every test run
    reader = Reader(procs, name, "--nats", nats_server, "--json", "--count", "1")
    assert reader.err_line().startswith("network: UDP port ")
    writer = subprocess.Popen(
        [sys.executable, "-m", "winipc", "mailslot", "write", rf"\\*\mailslot\{name}", "to all",
         "--nats", nats_server],
        env=child_env(),
    )  # fmt: skip
    assert writer.wait(15) == 0
    out, _ = reader.finish()
    (record,) = (json.loads(line) for line in out)
    assert record["data"] == "to all"
    assert record["transport"] == "nats"
    assert record["sender_pid"] == writer.pid
    assert record["sender_host"] == B.host_name()
    assert record["sender_uid"] is None
    # Windows' broadcast limit holds before anything is sent
    big = winipc_cmd("mailslot", "write", rf"\\*\mailslot\{name}", "x" * 425, "--nats", nats_server)
    assert big.returncode == 1
    assert b"ERROR_INVALID_PARAMETER" in big.stderr
