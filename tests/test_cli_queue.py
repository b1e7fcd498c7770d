"""``winipc queue``: every command run as a real ``python -m winipc`` process.

Each test deletes the queues it made (conftest fails a test that leaves objects in
WINIPC_ROOT; the store's own folder is the store's business).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsutil import NATS_URL, server_answers

from conftest import child_env

Q = ".\\private$\\cli-demo"


def winipc(*args: str, input: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", "queue", *args],
        input=input,
        capture_output=True,
        env=child_env(),
        timeout=timeout,
    )


def ok(*args: str, input: bytes | None = None) -> str:
    done = winipc(*args, input=input)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def _remove_store(root: Path) -> None:
    """The local store's folder, once its queues are gone (the store may keep it)."""
    store = root / "msmq"
    if store.is_dir() and not any(p for p in store.rglob("*") if p.is_file()):
        for p in sorted(store.rglob("*"), reverse=True):
            p.rmdir()
        store.rmdir()


@pytest.fixture
def queue(winipc_root: Path) -> Iterator[str]:
    """A plain queue, deleted after the test (also when the test failed)."""
    ok("create", Q, "--label", "demo queue")
    try:
        yield Q
    finally:
        winipc("delete", Q)
        _remove_store(winipc_root)


def test_send_receive_round_trip_of_every_body_kind(queue: str, tmp_path: Path) -> None:
    first = ok("send", queue, "hello ü", "--label", "greeting", "--correlation-id", "corr-1").strip()
    assert first.startswith("{") and "\\" in first  # "{GUID}\N"
    ok("send", queue, "00 ff 1b", "--hex", "--express")
    blob = tmp_path / "body.bin"
    blob.write_bytes(b"from a file\n")
    ok("send", queue, "--file", str(blob))
    ok("send", queue, '{"sku": 42, "tags": ["a", "b"]}', "--json-body")
    ok("send", queue, "--file", "-", input=b"from stdin")

    got = json.loads(ok("receive", queue, "--json", "--timeout", "5"))
    assert got["body"] == "hello ü" and got["body_encoding"] == "utf-8"
    props = got["properties"]
    assert props["id"] == first and props["label"] == "greeting"
    assert props["correlation_id"] == "corr-1" and props["priority"] == 3
    assert props["delivery"] == "RECOVERABLE" and props["body_type"] == "bytes"
    assert props["destination_queue"].lower() == queue.lower()
    assert props["sender_pid"] > 0 and props["sent_time"] > 0

    got = json.loads(ok("receive", queue, "--json", "--timeout", "5"))
    assert got["body"] == "00ff1b" and got["body_encoding"] == "hex"
    assert got["properties"]["delivery"] == "EXPRESS"
    assert ok("receive", queue, "--timeout", "5") == "from a file\n"
    got = json.loads(ok("receive", queue, "--json", "--timeout", "5"))
    assert got["body_encoding"] == "msgpack" and got["body"] == {"sku": 42, "tags": ["a", "b"]}
    assert got["properties"]["body_type"] == "msgpack"
    assert ok("receive", queue, "--timeout", "5") == "from stdin\n"


def test_text_output_shows_hex_for_binary_and_json_for_values(queue: str) -> None:
    ok("send", queue, "\x1b[2Jgotcha")  # would drive the terminal: shown in hex
    ok("send", queue, "[1, null, true]", "--json-body")
    assert ok("receive", queue, "--timeout", "5") == "hex: " + b"\x1b[2Jgotcha".hex(" ") + "\n"
    assert json.loads(ok("receive", queue, "--timeout", "5")) == [1, None, True]


def test_priority_orders_messages_and_peek_leaves_them(queue: str) -> None:
    ok("send", queue, "low", "--priority", "1")
    ok("send", queue, "high", "--priority", "7")
    ok("send", queue, "mid")
    assert ok("peek", queue) == "high\n"
    peeked = json.loads(ok("peek", queue, "--json"))
    assert peeked["body"] == "high" and peeked["properties"]["priority"] == 7
    assert [ok("receive", queue, "--timeout", "5") for _ in range(3)] == ["high\n", "mid\n", "low\n"]


def test_receive_and_peek_time_out_on_an_empty_queue(queue: str) -> None:
    for cmd in ("receive", "peek"):
        done = winipc(cmd, queue, "--timeout", "0.2")
        assert done.returncode == 1 and done.stdout == b""
        err = done.stderr.decode()
        assert err.startswith("error: [0xC00E001B MQ_ERROR_IO_TIMEOUT]"), err
        assert "0.2 s" in err and "Traceback" not in err


def test_stat_ls_integrity_purge(queue: str) -> None:
    for body in ("a", "bb", "ccc"):
        ok("send", queue, body)
    st = json.loads(ok("stat", queue, "--json"))
    assert st["messages"] == 3 and st["bytes"] >= 6
    assert st["info"]["label"] == "demo queue" and st["info"]["backend"] == "local"
    assert st["durability"] and st["recoverable_is_durable"] is True
    text = ok("stat", queue)
    assert "messages:" in text and "durability:" in text

    listed = json.loads(ok("ls", "--json"))
    mine = [q for q in listed if q["path"].lower() == queue.lower()]
    assert len(mine) == 1 and mine[0]["label"] == "demo queue"
    assert queue in ok("ls")

    done = winipc("integrity", queue)
    assert done.returncode == 0 and done.stdout == b"", done.stderr
    assert ok("purge", queue) == "3\n"
    assert json.loads(ok("stat", queue, "--json"))["messages"] == 0
    assert ok("purge", queue) == "0\n"


def test_create_options_and_transactional_send(winipc_root: Path) -> None:
    path = ".\\private$\\cli-tx"
    ok("create", path, "--transactional", "--journal", "--quota", "1000000", "--max-aborts", "2")
    try:
        info = json.loads(ok("stat", path, "--json"))["info"]
        assert info["transactional"] is True and info["journal"] is True
        assert info["quota"] == 1_000_000 and info["max_aborts"] == 2
        ok("send", path, "in a transaction of its own")
        got = json.loads(ok("receive", path, "--json", "--timeout", "5"))
        assert got["body"] == "in a transaction of its own"
        assert got["properties"]["transactional"] is True
        again = winipc("create", path)
        assert again.returncode == 1
        assert again.stderr.decode().startswith("error: [0xC00E0005 MQ_ERROR_QUEUE_EXISTS]")
    finally:
        winipc("delete", path)
        _remove_store(winipc_root)


def test_bare_name_means_a_private_queue(winipc_root: Path) -> None:
    ok("create", "bare-demo")
    try:
        ok("send", ".\\private$\\bare-demo", "x")
        assert ok("receive", "bare-demo", "--timeout", "5") == "x\n"
    finally:
        ok("delete", "bare-demo")
        _remove_store(winipc_root)
    missing = winipc("delete", "bare-demo")
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("error: [0xC00E0003 MQ_ERROR_QUEUE_NOT_FOUND]")


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("--priority", "9"), "--priority"),
        (("--label", "x" * 251), "--label"),
        (("--json-body",), "--json-body"),  # "body" is not JSON
    ],
)
def test_bad_input_is_a_usage_error(queue: str, args: tuple[str, ...], hint: str) -> None:
    done = winipc("send", queue, "body", *args)
    assert done.returncode == 2 and done.stdout == b""
    err = done.stderr.decode()
    assert hint in err and "Traceback" not in err
    assert json.loads(ok("stat", queue, "--json"))["messages"] == 0


def test_usage_errors_of_send(queue: str) -> None:
    assert winipc("send", queue).returncode == 2  # neither BODY nor --file
    assert winipc("send", queue, "zz", "--hex").returncode == 2
    done = winipc("send", ".\\private$\\no-such-queue", "x")
    assert done.returncode == 1
    assert done.stderr.decode().startswith("error: [0xC00E0003 MQ_ERROR_QUEUE_NOT_FOUND]")
    bad = winipc("send", "nats://", "x")
    assert bad.returncode == 1 and bad.stderr.decode().startswith("error: [0xC00E001E")


def test_a_msgpack_body_sent_by_the_api_prints_as_json(queue: str) -> None:
    from winipc import msmq

    with msmq.open(queue, "send") as q:
        q.send({"raw": b"\x00\x01", "n": 1})
    got = json.loads(ok("receive", queue, "--json", "--timeout", "5"))
    assert got["body"] == {"raw": "0001", "n": 1}  # bytes inside a value: hex


def test_a_queue_on_nats() -> None:
    if not server_answers():
        pytest.skip("no NATS server at 127.0.0.1:4222")
    path = f"{NATS_URL}/cli-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ok("create", path, "--label", "on nats")
    try:
        done = winipc("send", path, "over nats")
        assert done.returncode == 0, done.stderr
        err = done.stderr.decode()
        assert "Traceback" not in err and "Warning:" not in err  # warnings said plainly
        assert all(line.startswith("warning: ") for line in err.splitlines())
        st = json.loads(ok("stat", path, "--json"))
        assert st["messages"] == 1 and st["info"]["backend"] == "nats" and st["durability"]
        listed = json.loads(ok("ls", "--json", "--nats", NATS_URL))
        assert [q["label"] for q in listed if q["path"] == path] == ["on nats"]
        got = json.loads(ok("receive", path, "--json", "--timeout", "5"))
        assert got["body"] == "over nats" and got["properties"]["label"] == ""
        bad = winipc("integrity", path)
        assert bad.returncode == 1 and b"MQ_ERROR_INVALID_PARAMETER" in bad.stderr
    finally:
        winipc("delete", path)
