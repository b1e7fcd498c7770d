"""Mailslots across machines: UDP unicast and broadcast between network namespaces, and NATS."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import Lan, require
from winipc import errors as W
from winipc._wire import mailslot as wire
from winipc.mailslots import Mailslot, open_mailslot, write_mailslot

from conftest import run_py, wait_line

READER = r"""
import json, sys
from winipc import errors as W
from winipc.mailslots import Mailslot
name, accept, timeout = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
with Mailslot(name, read_timeout=timeout, accept_network=accept) as s:
    print("ready", flush=True)
    while True:
        try:
            m = s.read_message()
        except W.SemTimeout:
            print("timeout", flush=True)
            break
        print("got", json.dumps([m.data.decode(), m.transport, m.sender_host]), flush=True)
        if m.data.endswith(b"stop"):
            break
"""

WRITER = r"""
import sys
from winipc import errors as W
from winipc.mailslots import open_mailslot
transport, args = sys.argv[1], sys.argv[2:]   # then (target, message) pairs
for target, msg in zip(args[0::2], args[1::2]):
    with open_mailslot(target) as w:
        assert w.transport == transport, w.transport
        try:
            w.write(msg.encode())
            print("sent", len(msg), flush=True)
        except W.InvalidParameter as e:
            print("refused", e.winerror, len(msg), flush=True)
print("done", flush=True)
"""


def _lines_until(proc: subprocess.Popen[str], last: str, timeout: float = 20.0) -> list[str]:
    """The process's lines up to and including the first that starts with ``last``."""
    out: list[str] = []
    while True:
        line = wait_line(proc, "", timeout=timeout)
        out.append(line)
        if line.startswith(last):
            return out


def _got(lines: list[str]) -> list[list[str]]:
    return [json.loads(line[4:]) for line in lines if line.startswith("got ")]


@pytest.fixture
def host_roots(tmp_path: Path) -> Iterator[list[Path]]:
    """A namespace root per simulated host (mailslot names are machine-wide); left empty."""
    roots = []
    for i in range(4):
        r = tmp_path / f"host{i}"
        r.mkdir(mode=0o700)
        roots.append(r)
    yield roots
    for r in roots:
        left = [str(p) for p in r.rglob("*") if p.is_dir() and p.parent.name.startswith("local-")]
        left += [str(p) for p in r.iterdir() if not p.name.startswith(("local-", ".dead."))]
        assert not left, f"objects left behind: {left}"


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, WINIPC_ROOT=str(root), **extra)
    env.pop("WINIPC_NATS_URL", None)
    return env


# ============================================================================ UDP between hosts


def test_broadcast_reaches_every_opted_in_host_only(host_roots: list[Path]) -> None:
    """Four hosts on one LAN: two opt in, one does not, the sender broadcasts."""
    require()
    name = r"\\.\mailslot\lan\news"
    with Lan(4) as lan:
        readers = [
            lan.hosts[i].run_py(READER, name, accept, "3", env=_env(host_roots[i]))
            for i, accept in ((1, "1"), (2, "1"), (3, "0"))
        ]
        for r in readers:
            wait_line(r, "ready")
        news = r"\\*\mailslot\LAN\NEWS"
        tx = lan.hosts[0].run_py(WRITER, "udp", news, "x" * 425, news, "hello", news, "stop", env=_env(host_roots[0]))
        assert _lines_until(tx, "done") == ["refused 87 425", "sent 5", "sent 4", "done"]
        for r, host in zip(readers[:2], (lan.hosts[1], lan.hosts[2]), strict=True):
            got = _got(_lines_until(r, "got", timeout=10) + _lines_until(r, "got", timeout=10))
            assert [g[0] for g in got] == ["hello", "stop"], (host.hostname, got)
            assert all(g[1] == "udp" and g[2] == lan.hosts[0].hostname for g in got), got
        assert _lines_until(readers[2], "") == ["timeout"]  # never opted in: nothing arrives
        for r in readers:
            assert r.wait(10) == 0, r.stderr.read() if r.stderr else ""


def test_unicast_reaches_the_named_host_only_and_domains_filter_broadcasts(host_roots: list[Path]) -> None:
    require()
    name = r"\\.\mailslot\lan\direct"
    with Lan(3) as lan:
        sales = {"WINIPC_DOMAIN": "SALES"}
        r1 = lan.hosts[1].run_py(READER, name, "1", "3", env=_env(host_roots[1], **sales))
        r2 = lan.hosts[2].run_py(READER, name, "1", "3", env=_env(host_roots[2]))
        wait_line(r1, "ready")
        wait_line(r2, "ready")
        h1 = lan.hosts[1].hostname if lan.names_resolve else lan.hosts[1].ip
        tx = lan.hosts[0].run_py(WRITER, "udp", f"\\\\{h1}\\mailslot\\lan\\direct", "only for h1", env=_env(host_roots[0]))
        assert _lines_until(tx, "done")[-1] == "done"
        sales_slot = r"\\sales\mailslot\lan\direct"
        tx = lan.hosts[0].run_py(WRITER, "udp", sales_slot, "sales only", sales_slot, "x" * 425, env=_env(host_roots[0]))
        assert _lines_until(tx, "done") == ["sent 10", "refused 87 425", "done"]
        big = "u" * 60000  # unicast goes up to the UDP limit
        h2 = f"\\\\{lan.hosts[2].ip}\\mailslot\\lan\\direct"
        tx = lan.hosts[0].run_py(WRITER, "udp", h2, big, h2, "stop", env=_env(host_roots[0]))
        assert _lines_until(tx, "done")[-1] == "done"
        got1 = _got(_lines_until(r1, "got") + _lines_until(r1, "got") + _lines_until(r1, "timeout"))
        assert [g[0] for g in got1] == ["only for h1", "sales only"]
        got2 = _got(_lines_until(r2, "got", timeout=10) + _lines_until(r2, "got", timeout=10))
        assert [len(g[0]) for g in got2] == [60000, 4]  # neither h1's unicast nor SALES' broadcast
        for r in (r1, r2):
            assert r.wait(10) == 0


def test_network_datagrams_are_refused_unless_the_mailslot_opted_in() -> None:
    """On one host: a datagram to a mailslot that did not opt in is never read."""
    with Mailslot(r"\\.\mailslot\udp-off", read_timeout=0) as off:
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d = wire.encode(wire.Datagram("udp-off", b"sneaky", sender_host="x"))
        s.sendto(d, ("127.0.0.1", wire.udp_port("udp-off")))
        s.close()
        with pytest.raises(W.SemTimeout):
            off.read()
    with Mailslot(r"\\.\mailslot\udp-on", read_timeout=5, accept_network=True) as on:
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port = wire.udp_port("udp-on")
        for junk in (b"", b"MS\x09" + bytes(40), wire.encode(wire.Datagram("other", b"no")) ):
            s.sendto(junk, ("127.0.0.1", port))
        s.sendto(wire.encode(wire.Datagram("UDP-ON", b"yes", sender_host="far", sender_pid=7)), ("127.0.0.1", port))
        s.close()
        m = on.read_message()
        assert (m.data, m.transport, m.sender_host, m.sender_pid, m.sender_uid) == (b"yes", "udp", "far", 7, None)
        assert m.address is not None and m.address[0] == "127.0.0.1"
        assert on.dropped == 3


# ============================================================================ NATS

NATS_URL = "nats://127.0.0.1:4222"


def _nats_or_skip() -> None:
    from winipc._backends import nats as N

    try:
        link = N.NatsLink.acquire(NATS_URL)
    except (W.BadNetPath, W.NotSupported, W.Timeout) as exc:
        if os.environ.get("WINIPC_REQUIRE_ALL"):
            pytest.fail(f"NATS at {NATS_URL} is required: {exc}")
        pytest.skip(f"no NATS server at {NATS_URL}: {exc}")
    link.release()


def test_domain_broadcast_through_nats_reaches_every_host_of_the_cluster(
    host_roots: list[Path], procs: list[subprocess.Popen[str]]
) -> None:
    """Hosts simulated by processes with their own root, host name and domain, one NATS."""
    _nats_or_skip()
    tag = uuid.uuid4().hex[:8]
    name = f"\\\\.\\mailslot\\nats\\{tag}"
    nats = {"WINIPC_NATS_URL": NATS_URL}
    hosts = [
        ("ha", "1", {"WINIPC_DOMAIN": "SALES"}),
        ("hb", "1", {}),
        ("hc", "0", {}),  # did not opt in
    ]
    readers = []
    for i, (host, accept, extra) in enumerate(hosts):
        env = dict(_env(host_roots[i], WINIPC_HOSTNAME=f"{host}-{tag}", **extra), **nats)
        p = run_py(READER, name, accept, "3", env=env)
        procs.append(p)
        readers.append(p)
    for r in readers:
        wait_line(r, "ready")
    env0 = dict(_env(host_roots[3], WINIPC_HOSTNAME=f"hz-{tag}"), **nats)
    tx = run_py(
        WRITER,
        "nats",
        f"\\\\*\\mailslot\\nats\\{tag}", "all",
        f"\\\\sales\\mailslot\\nats\\{tag}", "sales",
        f"\\\\hb-{tag}\\mailslot\\nats\\{tag}", "to hb",
        f"\\\\*\\mailslot\\nats\\{tag}", "x" * 425,
        f"\\\\*\\mailslot\\nats\\{tag}", "stop",
        env=env0,
    )
    procs.append(tx)
    assert _lines_until(tx, "done") == ["sent 3", "sent 5", "sent 5", "refused 87 425", "sent 4", "done"]
    got_a = _got(_read_until_stop(readers[0]))
    got_b = _got(_read_until_stop(readers[1]))
    assert [g[0] for g in got_a] == ["all", "sales", "stop"]
    assert [g[0] for g in got_b] == ["all", "to hb", "stop"]
    assert all(g[1] == "nats" and g[2] == f"hz-{tag}" for g in got_a + got_b)
    assert _lines_until(readers[2], "") == ["timeout"]
    for r in readers:
        assert r.wait(10) == 0


def _read_until_stop(proc: subprocess.Popen[str]) -> list[str]:
    lines = []
    while True:
        line = wait_line(proc, "", timeout=10)
        lines.append(line)
        if line.startswith("got") and json.loads(line[4:])[0] == "stop":
            return lines
        assert not line.startswith("timeout"), lines


def test_a_nats_writer_to_an_unreachable_server_fails_clearly() -> None:
    pytest.importorskip("nats")
    with pytest.raises(W.BadNetPath):
        open_mailslot(r"\\*\mailslot\nowhere", nats_url="nats://127.0.0.1:1")
    with pytest.raises(W.InvalidParameter):
        write_mailslot(r"\\*\mailslot\nowhere", b"x", nats_url="http://127.0.0.1:4222")
