"""``winipc clip copy|paste|formats|watch``: through click's CliRunner and as processes.

The desktop bridge is off (WINIPC_CLIPBOARD_BRIDGE=0): these tests are about winipc's
own clipboard; each test has its own WINIPC_ROOT, so its own clipboard.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner, Result

from winipc.cli import _clip, cli

from conftest import child_env, run_py, wait_line

WAIT = 10.0
Procs = list[subprocess.Popen[str]]


@pytest.fixture(autouse=True)
def no_bridge(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No desktop bridge, and this test's own clipboard: the library keeps one handle on
    the user's clipboard per process, made on first use, so it is dropped around each
    test (each has its own WINIPC_ROOT)."""
    import winipc.clipboard as C

    monkeypatch.setenv("WINIPC_CLIPBOARD_BRIDGE", "0")
    C._default = None
    yield
    if C._default is not None:
        C._default.release()
        C._default = None


def invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["clip", *args], input=input, catch_exceptions=False)


def winipc(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", "clip", *args],
        capture_output=True,
        env=child_env(),
        input=input,
        timeout=30,
    )


def formats() -> dict[str, dict[str, Any]]:
    done = invoke("formats", "--json")
    assert done.exit_code == 0, done.output
    return {f["name"]: f for f in json.loads(done.stdout)}


def test_text_round_trip_and_synthesized_formats() -> None:
    text = "héllo wörld ✓\nsecond line"
    assert invoke("copy", input=text.encode()).exit_code == 0
    assert invoke("paste").stdout_bytes == text.encode()
    got = formats()
    assert next(iter(got)) == "CF_UNICODETEXT"
    uni = got["CF_UNICODETEXT"]
    assert uni["id"] == 13 and uni["synthesized"] is False
    assert uni["size"] == 2 * (len(text) + 1)  # UTF-16LE and its NUL
    for name in ("CF_TEXT", "CF_OEMTEXT", "CF_LOCALE"):
        assert got[name]["synthesized"] is True and got[name]["size"] > 0
    # CF_TEXT is cp1252: the check mark becomes "?"
    assert invoke("paste", "--format", "CF_TEXT").stdout_bytes == text.replace("✓", "?").encode()
    table = invoke("formats").stdout
    assert "CF_UNICODETEXT" in table and "SYNTHESIZED" in table


def test_copy_in_one_process_paste_in_another(tmp_path: Path) -> None:
    src = tmp_path / "note.txt"
    src.write_text("from a file\n", encoding="utf-8")
    done = winipc("copy", "--format", "cf_text", str(src))
    assert done.returncode == 0, done.stderr
    assert invoke("paste").stdout_bytes == b"from a file\n"  # synthesized CF_UNICODETEXT
    assert formats()["CF_TEXT"]["synthesized"] is False
    assert winipc("paste", "--format", "1").stdout == b"from a file\n"


def test_binary_registered_format() -> None:
    name = f"winipc test bytes {uuid.uuid4().hex[:8]}"
    data = bytes(range(256)) + b"\0\0\xff"
    assert invoke("copy", "--format", name, input=data).exit_code == 0
    assert invoke("paste", "--format", name).stdout_bytes == data
    got = formats()
    assert got[name]["size"] == len(data) and got[name]["synthesized"] is False
    assert 0xC000 <= got[name]["id"] <= 0xFFFF
    assert invoke("paste", "--format", str(got[name]["id"])).stdout_bytes == data
    # no text on the clipboard now
    missing = invoke("paste")
    assert missing.exit_code == 1
    assert "error: the clipboard holds no CF_UNICODETEXT" in missing.output and name in missing.output


def test_errors() -> None:
    nobody = invoke("paste", "--format", f"never registered {uuid.uuid4().hex}")
    assert nobody.exit_code == 1 and "no clipboard format named" in nobody.output
    assert invoke("copy", input=b"\xff\xfe not utf-8").exit_code == 1
    assert invoke("copy", "--format", "CF_NOSUCH", input=b"x").exit_code == 2
    assert invoke("copy", "--format", "0x10000", input=b"x").exit_code == 2
    empty = invoke("paste")
    assert empty.exit_code == 1 and "(it holds: nothing)" in empty.output
    assert invoke("formats", "--json").stdout.strip() == "[]"


def test_open_by_another_process_is_access_denied(procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = run_py(
        """
        import sys
        from winipc import clipboard
        clipboard.open()
        print("open", flush=True)
        sys.stdin.read()
        clipboard.close()
        """,
        env={**child_env(), "WINIPC_CLIPBOARD_BRIDGE": "0"},
        stdin=subprocess.PIPE,
    )
    procs.append(holder)
    wait_line(holder, "open")
    monkeypatch.setattr(_clip, "OPEN_RETRY", 0.2)
    denied = invoke("copy", input=b"x")
    assert denied.exit_code == 1 and "[WinError 5 ERROR_ACCESS_DENIED]" in denied.output
    holder.communicate("", timeout=WAIT)  # end of its stdin: it exits
    assert holder.returncode == 0
    assert invoke("copy", input=b"now").exit_code == 0
    assert invoke("paste").stdout_bytes == b"now"


def _lines(stream: IO[str] | None, q: queue.Queue[str | None]) -> None:
    assert stream is not None
    for line in stream:
        q.put(line.rstrip("\n"))
    q.put(None)


def test_watch_prints_each_change(procs: Procs) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "winipc", "clip", "watch", "--json", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**child_env(), "WINIPC_CLIPBOARD_BRIDGE": "0"},
    )
    procs.append(watcher)
    out: queue.Queue[str | None] = queue.Queue()
    err: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(watcher.stdout, out), daemon=True).start()
    threading.Thread(target=_lines, args=(watcher.stderr, err), daemon=True).start()
    first = err.get(timeout=WAIT)
    assert first is not None and first.startswith("watching (sequence "), first
    assert invoke("copy", input=b"one").exit_code == 0
    one = json.loads(out.get(timeout=WAIT) or "null")
    assert 13 in [f["id"] for f in one["formats"]]
    name = f"winipc watch {uuid.uuid4().hex[:8]}"
    assert invoke("copy", "--format", name, input=b"\x00\x01").exit_code == 0
    two = json.loads(out.get(timeout=WAIT) or "null")
    assert two["sequence"] > one["sequence"]
    assert [f["name"] for f in two["formats"]] == [name]
    assert watcher.wait(WAIT) == 0  # --count 2
    assert out.get(timeout=WAIT) is None  # nothing more: one line per change
