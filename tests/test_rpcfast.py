"""winipc.rpc's C call path (rpc/_fast.py, winipc._native._rpcfast) across real processes.

Plain calls (scalar arguments and result, no out-of-band buffer, no MAC) on a local ring run
in C on both sides; everything else the C path hands back to Python. These tests check that
the C path is really taken, that it gives what the Python path gives, and that what it hands
back (faults, results that do not fit, timeouts, a dead server, a closed binding) ends as
the Python path ends it. tests/test_rpcfast_wire.py holds its bytes to the Python path's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from rpc_ifaces import Plain
from test_rpc import Server
from winipc import errors as W
from winipc import rpc
from winipc._core import namespace
from winipc.rpc import _fast

_NOT_BUILT = pytest.mark.skipif(_fast.native is None, reason="the C call path is not built here")

VALUES = [
    (True, 0, 0.0, "", b"", None),
    (False, 127, -0.5, "a" * 31, b"x" * 255, None),
    (True, 128, 1e300, "é" * 40, b"y" * 256, None),
    (False, -33, float("inf"), "日本" * 200, b"z" * 65535, None),
    (True, 2 ** 64 - 1, -1.25, "s" * 70000, b"\0" * 65536, None),  # 64 KiB: out of band, the Python path
    (False, -2 ** 63, 3.5, "\U0001f600", b"w" * 70000, None),
]


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server("ncalrpc:[fast]", "ncacn_ip_tcp:127.0.0.1[0]", "--anonymous")
    yield s
    s.stop()


def _expected(b: bool, i: int, f: float, s: str, data: bytes, n: None) -> str:
    return repr((type(b).__name__, b, type(i).__name__, i, type(f).__name__, f, s, len(data), data[:4], n))


@_NOT_BUILT
def test_plain_calls_run_in_c_on_both_sides(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        p = b.client(Plain)
        assert type(type(p).__dict__["caller"]) is _fast.native.FastMethod
        assert type(type(p).__dict__["mix"]) is _fast.native.FastMethod
        assert p.caller() == "run_request"  # the first call of a method: Python runs it and teaches the C loop
        assert [p.caller() for _ in range(3)] == ["run"] * 3  # then the C loop calls the method
        assert type(p).__dict__["caller"].slow(p) == "run"  # the Python client path, to the C server loop
        for v in VALUES:
            assert p.mix(*v) == _expected(*v)
        assert p.echo_float(2.5) == 2.5
        assert p.echo_float(7) == 7.0  # an int where a float is declared: converted by the Python path
        for n in (1, 2, 3):
            p.count(n)  # [oneway] in C: nothing comes back
        assert p.counted() == 6
        assert b.client(Plain, timeout=5.0).caller() == "run"  # a proxy with a timeout


def test_the_python_path_gives_the_same(server: Server) -> None:
    tcp = next(x for x in server.bindings if x.startswith("ncacn_ip_tcp"))
    with rpc.bind(tcp) as b:  # no ring on TCP: the Python path on both sides
        p = b.client(Plain)
        assert [p.caller() for _ in range(2)] == ["run_request"] * 2
        for v in VALUES:
            assert p.mix(*v) == _expected(*v)


@_NOT_BUILT
def test_what_the_c_path_hands_back_ends_as_in_python(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        p = b.client(Plain)
        for _ in range(2):  # the first call teaches the C loop; the second runs there
            with pytest.raises(W.BadStubData, match="result"):
                p.wrong()  # a str for an int: reply() makes the FAULT
            with pytest.raises(W.BadStubData, match="result"):
                p.big()  # 2**64: past msgpack's integers
        with pytest.raises(W.BadStubData, match="parameter 'i'"):
            p.mix(True, 2 ** 64, 0.0, "", b"", None)  # refused before sending
        with pytest.raises(W.BadStubData, match="parameter 'i'"):
            p.mix(True, -2 ** 63 - 1, 0.0, "", b"", None)
        with pytest.raises(W.BadStubData, match="parameter 'b'"):
            p.mix(1, 1, 0.0, "", b"", None)  # type: ignore[arg-type]
        with pytest.raises(W.BadStubData, match="parameter 's'"):
            p.mix(True, 1, 0.0, "\udc80", b"", None)  # a lone surrogate is not UTF-8
        with pytest.raises(W.BadStubData):
            p.mix(True, 1, 0.0, "")  # type: ignore[call-arg]
        assert p.mix(True, 1, 0.0, "", data=b"kw", n=None) == _expected(True, 1, 0.0, "", b"kw", None)
        with pytest.raises(W.CallTimeout):
            b.client(Plain, timeout=0.2).sleep(5.0)  # the ring's timeout, then the call is cancelled
        p.caller()  # the timed-out connection was dropped: a new one, whose loop learns again
        assert p.caller() == "run"  # the server and the binding go on


@_NOT_BUILT
def test_a_server_that_dies_mid_call_fails_the_call(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        p = b.client(Plain)
        assert p.caller() == "run_request"
        with pytest.raises(W.CallFailed):
            p.die()
        assert len(b._conns) == 0  # the broken connection was not pooled
    server.proc.wait(10)
    namespace.clean()  # the dead server's pipe objects (what `winipc clean` reclaims)


class _Interrupt(BaseException):
    pass


@_NOT_BUILT
def test_an_interrupt_during_a_call_is_raised_and_drops_the_connection(server: Server) -> None:
    """KeyboardInterrupt and the like leave the C path at once, as they leave the Python path."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupt()

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with rpc.bind(server.binding) as b:
            p = b.client(Plain)
            p.caller()
            assert p.caller() == "run"
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t0 = time.monotonic()
            with pytest.raises(_Interrupt):
                p.sleep(3.0)
            assert time.monotonic() - t0 < 2.5  # raised while waiting, not after the answer
            assert len(b._conns) == 0  # its answer may still come: the connection is closed, not pooled
            p.caller()
            assert p.caller() == "run"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@_NOT_BUILT
def test_closing_the_binding_during_a_call(server: Server) -> None:
    before = _open_fds()
    b = rpc.bind(server.binding)
    b.connect(1)
    conn = b._conns.take()  # the one connection, to see it closed at the end
    assert conn is not None and b._conns.put(conn)
    p = b.client(Plain)
    p.caller()
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(p.sleep(0.5)))
    t.start()
    time.sleep(0.2)
    b.close()  # the call in flight keeps its connection until it ends, then closes it
    t.join(10)
    assert got == ["done"]
    assert len(b._conns) == 0
    assert conn.ch.conn._closed  # closed when the call gave it back, not left to the garbage collector
    with pytest.raises(W.InvalidHandle):
        p.caller()
    assert _open_fds() == before


@_NOT_BUILT
def test_without_the_extension_on_either_side(server: Server) -> None:
    env = dict(os.environ, WINIPC_NO_NATIVE="1")  # no ring either: the pipe's socket carries the frames
    plain_server = Server("ncalrpc:[fastoff]", env=env)
    try:
        with rpc.bind(plain_server.binding) as b:
            p = b.client(Plain)
            assert [p.caller() for _ in range(2)] == ["run_request"] * 2
            for v in VALUES:
                assert p.mix(*v) == _expected(*v)
    finally:
        plain_server.stop()
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from rpc_ifaces import Plain\n"
        "from winipc import rpc\n"
        "from winipc.rpc import _fast\n"
        "assert _fast.native is None\n"
        f"p = rpc.bind({server.binding!r}).client(Plain)\n"
        "p.caller()\n"
        "print(p.caller(), p.mix(True, -5, 1.5, 'é', b'ab', None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1) == ["run_request", _expected(True, -5, 1.5, "é", b"ab", None) + "\n"]


def test_c_source_compiles_without_warnings() -> None:
    import shutil
    import sysconfig
    from pathlib import Path

    cc = shutil.which("gcc") or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if cc is None or not Path(include, "Python.h").exists():
        pytest.skip("no C compiler or Python headers here")
    source = Path(__file__).resolve().parents[1] / "src" / "winipc" / "_native" / "_rpcfast.c"
    proc = subprocess.run(
        [cc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", f"-I{include}", str(source)],
        capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
