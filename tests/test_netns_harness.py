"""The network-namespace LAN harness itself: unicast, broadcast, host names and clean teardown."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import netns
from netns import Lan

from conftest import wait_line


@pytest.fixture(autouse=True)
def _need_netns() -> Iterator[None]:
    netns.require()
    yield


# Prints "ready" once bound, then "got <payload> <source ip>" per datagram until payload "end".
RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(10)
print("ready", flush=True)
while True:
    data, (src, _) = s.recvfrom(2048)
    print("got", data.decode(), src, flush=True)
    if data == b"end":
        break
"""

# Sends each argv "dst[=payload]" (payload defaults to dst) from a socket bound to the same port;
# with "--self" it then reads its own socket until the payload "end" comes back.
SENDER = r"""
import socket, sys
port, *targets = sys.argv[1:]
own = "--self" in targets
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(port)))
s.settimeout(10)
for t in targets:
    if t == "--self":
        continue
    dst, _, payload = t.partition("=")
    try:
        s.sendto((payload or dst).encode(), (dst, int(port)))
        print("sent", dst, flush=True)
    except OSError as e:
        print("error", dst, e.errno, flush=True)
while own:
    data, (src, _) = s.recvfrom(2048)
    print("self", data.decode(), src, flush=True)
    own = data != b"end"
"""


def _port() -> int:
    return 20000 + int.from_bytes(os.urandom(2), "big") % 20000


def _finish(proc: subprocess.Popen[str]) -> list[str]:
    """Wait for ``proc`` (10 s), assert it succeeded, and return its remaining stdout lines."""
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out.splitlines()


def _receivers(lan: Lan, port: int, which: list[int]) -> dict[int, subprocess.Popen[str]]:
    rx = {i: lan.hosts[i].run_py(RECEIVER, str(port)) for i in which}
    for p in rx.values():
        wait_line(p, "ready")
    return rx


def test_unicast_reaches_its_host_only() -> None:
    port = _port()
    with Lan(3) as lan:
        h0, _, h2 = lan.hosts
        rx = _receivers(lan, port, [1, 2])
        tx = h0.run_py(SENDER, str(port), f"{h2.ip}=hello", f"{lan.broadcast}=end")
        assert _finish(tx) == [f"sent {h2.ip}", f"sent {lan.broadcast}"]
        assert _finish(rx[2]) == [f"got hello {h0.ip}", f"got end {h0.ip}"]
        # Host 1 saw the broadcast sent after the unicast, but never the unicast itself.
        assert _finish(rx[1]) == [f"got end {h0.ip}"]


def test_subnet_broadcast_reaches_every_host_and_loops_back_to_the_sender() -> None:
    port = _port()
    with Lan(3) as lan:
        h0 = lan.hosts[0]
        assert h0.broadcast == lan.broadcast == lan.subnet.replace(".0/24", ".255")
        rx = _receivers(lan, port, [0, 1, 2])
        tx = h0.run_py(SENDER, str(port), f"{lan.broadcast}=hello", f"{lan.broadcast}=end", "--self")
        # Linux loops a broadcast back into the sending namespace: the sending socket itself and
        # every other socket there bound to the port receive it, like the other hosts do.
        assert _finish(tx) == [f"sent {lan.broadcast}"] * 2 + [f"self hello {h0.ip}", f"self end {h0.ip}"]
        for i in (0, 1, 2):
            assert _finish(rx[i]) == [f"got hello {h0.ip}", f"got end {h0.ip}"], i


def test_limited_broadcast_needs_a_default_route() -> None:
    port = _port()
    with Lan(2) as lan:
        tx = lan.hosts[0].run_py(SENDER, str(port), "255.255.255.255")
        assert _finish(tx) == [f"error 255.255.255.255 {101}"]  # ENETUNREACH
    with Lan(2, default_route=True) as lan:
        rx = _receivers(lan, port, [1])
        tx = lan.hosts[0].run_py(SENDER, str(port), "255.255.255.255=end")
        assert _finish(tx) == ["sent 255.255.255.255"]
        assert _finish(rx[1]) == [f"got end {lan.hosts[0].ip}"]


def test_host_without_a_socket_does_not_break_the_others() -> None:
    port = _port()
    with Lan(3) as lan:
        h0, h1, h2 = lan.hosts
        rx = _receivers(lan, port, [2])
        # Host 1 runs nothing: its unicasts draw ICMP port-unreachable, which an unconnected
        # socket ignores; the broadcast and later unicasts still reach host 2.
        tx = h0.run_py(
            SENDER, str(port), f"{h1.ip}=a", f"{lan.broadcast}=b", f"{h1.ip}=c", f"{h2.ip}=d", f"{h2.ip}=end"
        )
        assert _finish(tx) == [f"sent {d}" for d in (h1.ip, lan.broadcast, h1.ip, h2.ip, h2.ip)]
        assert _finish(rx[2]) == [f"got {x} {h0.ip}" for x in ("b", "d", "end")]


def test_hostnames_differ_per_host_and_resolve_on_the_lan() -> None:
    code = r"""
import socket, sys
print("name", socket.gethostname(), flush=True)
for other in sys.argv[1:]:
    print("addr", other, socket.gethostbyname(other), flush=True)
"""
    with Lan(3) as lan:
        names = [h.hostname for h in lan.hosts]
        assert len(set(names)) == 3 and socket.gethostname() not in names
        procs = [h.run_py(code, *(names if lan.names_resolve else [])) for h in lan.hosts]
        for h, p in zip(lan.hosts, procs, strict=True):
            lines = _finish(p)
            assert lines[0] == f"name {h.hostname}"
            if lan.names_resolve:
                assert lines[1:] == [f"addr {o.hostname} {o.ip}" for o in lan.hosts]
    assert socket.gethostname() not in names


def _harness_traces(lan: Lan) -> list[str]:
    found = [ns for ns in netns.netns_list() if lan.token in ns]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found += [line for line in links.splitlines() if lan.token in line]
    if netns.ETC_NETNS.is_dir():
        found += [p.name for p in netns.ETC_NETNS.iterdir() if lan.token in p.name]
    return found


def test_teardown_removes_everything_and_kills_children() -> None:
    # The child leaves a grandchild in the namespace that the harness never saw started.
    code = r"""
import subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print("ready", g.pid, flush=True)
time.sleep(60)
"""
    with pytest.raises(RuntimeError, match="test failed"), Lan(2) as lan:
        assert lan.hosts[0].ns in netns.netns_list()
        assert f"{lan.hosts[1].ip}/24" in lan.hosts[1].run(["ip", "-o", "addr", "show", lan.hosts[1].ifname]).stdout
        child = lan.hosts[0].run_py(code)
        grandchild = int(wait_line(child, "ready").split()[1])
        raise RuntimeError("test failed")
    assert child.returncode is not None
    assert _harness_traces(lan) == []
    assert lan.closed
    try:
        state = Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z")
    lan.close()  # idempotent


def test_leftovers_of_a_killed_run_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"winipc-{dead.pid}-dead00-h0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with Lan(1) as lan:
            assert stale not in netns.netns_list()
            assert len(lan.hosts) == 1
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)
    assert _harness_traces(lan) == []


def test_require_skips_or_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "available", lambda: "no netns here")
    monkeypatch.setattr(netns, "REQUIRE", False)
    with pytest.raises(pytest.skip.Exception, match="no netns here"):
        netns.require()
    monkeypatch.setattr(netns, "REQUIRE", True)
    with pytest.raises(pytest.fail.Exception, match="no netns here"):
        netns.require()
