"""A small LAN of "hosts" on this one machine, built from Linux network namespaces (needs root).

    with Lan(3) as lan:
        rx = lan.hosts[2].run_py(RECEIVER, str(port))
        wait_line(rx, "ready")
        tx = lan.hosts[0].run_py(SENDER, lan.hosts[2].ip, str(port))

Layout. A "switch" namespace holds a Linux bridge; every host is a namespace of its own, joined to
the bridge by a veth pair (one end a bridge port in the switch namespace, the other end the host's
interface ``host.ifname``) with address ``10.<a>.<b>.<i+1>/24`` and the subnet broadcast
``10.<a>.<b>.255``. There is no default route unless ``Lan(n, default_route=True)``; without one,
a send to the limited broadcast 255.255.255.255 fails with ENETUNREACH (subnet broadcasts work).
Nothing is ever created in the machine's own network namespace: its interfaces, routes and
netfilter rules cannot disturb the LAN (a fresh namespace has no iptables rules, so
``bridge-nf-call-iptables`` cannot drop bridged frames), and the LAN cannot disturb the machine.
Deleting the namespaces removes the bridge and every veth with them.

Host names. Commands started through a host run in a UTS namespace of their own whose host name is
``host.hostname`` (``h<i>-<token>``), so ``socket.gethostname()`` differs per host. Where
``/etc/hosts`` exists, each namespace also gets an ``/etc/netns/<ns>/hosts`` (which
``ip netns exec`` mounts over ``/etc/hosts``) naming every host of the LAN, so a host name
resolves to its LAN address on every host (``Lan.names_resolve`` tells whether that was set up).

All hosts share one file system, so ``WINIPC_ROOT`` (taken from the current environment, as
conftest's ``run_py`` does) is the same directory on every host unless a test passes its own.

Names carry the pid of the creating process and a random token
(``winipc-<pid>-<token>-h<i>`` / ``-sw``), so parallel runs do not collide; a ``Lan`` first
removes what a killed run (whose pid is gone) left behind. Teardown runs on leaving the ``with``
block, and an ``atexit`` hook tears down any ``Lan`` still open when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from conftest import SRC

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
PREFIX = "winipc-"
ETC_NETNS = Path("/etc/netns")
_NAME_RE = re.compile(r"^winipc-(\d+)-[0-9a-z]+-(?:h\d+|sw)$")

# Runs inside the new UTS namespace: set the host name, then become the real command (same pid).
_BOOT = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"


def _ip() -> str:
    return shutil.which("ip") or "ip"


def _run(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run ``ip``-style commands; on failure raise with the command's stderr in the message."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_list() -> list[str]:
    """Names of all network namespaces ``ip netns list`` shows."""
    out = _run(_ip(), "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_ns_pids(ns: str) -> None:
    """SIGKILL every process still inside namespace ``ns`` (e.g. grandchildren of a test)."""
    out = _run(_ip(), "netns", "pids", ns, check=False).stdout
    for tok in out.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def _delete_ns(ns: str) -> None:
    _kill_ns_pids(ns)
    _run(_ip(), "netns", "delete", ns, check=False)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces (and their /etc/netns files) left by harness runs whose process is gone."""
    removed = []
    names = set(netns_list())
    if ETC_NETNS.is_dir():
        names |= {p.name for p in ETC_NETNS.iterdir() if p.name.startswith(PREFIX)}
    for ns in sorted(names):
        m = _NAME_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_ns(ns)
            removed.append(ns)
    return removed


@functools.cache
def available() -> str | None:
    """Why the harness cannot run here (not root, ``ip`` missing, no netns support), or None."""
    if not sys.platform.startswith("linux"):
        return "network-namespace tests need Linux"
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    if shutil.which("ip") is None:
        return "network-namespace tests need `ip` (iproute2)"
    if shutil.which("unshare") is None:
        return "network-namespace tests need `unshare` (util-linux)"
    ns = f"{PREFIX}{os.getpid()}-probe{secrets.token_hex(2)}-sw"
    ip = _ip()
    try:
        for argv in (
            (ip, "netns", "add", ns),
            (ip, "-n", ns, "link", "add", "wiprobebr", "type", "bridge"),
            (ip, "-n", ns, "link", "add", "wiprobe0", "type", "veth", "peer", "name", "wiprobe1"),
            (ip, "netns", "exec", ns, shutil.which("unshare") or "unshare", "--uts",
             sys.executable, "-I", "-S", "-c", _BOOT, "probe", "true"),
        ):
            r = _run(*argv, check=False)
            if r.returncode != 0:
                return f"network namespaces unsupported here: `{' '.join(argv[:6])}` failed: {r.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"network namespaces unsupported here: {e}"
    finally:
        _delete_ns(ns)
    return None


def require() -> None:
    """Skip the test when the harness cannot run (fail it instead when WINIPC_REQUIRE_ALL=1)."""
    reason = available()
    if reason is None:
        return
    if REQUIRE:
        pytest.fail(reason)
    pytest.skip(reason)


class Host:
    """One namespace of a ``Lan``: its addresses, and helpers to start processes "on" it."""

    def __init__(self, lan: Lan, index: int, ns: str, ip: str, ifname: str, hostname: str) -> None:
        self.lan = lan
        self.index = index
        self.ns = ns
        self.ip = ip
        self.ifname = ifname
        self.broadcast = lan.broadcast
        self.hostname = hostname
        self.procs: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Host({self.index}, ns={self.ns!r}, ip={self.ip!r}, hostname={self.hostname!r})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` in this host's namespace, under this host's host name."""
        return [
            _ip(), "netns", "exec", self.ns,
            shutil.which("unshare") or "unshare", "--uts",
            sys.executable, "-I", "-S", "-c", _BOOT, self.hostname,
            *argv,
        ]  # fmt: skip

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen(argv, **kw)`` on this host; killed at teardown if still running.

        The returned process is the command itself (every wrapper execs), so its pid, signals
        and exit status are the command's.
        """
        if self.lan.closed:
            raise RuntimeError("the LAN is torn down")
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(argv), **kw)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to completion (output captured, text mode)."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)

    def run_py(
        self, code: str, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        """conftest's ``run_py`` on this host: ``code`` in a real Python process.

        Same interpreter (``sys.executable``), environment (ours, or ``env``) with this checkout's
        src first on PYTHONPATH and ``WINIPC_ROOT`` from ours unless ``env`` sets it; stdout and
        stderr piped, text mode, line buffered.
        """
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
        if "WINIPC_ROOT" in os.environ:
            full_env.setdefault("WINIPC_ROOT", os.environ["WINIPC_ROOT"])
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("bufsize", 1)
        proc: subprocess.Popen[str] = self.popen(
            [sys.executable, "-c", textwrap.dedent(code), *args], text=True, env=full_env, **kw
        )
        return proc


_LIVE: list[Lan] = []


class Lan:
    """``with Lan(n) as lan:`` — n hosts on one bridged /24; everything removed on exit."""

    def __init__(self, n: int = 3, *, default_route: bool = False, ready_timeout: float = 5.0) -> None:
        if not 1 <= n <= 250:
            raise ValueError("a Lan has 1 to 250 hosts")
        self.n = n
        self.default_route = default_route
        self.ready_timeout = ready_timeout
        self.token = secrets.token_hex(3)
        self.prefix = f"{PREFIX}{os.getpid()}-{self.token}"
        a, b = 1 + secrets.randbelow(254), 1 + secrets.randbelow(254)
        self.net = f"10.{a}.{b}"
        self.subnet = f"{self.net}.0/24"
        self.broadcast = f"{self.net}.255"
        self.switch_ns = f"{self.prefix}-sw"
        self.bridge = f"wi{self.token}br"
        self.hosts: list[Host] = [
            Host(self, i, f"{self.prefix}-h{i}", f"{self.net}.{i + 1}", f"wi{self.token}h{i}",
                 f"h{i}-{self.token}")
            for i in range(n)
        ]  # fmt: skip
        self.names_resolve = False
        self.closed = True

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Lan:
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        cleanup_stale()
        self.closed = False
        _LIVE.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except Exception as e:
            if et is None:
                raise
            print(f"netns: teardown after a failure also failed: {e}", file=sys.stderr)

    def _build(self) -> None:
        ip, sw = _ip(), self.switch_ns
        _run(ip, "netns", "add", sw)
        _run(ip, "-n", sw, "link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        # Per-namespace on kernels >= 5.3 (absent otherwise); a fresh namespace has no rules anyway.
        _run(ip, "netns", "exec", sw, "sh", "-c",
             "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -w \"$f\" ] && echo 0 > \"$f\"; done; true",
             check=False)  # fmt: skip
        _run(ip, "-n", sw, "link", "set", "lo", "up")
        _run(ip, "-n", sw, "link", "set", self.bridge, "up")
        self.names_resolve = self._write_hosts_files()
        for i, h in enumerate(self.hosts):
            port = f"wi{self.token}p{i}"
            _run(ip, "netns", "add", h.ns)
            _run(ip, "-n", sw, "link", "add", port, "type", "veth",
                 "peer", "name", h.ifname, "netns", h.ns)  # fmt: skip
            _run(ip, "-n", sw, "link", "set", port, "master", self.bridge, "up")
            _run(ip, "-n", h.ns, "addr", "add", f"{h.ip}/24", "brd", "+", "dev", h.ifname)
            _run(ip, "-n", h.ns, "link", "set", "lo", "up")
            _run(ip, "-n", h.ns, "link", "set", h.ifname, "up")
            if self.default_route:
                _run(ip, "-n", h.ns, "route", "add", "default", "dev", h.ifname)
        self._wait_ready()

    def _write_hosts_files(self) -> bool:
        if not Path("/etc/hosts").exists():
            return False
        text = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + "".join(
            f"{h.ip}\t{h.hostname}\n" for h in self.hosts
        )
        try:
            for h in self.hosts:
                d = ETC_NETNS / h.ns
                d.mkdir(parents=True, exist_ok=True)
                (d / "hosts").write_text(text)
        except OSError:
            for h in self.hosts:
                shutil.rmtree(ETC_NETNS / h.ns, ignore_errors=True)
            return False
        return True

    def _wait_ready(self) -> None:
        """Poll until every bridge port forwards and every host interface is up."""
        ip = _ip()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            ports = json.loads(
                _run(ip, "-j", "-d", "-n", self.switch_ns, "link", "show", "master", self.bridge).stdout or "[]"
            )
            states = [p.get("linkinfo", {}).get("info_slave_data", {}).get("state") for p in ports]
            ok = len(states) == self.n and all(s == "forwarding" for s in states)
            if ok:
                for h in self.hosts:
                    link = json.loads(_run(ip, "-j", "-n", h.ns, "link", "show", "dev", h.ifname).stdout)
                    if link[0].get("operstate") != "UP":
                        ok = False
                        break
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"LAN not ready after {self.ready_timeout} s: bridge ports {states}")
            time.sleep(0.01)

    def close(self) -> None:
        """Kill processes started on the hosts, delete every namespace (idempotent)."""
        if self.closed:
            return
        self.closed = True
        procs = [p for h in self.hosts for p in h.procs]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + 3.0
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # Whatever else still runs there (grandchildren) may hold our children's pipes open.
        for h in self.hosts:
            _kill_ns_pids(h.ns)
        for p in procs:
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                for f in (p.stdin, p.stdout, p.stderr):
                    if f is not None:
                        with contextlib.suppress(OSError):
                            f.close()
        for ns in [h.ns for h in self.hosts] + [self.switch_ns]:
            _delete_ns(ns)
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        left = [ns for ns in netns_list() if ns.startswith(self.prefix)]
        if left:
            raise RuntimeError(f"netns teardown left namespaces behind: {left}")

    def __repr__(self) -> str:
        return f"Lan({self.n}, subnet={self.subnet!r}, prefix={self.prefix!r}, closed={self.closed})"


@atexit.register
def _close_all() -> None:
    for lan in list(_LIVE):
        with contextlib.suppress(Exception):
            lan.close()
