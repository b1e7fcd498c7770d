"""The NATS backend (winipc._backends.nats) against the real server at nats://127.0.0.1:4222.

Tests that need the server skip with a reason when none answers (fail instead under
WINIPC_REQUIRE_ALL=1). Every subject is unique per test. No test may leave a link thread
or a socket behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from natsutil import server_answers
from winipc import errors as W
from winipc._backends import nats as N
from winipc._backends.nats import NatsLink, nats_url

from conftest import run_py, wait_line

REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
URL = "nats://127.0.0.1:4222"
WAIT = 10.0  # seconds to wait for a delivery before calling it lost (never a timing assert)


def _skip(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
    pytest.skip(reason)



@pytest.fixture
def nats_lib() -> None:
    """nats-py is importable (skip, or fail under WINIPC_REQUIRE_ALL, when not)."""
    try:
        import nats  # noqa: F401
    except ImportError:
        _skip("nats-py is not installed (pip install 'winipc[nats]')")


@pytest.fixture
def server(nats_lib: None) -> str:
    """The URL of a NATS server that answers."""
    if not server_answers():
        _skip(f"no NATS server answers at {URL}")
    return URL


def _socket_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.add(int(name))
        except OSError:
            pass
    return fds


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Fail the test if a link, a link thread or a socket outlives it."""
    linux = sys.platform.startswith("linux")
    before = _socket_fds() if linux else set()
    yield
    assert not N._registry.links, f"links left registered: {N._registry.links}"
    left = [t.name for t in threading.enumerate() if t.name.startswith("winipc-nats-")]
    assert not left, f"link threads left running: {left}"
    if linux:
        leaked = _socket_fds() - before
        assert not leaked, f"sockets left open: {sorted(leaked)}"


def subject() -> str:
    return f"winipc.test.{uuid.uuid4().hex}"


class Collector:
    """A callback that records payloads; ``wait(n)`` blocks until ``n`` have arrived."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.cond = threading.Condition()

    def __call__(self, data: bytes) -> None:
        with self.cond:
            self.items.append(data)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = WAIT) -> list[bytes]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) >= n, timeout)
            return list(self.items)


# --- URLs and arguments (no server needed)


def test_nats_url_explicit_env_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(N.ENV_URL, raising=False)
    assert nats_url() is None
    assert nats_url(None) is None
    assert nats_url(" nats://h:4222 ") == "nats://h:4222"
    monkeypatch.setenv(N.ENV_URL, "nats://envhost:4333")
    assert nats_url() == "nats://envhost:4333"  # read on each call
    assert nats_url("tls://explicit") == "tls://explicit"  # explicit wins
    monkeypatch.setenv(N.ENV_URL, "tls://other")
    assert nats_url() == "tls://other"
    assert nats_url("nats://a:1,nats://b:2") == "nats://a:1,nats://b:2"
    assert nats_url("nats://user:secret@h") == "nats://user:secret@h"


@pytest.mark.parametrize(
    "bad",
    ["http://h:4222", "h:4222", "localhost", "nats://", "nats://h:99999", "nats://h:0",
     "nats://h:4222/path", "nats://h?x=1", "ws://h:80", "nats+tls://h", "nats://a,http://b"],
)
def test_nats_url_rejects(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(W.InvalidParameter) as ei:
        nats_url(bad, argument="nats")
    assert "nats=" in str(ei.value)
    assert ei.value.winerror == W.ERROR_INVALID_PARAMETER
    assert isinstance(ei.value, ValueError)
    monkeypatch.setenv(N.ENV_URL, bad)
    with pytest.raises(W.InvalidParameter, match=N.ENV_URL):
        nats_url()


def test_nats_url_hides_password() -> None:
    with pytest.raises(W.InvalidParameter) as ei:
        nats_url("nats://user:hunter2@h:4222/x")
    assert "hunter2" not in str(ei.value)


def test_acquire_needs_a_url(nats_lib: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(N.ENV_URL, URL)  # acquire does not fall back to the environment
    with pytest.raises(W.InvalidParameter, match="url"):
        NatsLink.acquire("")
    with pytest.raises(W.InvalidParameter, match="url"):
        NatsLink.acquire("http://127.0.0.1:4222")
    with pytest.raises(W.InvalidParameter, match="connect_timeout"):
        NatsLink.acquire(URL, connect_timeout=0)


def test_nats_py_missing_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # makes "import nats" raise ImportError
    with pytest.raises(W.NotSupported, match=r"winipc\[nats\]") as ei:
        NatsLink.acquire(URL)
    assert ei.value.winerror == W.ERROR_NOT_SUPPORTED


def test_link_cannot_be_built_directly() -> None:
    with pytest.raises(TypeError, match="acquire"):
        NatsLink(URL)


@pytest.mark.timeout(15)
def test_unreachable_server_is_bad_netpath(nats_lib: None) -> None:
    with pytest.raises(W.BadNetPath) as ei:
        NatsLink.acquire("nats://127.0.0.1:1")
    assert ei.value.winerror == W.ERROR_BAD_NETPATH == 53
    assert isinstance(ei.value, FileNotFoundError)
    assert "127.0.0.1:1" in str(ei.value)


@pytest.mark.timeout(15)
def test_unreachable_server_hides_password(nats_lib: None) -> None:
    with pytest.raises(W.BadNetPath) as ei:
        NatsLink.acquire("nats://user:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(ei.value)


# --- with the server


@pytest.mark.timeout(30)
def test_tls_url_refuses_plaintext_server(server: str) -> None:
    with pytest.raises(W.AccessDenied, match="TLS"):
        NatsLink.acquire(server.replace("nats://", "tls://"))


@pytest.mark.timeout(30)
def test_round_trip_to_subscriber_process(server: str, procs: list[subprocess.Popen[str]]) -> None:
    """A child subscribes and blocks in a plain queue.get(); its callback still receives."""
    subj = subject()
    child = run_py(
        """
        import queue, sys, threading
        from winipc._backends.nats import NatsLink
        url, subject = sys.argv[1:3]
        inbox = queue.Queue()
        link = NatsLink.acquire(url)
        sub = link.subscribe(subject, inbox.put)
        print("READY", flush=True)
        while True:
            data = inbox.get()          # the main thread blocks in a synchronous read
            if data == b"STOP":
                break
            print("GOT:" + data.hex(), flush=True)
        sub.close()
        link.release()
        print("THREADS", len(threading.enumerate()), flush=True)
        """,
        server,
        subj,
    )
    procs.append(child)
    wait_line(child, "READY")
    payloads = [b"hello", b"\x00\xff binary \r\n", b"", b"x" * 70000]
    with NatsLink.acquire(server) as link:
        for p in payloads:
            link.publish(subj, p)
            assert wait_line(child, "GOT:") == "GOT:" + p.hex()
        link.publish(subj, b"STOP")
    assert wait_line(child, "THREADS") == "THREADS 1"
    assert child.wait(10) == 0, child.stderr.read() if child.stderr else ""


@pytest.mark.timeout(60)
def test_publish_after_subscribe_returns_is_delivered(server: str, procs: list[subprocess.Popen[str]]) -> None:
    """No sleeps: a publish from another connection started after subscribe() returns arrives."""
    pub = run_py(
        """
        import sys
        from winipc._backends.nats import NatsLink
        with NatsLink.acquire(sys.argv[1]) as link:
            print("READY", flush=True)
            for line in sys.stdin:
                link.publish(line.strip(), b"ping")
                print("SENT", flush=True)
        """,
        server,
        stdin=subprocess.PIPE,
    )
    procs.append(pub)
    wait_line(pub, "READY")
    assert pub.stdin is not None
    with NatsLink.acquire(server) as link:
        for _ in range(25):
            subj = subject()
            got = Collector()
            sub = link.subscribe(subj, got)
            pub.stdin.write(subj + "\n")
            pub.stdin.flush()
            wait_line(pub, "SENT")
            assert got.wait(1) == [b"ping"]
            sub.close()
    _, err = pub.communicate(timeout=10)  # closes stdin: the publisher ends
    assert pub.returncode == 0, err


@pytest.mark.timeout(60)
def test_many_messages_in_order_from_another_process(server: str, procs: list[subprocess.Popen[str]]) -> None:
    n = 3000
    subj = subject()
    with NatsLink.acquire(server) as link:
        got = Collector()
        with link.subscribe(subj, got):
            child = run_py(
                """
                import sys
                from winipc._backends.nats import NatsLink
                url, subject, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
                with NatsLink.acquire(url) as link:
                    for i in range(n):
                        link.publish(subject, b"%d" % i)
                print("DONE", flush=True)
                """,
                server,
                subj,
                str(n),
            )
            procs.append(child)
            wait_line(child, "DONE", timeout=40)
            items = got.wait(n)
    assert items == [b"%d" % i for i in range(n)]
    assert child.wait(10) == 0


def test_many_messages_in_order_same_link(server: str) -> None:
    subj = subject()
    with NatsLink.acquire(server) as link:
        got = Collector()
        with link.subscribe(subj, got) as sub:
            for i in range(500):
                link.publish(subj, i.to_bytes(4, "big"))
            assert got.wait(500) == [i.to_bytes(4, "big") for i in range(500)]
        assert sub.closed


def test_callback_exception_does_not_kill_the_link(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    subj = subject()
    got = Collector()

    def callback(data: bytes) -> None:
        got(data)
        if data == b"bad":
            raise ValueError("callback failure under test")

    caplog.set_level(logging.ERROR, logger="winipc.nats")
    with NatsLink.acquire(server) as link, link.subscribe(subj, callback):
        link.publish(subj, b"bad")
        link.publish(subj, b"good")
        assert got.wait(2) == [b"bad", b"good"]
        assert link.thread.is_alive()
        link.publish(subj, b"after")
        assert got.wait(3)[-1] == b"after"
    recs = [r for r in caplog.records if r.name == "winipc.nats"]
    assert any(
        r.exc_info and isinstance(r.exc_info[1], ValueError) and subj in r.getMessage()
        for r in recs
    ), recs


def test_blocking_call_from_callback_is_refused(server: str) -> None:
    subj = subject()
    seen: list[BaseException] = []
    done = threading.Event()

    def callback(data: bytes) -> None:
        try:
            link.publish(subj + ".other", b"reply")
        except W.WinIPCError as exc:
            seen.append(exc)
        done.set()

    with NatsLink.acquire(server) as link, link.subscribe(subj, callback):
        link.publish(subj, b"x")
        assert done.wait(WAIT)
    assert len(seen) == 1 and isinstance(seen[0], W.NotSupported)


def test_subscription_close_stops_delivery(server: str) -> None:
    subj, marker = subject(), subject()
    with NatsLink.acquire(server) as link:
        got, mark = Collector(), Collector()
        sub = link.subscribe(subj, got)
        link.publish(subj, b"1")
        assert got.wait(1) == [b"1"]
        sub.close()
        sub.close()  # idempotent
        assert sub.closed
        with link.subscribe(marker, mark):
            link.publish(subj, b"2")  # nobody listens any more
            link.publish(marker, b"m")
            assert mark.wait(1) == [b"m"]
        assert got.items == [b"1"]
        late = link.subscribe(subj, got)
    late.close()  # after the link is gone: a no-op
    assert late.closed


def test_wildcard_subscription(server: str) -> None:
    base = subject()
    with NatsLink.acquire(server) as link:
        star, rest = Collector(), Collector()
        with link.subscribe(base + ".*", star), link.subscribe(base + ".>", rest):
            link.publish(base + ".a", b"1")
            link.publish(base + ".a.b", b"2")
            assert rest.wait(2) == [b"1", b"2"]
            assert star.wait(1) == [b"1"]


def test_bad_arguments(server: str) -> None:
    with NatsLink.acquire(server) as link:
        for bad in ["", "a b", "a..b", "a.*", "a.>", ".a", "a\r\nPUB x 1"]:
            with pytest.raises(W.InvalidParameter, match="subject"):
                link.publish(bad, b"x")
        for bad in ["", "a b", "a.>.b", "a.b*", "a\n"]:
            with pytest.raises(W.InvalidParameter, match="subject"):
                link.subscribe(bad, print)
        with pytest.raises(W.InvalidParameter, match="callback"):
            link.subscribe(subject(), "not callable")  # type: ignore[arg-type]
        with pytest.raises(W.InvalidParameter, match="data"):
            link.publish(subject(), "text")  # type: ignore[arg-type]
        for t in (0, -1, float("nan"), "1"):
            with pytest.raises(W.InvalidParameter, match="timeout"):
                link.publish(subject(), b"x", timeout=t)  # type: ignore[arg-type]
        link.publish(subject(), b"x", timeout=None)


def test_max_payload_refused(server: str) -> None:
    subj = subject()
    with NatsLink.acquire(server) as link:
        limit = link.max_payload
        assert limit > 0
        got = Collector()
        with link.subscribe(subj, got):
            with pytest.raises(W.InvalidParameter) as ei:
                link.publish(subj, b"\0" * (limit + 1))
            assert str(limit) in str(ei.value) and "max_payload" in str(ei.value)
            link.publish(subj, b"\1" * limit)  # exactly the limit is fine
            items = got.wait(1)
        assert [len(i) for i in items] == [limit]  # the refused one was never sent


def test_call_timeout_is_timeout(server: str) -> None:
    with NatsLink.acquire(server) as link:
        with pytest.raises(W.Timeout) as ei:
            link.call(lambda nc: asyncio.sleep(30), timeout=0.05, what="sleep")
        assert isinstance(ei.value, TimeoutError)
        assert ei.value.winerror == W.ERROR_TIMEOUT

        async def version(nc: object) -> int:
            return int(getattr(nc, "max_payload"))  # noqa: B009

        assert link.call(version) == link.max_payload


def test_refcount(server: str) -> None:
    a = NatsLink.acquire(server)
    b = NatsLink.acquire(server)
    assert a is b
    thread = a.thread
    assert thread.is_alive() and a.connected and not a.closed
    assert sum(t.name.startswith("winipc-nats-") for t in threading.enumerate()) == 1
    a.release()
    assert thread.is_alive()
    b.publish(subject(), b"still usable")
    b.release()
    assert not thread.is_alive()
    assert a.closed and not a.connected
    with pytest.raises(W.InvalidHandle):
        a.release()
    with pytest.raises(W.InvalidHandle):
        a.publish(subject(), b"x")
    with pytest.raises(W.InvalidHandle):
        a.subscribe(subject(), print)
    c = NatsLink.acquire(server)  # a fresh link after the last release
    try:
        assert c is not a and c.thread is not thread
        c.publish(subject(), b"x")
    finally:
        c.release()


def test_acquire_from_threads(server: str) -> None:
    links: list[NatsLink] = []

    def grab() -> None:
        links.append(NatsLink.acquire(server))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in links}) == 1
    for x in links:
        x.release()


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_gets_a_new_link(server: str) -> None:
    subj = subject()
    got = Collector()
    with NatsLink.acquire(server) as link, link.subscribe(subj, got):
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 10
            try:
                try:
                    link.publish(subj, b"through the parent's link")
                    code = 11
                except W.InvalidHandle:
                    link.release()  # a no-op in the child
                    fresh = NatsLink.acquire(server)
                    code = 12
                    if fresh is not link and fresh.thread.is_alive():
                        fresh.publish(subj, b"from the child")
                        code = 13
                        fresh.release()
                        code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert got.wait(1) == [b"from the child"]
        link.publish(subj, b"parent still works")
        assert got.wait(2) == [b"from the child", b"parent still works"]


# --- with a private server this test starts and stops (reconnects, TLS)

NATS_SERVER = "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A nats-server process of our own on a free port; ``stop()`` / ``start()`` it."""

    def __init__(self, *extra: str) -> None:
        if not os.access(NATS_SERVER, os.X_OK):
            _skip(f"{NATS_SERVER} is not installed")
        self.port = _free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def private_server(nats_lib: None) -> Iterator[PrivateServer]:
    srv = PrivateServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _until(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.timeout(60)
def test_established_link_reconnects(private_server: PrivateServer) -> None:
    url = f"nats://127.0.0.1:{private_server.port}"
    subj = subject()
    got = Collector()
    with NatsLink.acquire(url) as link, link.subscribe(subj, got):
        link.publish(subj, b"before")
        assert got.wait(1) == [b"before"]
        private_server.stop()
        assert _until(lambda: not link.connected)
        assert not link.closed  # still trying
        with pytest.raises(W.Timeout):  # no confirmation while the server is away
            link.publish(subj, b"during", timeout=0.3)
        private_server.start()
        assert _until(lambda: link.connected, timeout=20)
        link.publish(subj, b"after")  # the subscription was registered again
        assert _until(lambda: b"after" in got.items)
        items = got.wait(2)
        assert items[0] == b"before" and items[-1] == b"after"
        assert set(items) <= {b"before", b"during", b"after"}  # "during" may arrive late


@pytest.mark.timeout(60)
def test_tls_link(nats_lib: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access("/usr/bin/openssl", os.X_OK):
        _skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    srv = PrivateServer("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    srv.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our self-signed server
        subj = subject()
        got = Collector()
        with NatsLink.acquire(f"tls://127.0.0.1:{srv.port}") as link, link.subscribe(subj, got):
            link.publish(subj, b"secret")
            assert got.wait(1) == [b"secret"]
        monkeypatch.delenv("SSL_CERT_FILE")  # an untrusted certificate is refused
        with pytest.raises(W.BadNetPath, match="certificate verify failed"):
            NatsLink.acquire(f"tls://127.0.0.1:{srv.port}")
    finally:
        srv.stop()


@pytest.mark.timeout(60)
def test_release_while_disconnected(private_server: PrivateServer) -> None:
    link = NatsLink.acquire(f"nats://127.0.0.1:{private_server.port}")
    sub = link.subscribe(subject(), print)
    private_server.stop()
    assert _until(lambda: not link.connected)
    sub.close()  # never raises
    link.release()  # ends the thread although nats-py is reconnecting
    assert not link.thread.is_alive()
