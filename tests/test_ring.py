"""The shared-memory ring (winipc._native._ring) between real processes.

Every test connects this process to a child by a socketpair and one region (a sealed memfd),
both passed with ``pass_fds``. The child is a small agent: it maps the region as the other
side and runs the code lines this process sends it, answering with the result or the
exception, so one test can drive both ends step by step. The agent loads the extension by
path (not through ``import winipc``) to start fast. Hostile peers are this process writing
the mapped region directly; their victims run in a child, so a crash fails the test instead
of killing pytest. No test asserts a speed: time appears only as generous liveness bounds.
"""

from __future__ import annotations

import ast
import fcntl
import mmap
import os
import queue
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winipc._native import AVAILABLE, ring

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="the ring extension is not built here")

CAP = 64 * 1024  # the smallest ring: wraps and fills quickly
MAX_RECORD = CAP // 4
R: Any = ring  # the module (typed loosely: tests poke at it with wrong types on purpose)
SOURCE = Path(__file__).resolve().parents[1] / "src" / "winipc" / "_native" / "_ring.c"
LIVENESS = 15.0  # seconds: a generous bound for "it happens", never a speed


def rec(n: int) -> int:
    """Ring bytes of a one-record message of n payload bytes."""
    return 16 + (n + 15) // 16 * 16


# ------------------------------------------------------------------ the child agent
AGENT = r"""
import ast, importlib.machinery, importlib.util, os, socket, sys, threading, time
path = sys.argv[1]
loader = importlib.machinery.ExtensionFileLoader("winipc._native._ring", path)
spec = importlib.util.spec_from_file_location("winipc._native._ring", path, loader=loader)
R = importlib.util.module_from_spec(spec)
spec.loader.exec_module(R)
fd, sockfd, side = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kw = ast.literal_eval(sys.argv[5])
ns = {"R": R, "os": os, "time": time, "threading": threading, "socket": socket}
if fd >= 0:
    ns["ep"] = R.Endpoint(fd, side, sockfd, **kw)
    os.close(fd)
ns["sock"] = socket.socket(fileno=sockfd) if sockfd >= 0 else None
for line in sys.stdin:
    code = ast.literal_eval(line)
    try:
        # compiled first: eval() of a string that raises KeyboardInterrupt would make
        # this interpreter exit by SIGINT at the end (CPython's run_eval_code_obj)
        try:
            compiled = compile(code, "<agent>", "eval")
        except SyntaxError:
            ns.pop("result", None)
            exec(compile(code, "<agent>", "exec"), ns)
            value = ns.get("result")
        else:
            value = eval(compiled, ns)
        reply = ("ok", value)
    except BaseException as exc:
        reply = ("err", type(exc).__name__, str(exc))
    sys.stdout.write(repr(reply) + "\n")
    sys.stdout.flush()
"""


class Peer:
    """The other end, in a child process, running the code lines it is sent."""

    def __init__(self, fd: int, sock: socket.socket, side: int = 1, **kw: Any) -> None:
        fds = [sock.fileno()] + ([fd] if fd >= 0 else [])
        args = [sys.executable, "-c", AGENT, R.__file__, str(fd), str(sock.fileno()), str(side), repr(kw)]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=fds, text=True
        )
        self.killed = False
        self._replies: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put("")

    def start(self, code: str) -> None:
        """Send one code line (an expression, or statements that may set ``result``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(repr(textwrap.dedent(code)) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = LIVENESS) -> tuple[Any, ...]:
        line = self._replies.get(timeout=timeout)
        assert line, f"the agent died (exit status {self.proc.wait(LIVENESS)})"
        return tuple(ast.literal_eval(line))

    def __call__(self, code: str, timeout: float = LIVENESS) -> Any:
        """Run code and return its value; an exception in the child fails here."""
        self.start(code)
        r = self.reply(timeout)
        assert r[0] == "ok", f"{code!r} raised {r[1]}: {r[2]}"
        return r[1]

    def fails(self, code: str, timeout: float = LIVENESS) -> tuple[str, str]:
        """Run code that must raise; return (exception name, message)."""
        self.start(code)
        r = self.reply(timeout)
        assert r[0] == "err", f"{code!r} returned {r[1]!r}"
        return r[1], r[2]

    def stop(self) -> int:
        """End the agent (closing its stdin) and return its exit status."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(LIVENESS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.proc.stdin:
            self.proc.stdin.close()
        self._reader.join(LIVENESS)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(LIVENESS)


class Pair:
    """This process as side 0 (the server), a child as side 1, one region between them."""

    def __init__(self, capacity: int = CAP, *, mine: dict[str, Any] | None = None, **theirs: Any) -> None:
        self.fd = R.create(capacity)
        self.sock, child = socket.socketpair()
        try:
            self.ep = R.Endpoint(self.fd, 0, self.sock.fileno(), **(mine or {}))
            self.peer = Peer(self.fd, child, 1, **theirs)
        except BaseException:
            self.sock.close()
            os.close(self.fd)
            raise
        finally:
            child.close()  # only the child holds that end: its death hangs the socket up

    def close(self) -> int:
        self.ep.close()
        status = self.peer.stop()
        self.sock.close()
        os.close(self.fd)
        return status


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    status = p.close()
    assert status == 0 or (p.peer.killed and status == -signal.SIGKILL), f"the child ended with {status}"


def fill(ep: Any) -> None:
    """Make the ring completely full: one record of exactly the capacity."""
    saved, ep.max_record = ep.max_record, CAP - 16
    try:
        ep.send(b"x" * (CAP - 16), timeout=0)
    finally:
        ep.max_record = saved


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(n * 7919 + seed).randbytes(n)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), R.__file__],
        capture_output=True,
        text=True,
        timeout=100,
    )


# ------------------------------------------------------------------ the module and the region
def test_module_surface() -> None:
    assert R.DOORBELL == b"\x01\x00\x00\x80\x03"
    assert (R.MIN_CAPACITY, R.MAX_CAPACITY) == (64 * 1024, 1024**3)
    assert R.DEFAULT_MAX_MESSAGE == 256 * 1024 * 1024
    assert (R.KIND_DATA, R.KIND_CONTROL, R.FLAG_FIRST, R.FLAG_LAST) == (1, 2, 1, 2)
    assert issubclass(R.SocketEvent, Exception) and issubclass(R.ControlPending, Exception)
    for name in ("send", "send_many", "reserve", "send_control", "close", "recv", "read", "recv_into",
                 "recv_view", "recv_many", "peek", "readable", "arm_doorbell", "cancel"):
        assert callable(getattr(R.Endpoint, name)), name


@pytest.mark.parametrize("capacity", [0, 1000, 32 * 1024, 3 * 64 * 1024, 2 * 1024**3, -65536, 2**70])
def test_create_rejects_bad_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match=r"capacity.*65536.*1073741824"):
        R.create(capacity)


def test_create_makes_a_sealed_memfd() -> None:
    fd = R.create(CAP)
    try:
        assert os.fstat(fd).st_size == R.region_size(CAP) >= 2 * CAP + 8192
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        need = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        assert seals & need == need and not seals & fcntl.F_SEAL_WRITE
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        assert not os.get_inheritable(fd)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 4096)
    finally:
        os.close(fd)


def _copy_of(fd: int, *, size_delta: int = 0, seal: bool = True, sealing: bool = True,
             patch: tuple[int, bytes] | None = None) -> int:
    """A memfd with a copy of the region ``fd``'s header, possibly altered."""
    size = os.fstat(fd).st_size + size_delta
    header = bytearray(os.pread(fd, 64, 0))
    if patch:
        header[patch[0]: patch[0] + len(patch[1])] = patch[1]
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealing else 0)
    new = os.memfd_create("not-a-ring", flags)
    os.ftruncate(new, size)
    os.pwrite(new, bytes(header), 0)
    if seal and sealing:
        fcntl.fcntl(new, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return new


BAD_REGIONS = {
    "exact copy (control: valid)": {},
    "not sealed": {"seal": False},
    "no sealing at all": {"sealing": False},
    "one page too big": {"size_delta": 4096},
    "one page too small": {"size_delta": -4096},
    "bad magic": {"patch": (0, b"XXXXXXXX")},
    "version 2": {"patch": (8, struct.pack("=I", 2))},
    "capacity not a power of two": {"patch": (16, struct.pack("=Q", CAP + 4096))},
    "capacity too small": {"patch": (16, struct.pack("=Q", 4096))},
    "header size odd": {"patch": (12, struct.pack("=I", 8192 + 100))},
    "control offset moved": {"patch": (24, struct.pack("=Q", 0))},
    "data offset moved": {"patch": (48, struct.pack("=Q", 4096))},
}


@pytest.mark.parametrize("case", sorted(BAD_REGIONS))
def test_endpoint_validates_the_region(case: str) -> None:
    fd = R.create(CAP)
    try:
        other = _copy_of(fd, **BAD_REGIONS[case])
        try:
            if case.startswith("exact copy"):
                R.Endpoint(other, 0).close()
            else:
                with pytest.raises(ValueError):
                    R.Endpoint(other, 0)
        finally:
            os.close(other)
    finally:
        os.close(fd)


def test_endpoint_rejects_other_descriptors(tmp_path: Path) -> None:
    fd = R.create(CAP)
    plain = tmp_path / "plain"
    plain.write_bytes(os.pread(fd, 64, 0) + bytes(R.region_size(CAP) - 64))
    r, w = os.pipe()
    a, b = socket.socketpair()
    readonly = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    write_sealed = _copy_of(fd, seal=False)
    fcntl.fcntl(write_sealed, fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    try:
        pfd = os.open(plain, os.O_RDWR)
        try:
            for bad in (pfd, r, a.fileno(), readonly, write_sealed, 9999, -1):
                with pytest.raises(ValueError):
                    R.Endpoint(bad, 0)
        finally:
            os.close(pfd)
        with pytest.raises(ValueError, match="side"):
            R.Endpoint(fd, 2)
        with pytest.raises(ValueError, match="sockfd"):
            R.Endpoint(fd, 0, r)
        with pytest.raises(ValueError, match="max_message"):
            R.Endpoint(fd, 0, max_message=-1)
        with pytest.raises(TypeError):
            R.Endpoint(fd, 0, -1, 100)  # max_message is keyword-only
    finally:
        for x in (fd, r, w, readonly, write_sealed):
            os.close(x)
        a.close()
        b.close()


def test_attributes_and_limits(pair: Pair) -> None:
    ep = pair.ep
    assert (ep.capacity, ep.side, ep.max_record, ep.spin_ns) == (CAP, 0, CAP // 4, 0)
    assert ep.max_message == 256 * 1024 * 1024 and not ep.closed and not ep.broken
    ep.max_record = 4096
    assert ep.max_record == 4096
    ep.max_record = CAP - 16
    for bad in (4095, CAP - 15, -1):
        with pytest.raises(ValueError, match="max_record"):
            ep.max_record = bad
    ep.spin_ns = 50_000
    with pytest.raises(ValueError, match="spin_ns"):
        ep.spin_ns = -1
    with pytest.raises(ValueError, match="timeout"):
        ep.recv(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        ep.send(b"x", timeout=float("nan"))
    with pytest.raises(ValueError, match="max_count"):
        ep.recv_many(0)
    with pytest.raises(TypeError):
        ep.send("text")
    with pytest.raises(TypeError):
        ep.recv(bogus=1)


# ------------------------------------------------------------------ messages
SPECIAL = [0, 1, 15, 16, 17, MAX_RECORD - 1, MAX_RECORD, MAX_RECORD + 1, 2 * MAX_RECORD + 5,
           CAP - 16, CAP - 15, CAP + 1, 3 * CAP + 7]
sizes = st.lists(st.one_of(st.sampled_from(SPECIAL), st.integers(0, 3 * CAP)), min_size=1, max_size=25)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=sizes, reader=st.sampled_from(["recv", "recv_into", "read", "recv_view", "recv_many"]))
def test_messages_arrive_whole_and_in_order(sizes: list[int], reader: str) -> None:
    """The child echoes every message; a thread here sends while the main thread reads."""
    p = Pair()
    try:
        p.peer.start("""
            def echo():
                while True:
                    try:
                        ep.send(ep.recv())
                    except BrokenPipeError:
                        return
            t = threading.Thread(target=echo); t.start()
        """)
        assert p.peer.reply()[0] == "ok"
        sent = [payload(n, i) for i, n in enumerate(sizes)]
        errors: list[BaseException] = []

        def send_all() -> None:
            try:
                for m in sent:
                    p.ep.send(m, timeout=LIVENESS)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=send_all)
        sender.start()
        got: list[bytes] = []
        buf = bytearray(3 * CAP + 64)
        while len(got) < len(sent):
            if reader == "recv":
                got.append(p.ep.recv(timeout=LIVENESS))
            elif reader == "recv_into":
                n = p.ep.recv_into(buf, timeout=LIVENESS)
                got.append(bytes(buf[:n]))
            elif reader == "read":  # in pieces of 1000 bytes
                part = [p.ep.read(1000, timeout=LIVENESS)]
                while p.ep.message_left:
                    part.append(p.ep.read(1000, timeout=LIVENESS))
                got.append(b"".join(part))
            elif reader == "recv_view":
                with p.ep.recv_view(timeout=LIVENESS) as v:
                    got.append(bytes(v))
            else:
                got += p.ep.recv_many(7, timeout=LIVENESS)
        sender.join(LIVENESS)
        assert not errors, errors
        assert [len(m) for m in got] == sizes
        assert got == sent
        with pytest.raises(TimeoutError):
            p.ep.recv(timeout=0)
    finally:
        assert p.close() == 0


def test_many_messages_wrap_the_ring_many_times(pair: Pair) -> None:
    rng = random.Random(5)
    sizes = [rng.choice([0, 1, 17, 100, 1000, 5000, MAX_RECORD, MAX_RECORD + 3]) for _ in range(3000)]
    pair.peer(f"""
        def produce():
            import random
            for i, n in enumerate({sizes!r}):
                ep.send(random.Random(i).randbytes(n))
        threading.Thread(target=produce).start()
    """)
    for i, n in enumerate(sizes):
        assert pair.ep.recv(timeout=LIVENESS) == random.Random(i).randbytes(n)
    assert sum(rec(n) for n in sizes) > 20 * CAP  # it did wrap, many times


def test_send_many_and_recv_many(pair: Pair) -> None:
    msgs = [b"m%04d" % i for i in range(500)]
    pair.peer("""
        msgs = [b"m%04d" % i for i in range(500)]
        def produce():
            i = 0
            while i < len(msgs):
                i += ep.send_many(msgs[i:i + 64])
        threading.Thread(target=produce).start()
    """)
    got: list[bytes] = []
    while len(got) < len(msgs):
        batch = pair.ep.recv_many(50, timeout=LIVENESS)
        assert 1 <= len(batch) <= 50
        got += batch
    assert got == msgs


def test_send_many_writes_what_fits_and_recv_many_takes_all(pair: Pair) -> None:
    item = b"x" * 1000  # 1024 ring bytes each: exactly 64 fit in 64 KiB
    assert pair.ep.send_many([item] * 100, timeout=0) == CAP // rec(1000)
    with pytest.raises(TimeoutError):
        pair.ep.send_many([item], timeout=0.05)
    assert pair.peer("len(ep.recv_many(1000, timeout=5))") == CAP // rec(1000)
    assert pair.ep.send_many([]) == 0
    with pytest.raises(TypeError):
        pair.ep.send_many([b"a", 5])
    assert pair.peer.fails("ep.recv(timeout=0)")[0] == "TimeoutError"  # nothing half-written
    # a message larger than the ring streams on its own
    big = payload(3 * CAP)
    pair.peer.start("ep.recv(timeout=10)")
    assert pair.ep.send_many([big, b"after"], timeout=LIVENESS) == 1
    assert pair.peer.reply()[1] == big


def test_recv_many_leaves_an_incomplete_message_for_the_next_call(pair: Pair) -> None:
    big = payload(3 * CAP)  # larger than the ring: never complete in it
    pair.ep.send_many([b"a", b"b"])
    sender = threading.Thread(target=pair.ep.send, args=(big,), kwargs={"timeout": LIVENESS})
    sender.start()
    assert pair.peer("ep.recv_many(10, timeout=5)") == [b"a", b"b"]
    assert pair.peer("ep.recv(timeout=5)") == big  # it continues from what it took
    sender.join(LIVENESS)


# ------------------------------------------------------------------ reserve / commit
def test_reserve_commit_and_abort(pair: Pair) -> None:
    ep = pair.ep
    w = ep.reserve(100)
    assert len(w) == 100 and not w.done
    memoryview(w)[:40] = b"k" * 40
    w.commit(40)
    assert w.done
    assert pair.peer("ep.recv(timeout=5)") == b"k" * 40
    with pytest.raises(ValueError):
        memoryview(w)
    with pytest.raises(ValueError, match="already"):
        w.commit()

    ep.reserve(10).abort()
    assert pair.peer.fails("ep.recv(timeout=0)")[0] == "TimeoutError"

    with ep.reserve(10) as w2:
        memoryview(w2)[:] = b"0123456789"
    assert pair.peer("ep.recv(timeout=5)") == b"0123456789"

    with pytest.raises(KeyError), ep.reserve(10) as w3:
        memoryview(w3)[:] = b"abcdefghij"
        raise KeyError
    assert w3.done
    assert pair.peer.fails("ep.recv(timeout=0)")[0] == "TimeoutError"

    w4 = ep.reserve(5)
    with pytest.raises(RuntimeError, match="reservation"):
        ep.reserve(5)
    with pytest.raises(RuntimeError, match="reservation"):
        ep.send(b"x")
    with pytest.raises(ValueError, match="length"):
        w4.commit(6)
    m = memoryview(w4)
    with pytest.raises(BufferError):
        w4.commit()
    m[:] = b"hello"
    m.release()
    w4.commit()
    assert pair.peer("ep.recv(timeout=5)") == b"hello"
    with pytest.raises(ValueError, match="max_record"):
        ep.reserve(ep.max_record + 1)
    ep.reserve(0).commit()
    assert pair.peer("ep.recv(timeout=5)") == b""
    w5 = ep.reserve(8)
    del w5  # dropped without commit: aborted
    ep.send(b"next")
    assert pair.peer("ep.recv(timeout=5)") == b"next"


# ------------------------------------------------------------------ views
def _address(view: Any) -> int:
    import numpy as np

    return int(np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0])


def test_recv_view_is_zero_copy_and_read_only(pair: Pair) -> None:
    pair.peer("[ep.send(bytes([i]) * 1000) for i in range(3)]")
    views = [pair.ep.recv_view(timeout=5) for _ in range(3)]
    for i, v in enumerate(views):
        assert v.zero_copy and len(v) == 1000 and bytes(v) == bytes([i]) * 1000
        mv = memoryview(v)
        assert mv.readonly
        with pytest.raises(TypeError):
            mv[0] = 1
        mv.release()
    # consecutive records sit back to back in the ring: nothing was copied
    assert _address(views[1]) - _address(views[0]) == rec(1000)
    assert _address(views[2]) - _address(views[1]) == rec(1000)
    for v in views:
        v.release()


def test_views_hold_their_bytes_until_released_in_ring_order(pair: Pair) -> None:
    n = 16000  # four records fill the 64 KiB ring
    pair.peer(f"[ep.send(bytes([i]) * {n}) for i in range(4)]")
    views = [pair.ep.recv_view(timeout=5) for _ in range(4)]
    assert pair.peer.fails(f"ep.send(b'z' * {n}, timeout=0.2)")[0] == "TimeoutError"
    for v in views[1:]:  # out of order: the oldest still pins the tail
        v.release()
    assert pair.peer.fails(f"ep.send(b'z' * {n}, timeout=0.2)")[0] == "TimeoutError"
    assert bytes(views[0]) == bytes([0]) * n  # untouched while held
    views[0].release()
    pair.peer(f"ep.send(b'z' * {n}, timeout=5)")
    assert pair.ep.recv(timeout=5) == b"z" * n


def test_view_release_rules(pair: Pair) -> None:
    pair.peer("ep.send(b'abc'); ep.send(b'def')")
    v = pair.ep.recv_view(timeout=5)
    m = memoryview(v)
    with pytest.raises(BufferError):
        v.release()
    m.release()
    v.release()
    v.release()  # twice is fine
    assert v.released
    with pytest.raises(ValueError):
        memoryview(v)
    with pytest.raises(ValueError):
        len(v)
    with pair.ep.recv_view(timeout=5) as v2:
        held = v2
        pair.ep.close()  # the mapping outlives the endpoint while a view holds it
        assert bytes(v2) == b"def"
    assert held.released


def test_recv_view_of_a_fragmented_or_partly_read_message_is_a_copy(pair: Pair) -> None:
    big = payload(3 * MAX_RECORD + 5)
    pair.peer.start(f"ep.send({big!r}, timeout=10)")
    v = pair.ep.recv_view(timeout=5)
    assert not v.zero_copy and bytes(v) == big
    v.release()
    assert pair.peer.reply()[0] == "ok"
    pair.peer("ep.send(b'0123456789')")
    assert pair.ep.read(3, timeout=5) == b"012"
    with pair.ep.recv_view(timeout=5) as rest:
        assert not rest.zero_copy and bytes(rest) == b"3456789"


# ------------------------------------------------------------------ partial reads, peek
def test_partial_reads_never_cross_a_message(pair: Pair) -> None:
    data = payload(100)
    pair.peer(f"ep.send({data!r}); ep.send(b'next')")
    ep = pair.ep
    assert ep.message_left == 0
    assert ep.read(10, timeout=5) == data[:10]
    assert ep.message_left == 90
    buf = bytearray(50)
    assert ep.recv_into(buf, timeout=5) == 50 and buf == data[10:60]
    assert ep.message_left == 40
    assert ep.read(1000, timeout=5) == data[60:]
    assert ep.message_left == 0
    assert ep.read(1000, timeout=5) == b"next"


def test_partial_reads_of_a_fragmented_message(pair: Pair) -> None:
    data = payload(3 * MAX_RECORD + 5)
    pair.peer.start(f"ep.send({data!r}, timeout=10)")
    ep = pair.ep
    assert ep.read(5, timeout=5) == data[:5]
    assert ep.message_left == len(data) - 5  # told by the FIRST fragment's total
    parts = [data[:5]]
    while ep.message_left:
        parts.append(ep.read(7777, timeout=5))
    assert b"".join(parts) == data
    assert pair.peer.reply()[0] == "ok"


def test_zero_length_messages_and_zero_size_reads(pair: Pair) -> None:
    pair.peer("ep.send(b''); ep.send(b''); ep.send(b'abc')")
    ep = pair.ep
    assert ep.recv(timeout=5) == b""
    assert ep.read(0, timeout=5) == b"" and ep.message_left == 0  # consumed the second
    assert ep.read(0, timeout=5) == b"" and ep.message_left == 3  # started the third
    assert ep.recv(timeout=5) == b"abc"
    with pytest.raises(TimeoutError):
        ep.read(0, timeout=0)


def test_peek_never_consumes(pair: Pair) -> None:
    ep = pair.ep
    assert ep.peek(10) == (b"", 0, 0)
    pair.peer("ep.send(b'hello'); ep.send(b'world!')")
    assert ep.peek(3) == (b"hel", 11, 2)
    assert ep.peek(100) == (b"hello", 11, 0)
    assert ep.read(2, timeout=5) == b"he"
    assert ep.peek(10) == (b"llo", 9, 0)
    assert ep.recv(timeout=5) == b"llo"
    assert ep.peek(0) == (b"", 6, 6)
    assert ep.recv(timeout=5) == b"world!"
    assert ep.peek(10) == (b"", 0, 0)
    big = payload(2 * MAX_RECORD + 1)
    pair.peer(f"ep.send({big!r}, timeout=5)")
    assert ep.peek(4) == (big[:4], len(big), len(big) - 4)
    assert ep.recv(timeout=5) == big


# ------------------------------------------------------------------ control records
def test_control_records_raise_control_pending_in_place(pair: Pair) -> None:
    ep = pair.ep
    pair.peer("ep.send(b'a'); ep.send_control(); ep.send(b'b')")
    assert ep.recv(timeout=5) == b"a"
    with pytest.raises(R.ControlPending):
        ep.recv(timeout=5)
    assert ep.recv(timeout=5) == b"b"
    pair.peer("ep.send_many([b'a', b'b']); ep.send_control(); ep.send(b'c')")
    assert ep.recv_many(10, timeout=5) == [b"a", b"b"]
    assert ep.readable()
    with pytest.raises(R.ControlPending):
        ep.recv_many(10, timeout=5)
    assert ep.recv_many(10, timeout=5) == [b"c"]
    for call in ("read(5, timeout=5)", "recv_into(bytearray(5), timeout=5)", "recv_view(timeout=5)"):
        pair.peer("ep.send_control()")
        assert ep.peek(1) == (b"", 0, 0)  # peek looks past it and never consumes
        with pytest.raises(R.ControlPending):
            eval("ep." + call, {"ep": ep})
    assert not ep.readable()


# ------------------------------------------------------------------ time-outs, cancel, threads
def test_timeouts(pair: Pair) -> None:
    ep = pair.ep
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ep.recv(timeout=0)
    with pytest.raises(TimeoutError):
        ep.recv(timeout=0.05)
    with pytest.raises(TimeoutError):
        ep.recv_view(timeout=0.05)
    with pytest.raises(TimeoutError):
        ep.recv_many(5, timeout=0.05)
    assert time.monotonic() - t0 >= 0.1  # it did wait (an outcome, not a speed)
    fill(ep)
    for call in (lambda: ep.send(b"y", timeout=0), lambda: ep.send_control(timeout=0),
                 lambda: ep.reserve(10, timeout=0.05), lambda: ep.send(b"y", timeout=0.05)):
        with pytest.raises(TimeoutError):
            call()
    # a message that fits the ring is never half-written by a time-out
    assert pair.peer("len(ep.recv(timeout=5))") == CAP - 16
    ep.send(b"a" * 30000)
    with pytest.raises(TimeoutError):
        ep.send(b"b" * 40000, timeout=0.05)
    assert pair.peer("len(ep.recv(timeout=5))") == 30000
    assert pair.peer.fails("ep.recv(timeout=0.05)")[0] == "TimeoutError"


def test_timeout_inside_a_message_larger_than_the_ring_stops_the_writer(pair: Pair) -> None:
    ep = pair.ep
    with pytest.raises(TimeoutError, match="cut short"):
        ep.send(b"q" * (3 * CAP), timeout=0.2)
    with pytest.raises(BrokenPipeError):
        ep.send(b"more")
    name, _ = pair.peer.fails("ep.recv(timeout=5)")
    assert name == "BrokenPipeError"  # the partial message is never delivered as whole


def _blocked(call: Any) -> tuple[threading.Thread, list[BaseException]]:
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, caught


def _wait_busy(ep: Any) -> None:
    """Until another thread is inside a reader call (a second one would be refused)."""
    deadline = time.monotonic() + LIVENESS
    while time.monotonic() < deadline:
        try:
            ep.recv_into(bytearray(0), timeout=0)
        except RuntimeError:
            return
        except TimeoutError:
            pass
        time.sleep(0.01)
    raise AssertionError("the other thread never blocked")


def test_cancel_interrupts_a_blocked_reader_once(pair: Pair) -> None:
    ep = pair.ep
    t, caught = _blocked(lambda: ep.recv())
    _wait_busy(ep)
    with pytest.raises(RuntimeError, match="another thread"):
        ep.recv(timeout=0)
    assert ep.cancel()
    t.join(LIVENESS)
    assert not t.is_alive() and isinstance(caught[0], InterruptedError)
    assert not ep.cancel()  # nothing waits: nothing is left behind for a later call
    with pytest.raises(TimeoutError):
        ep.recv(timeout=0.05)
    pair.peer("ep.send(b'still fine')")
    assert ep.recv(timeout=5) == b"still fine"


def test_cancel_interrupts_a_blocked_writer(pair: Pair) -> None:
    ep = pair.ep
    fill(ep)
    t, caught = _blocked(lambda: ep.send(b"y" * 1000))
    deadline = time.monotonic() + LIVENESS
    while not ep.cancel():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t.join(LIVENESS)
    assert isinstance(caught[0], InterruptedError)
    assert pair.peer("len(ep.recv(timeout=5))") == CAP - 16
    ep.send(b"y" * 1000, timeout=5)
    assert pair.peer("ep.recv(timeout=5)") == b"y" * 1000


def test_close_in_another_thread_ends_a_blocked_call(pair: Pair) -> None:
    t, caught = _blocked(lambda: pair.ep.recv())
    _wait_busy(pair.ep)
    pair.ep.close()
    t.join(LIVENESS)
    assert isinstance(caught[0], ValueError) and "closed" in str(caught[0])


def test_a_signal_interrupts_a_wait(pair: Pair) -> None:
    pair.peer.start("ep.recv()")
    time.sleep(0.3)
    pair.peer.proc.send_signal(signal.SIGINT)
    assert pair.peer.reply()[1] == "KeyboardInterrupt"


# ------------------------------------------------------------------ the end of the peer
def test_peer_close_delivers_everything_then_broken_pipe(pair: Pair) -> None:
    pair.peer("ep.send(b'1'); ep.send(b'2'); ep.send(b'3'); ep.close()")
    ep = pair.ep
    assert ep.peer_closed
    assert [ep.recv(timeout=5) for _ in range(3)] == [b"1", b"2", b"3"]
    with pytest.raises(BrokenPipeError):
        ep.recv(timeout=5)
    assert ep.peek(1) == (b"", 0, 0)  # peek only observes; peer_closed tells the rest
    with pytest.raises(BrokenPipeError):
        ep.send(b"x")


def test_close_wakes_the_peer(pair: Pair) -> None:
    pair.peer.start("ep.recv()")
    time.sleep(0.2)
    pair.ep.close()
    assert pair.peer.reply()[1] == "BrokenPipeError"
    with pytest.raises(ValueError, match="closed"):
        pair.ep.recv(timeout=0)
    with pytest.raises(ValueError, match="closed"):
        pair.ep.send(b"x")
    assert pair.ep.closed and not pair.ep.cancel()
    pair.ep.close()


def test_peer_killed_after_sending_delivers_then_broken_pipe(pair: Pair) -> None:
    pair.peer("ep.send(b'before'); ep.send(b'death')")
    pair.peer.kill()
    assert pair.ep.recv(timeout=5) == b"before"
    assert pair.ep.recv(timeout=5) == b"death"
    with pytest.raises(BrokenPipeError):
        pair.ep.recv(timeout=LIVENESS)


def test_peer_killed_while_the_reader_sleeps(pair: Pair) -> None:
    threading.Timer(0.3, pair.peer.kill).start()
    t0 = time.monotonic()
    with pytest.raises(BrokenPipeError):
        pair.ep.recv(timeout=60)
    assert time.monotonic() - t0 < LIVENESS


def test_peer_killed_while_the_writer_waits_for_room(pair: Pair) -> None:
    fill(pair.ep)
    threading.Timer(0.3, pair.peer.kill).start()
    t0 = time.monotonic()
    with pytest.raises(BrokenPipeError):
        pair.ep.send(b"y" * 1000, timeout=60)
    assert time.monotonic() - t0 < LIVENESS


def test_a_forked_child_exiting_does_not_close_the_connection(pair: Pair) -> None:
    # the fork happens in the agent: it has no threads (pytest here has)
    pair.peer("""
        pid = os.fork()
        if pid == 0:  # the child drops its inherited endpoint, as an exiting process does
            try:
                ep.close()
            finally:
                os._exit(0)
        result = os.waitpid(pid, 0)[1]
    """)
    assert not pair.ep.peer_closed
    pair.peer("ep.send(b'still connected')")
    assert pair.ep.recv(timeout=5) == b"still connected"


def test_a_second_endpoint_of_a_side_takes_over_where_the_first_stopped(pair: Pair) -> None:
    """A handle handed over (DuplicateHandle): one user at a time, the last close counts."""
    pair.peer("ep.send(b'before')")
    assert pair.ep.recv(timeout=5) == b"before"
    pair.ep.send(b"old")
    assert pair.peer("ep.recv(timeout=5)") == b"old"
    copy = R.Endpoint(pair.fd, 0, pair.sock.fileno())
    try:
        pair.ep.close()  # not the last endpoint of side 0: the connection stays
        assert not pair.peer("ep.peer_closed")
        copy.send(b"after")
        assert pair.peer("ep.recv(timeout=5)") == b"after"
        pair.peer("ep.send(b'to the copy')")
        assert copy.recv(timeout=5) == b"to the copy"
    finally:
        copy.close()
    assert pair.peer("ep.peer_closed")
    assert pair.peer.fails("ep.recv(timeout=5)")[0] == "BrokenPipeError"


def test_planted_positions_are_refused() -> None:
    fd = R.create(CAP)
    try:
        with mmap.mmap(fd, R.region_size(CAP)) as m:
            struct.pack_into("=Q", m, R.CONTROL_OFFSET + R.CONTROL_STRIDE + 128, 8)  # a tail of 8
            with pytest.raises(ValueError, match="corrupt"):
                R.Endpoint(fd, 0)
            struct.pack_into("=Q", m, R.CONTROL_OFFSET + R.CONTROL_STRIDE + 128, 0)
            struct.pack_into("=Q", m, R.CONTROL_OFFSET, 2 * CAP)  # head a lap ahead of tail
            with pytest.raises(ValueError, match="corrupt"):
                R.Endpoint(fd, 0)
            R.Endpoint(fd, 1).close()  # side 1 reads ring 0: its head is the peer's business
    finally:
        os.close(fd)


def test_closed_endpoint_and_context_manager() -> None:
    fd = R.create(CAP)
    try:
        with R.Endpoint(fd, 0) as ep:
            assert not ep.closed
        assert ep.closed
        for call in (lambda: ep.recv(timeout=0), lambda: ep.peek(1), lambda: ep.readable(),
                     lambda: ep.arm_doorbell(), lambda: ep.reserve(1), lambda: ep.send_many([b""])):
            with pytest.raises(ValueError, match="closed"):
                call()
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the socket
def test_doorbell(pair: Pair) -> None:
    ep, sock = pair.ep, pair.sock
    assert ep.arm_doorbell() is False
    pair.peer("ep.send(b'ding')")
    assert select.select([sock], [], [], LIVENESS)[0]
    assert sock.recv(64) == R.DOORBELL
    assert ep.readable()
    with pytest.raises(BlockingIOError):
        sock.recv(64, socket.MSG_DONTWAIT)
    pair.peer("ep.send(b'no bell')")  # not armed again: no second doorbell
    assert not select.select([sock], [], [], 0.2)[0]
    assert ep.arm_doorbell() is True  # data waits: do not block
    pair.peer("ep.send(b'x')")
    assert not select.select([sock], [], [], 0.2)[0]
    assert ep.recv_many(10, timeout=5) == [b"ding", b"no bell", b"x"]


def test_socket_data_interrupts_an_empty_wait(pair: Pair) -> None:
    ep, sock = pair.ep, pair.sock
    pair.peer.start("time.sleep(0.2); sock.send(b'frame')")
    with pytest.raises(R.SocketEvent):
        ep.recv(timeout=LIVENESS)
    assert pair.peer.reply()[0] == "ok"
    assert sock.recv(64) == b"frame"
    with pytest.raises(TimeoutError):
        ep.recv(timeout=0.05)
    pair.peer("ep.send(b'ring first'); sock.send(b'frame')")
    assert ep.recv(timeout=5) == b"ring first"  # the ring's data comes before the socket's
    with pytest.raises(R.SocketEvent):
        ep.recv(timeout=5)
    assert sock.recv(64) == b"frame"


def test_an_idle_reader_uses_no_cpu(pair: Pair) -> None:
    name, _ = pair.peer.fails("""
        import resource
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            ep.recv(timeout=1.0)
        finally:
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime
            assert cpu < 0.05, f"an idle second cost {cpu:.3f} s of CPU"
    """)
    assert name == "TimeoutError"


def test_spinning_peers_still_deliver(pair: Pair) -> None:
    pair.ep.spin_ns = 50_000
    pair.peer("ep.spin_ns = 50_000")
    pair.peer.start("[ep.send(ep.recv(timeout=5)) for _ in range(200)]")
    for i in range(200):
        pair.ep.send(b"%d" % i)
        assert pair.ep.recv(timeout=5) == b"%d" % i
    assert pair.peer.reply()[0] == "ok"


def test_max_message_caps_what_the_reader_accepts() -> None:
    p = Pair(max_message=1000)
    try:
        p.ep.send(b"x" * 1000)
        assert p.peer("len(ep.recv(timeout=5))") == 1000
        p.ep.send(b"x" * 1001)
        name, msg = p.peer.fails("ep.recv(timeout=5)")
        assert name == "ValueError" and "corrupt" in msg and "max_message" in msg
        assert p.peer("ep.broken") is True
        assert p.peer.fails("ep.send(b'x')")[0] == "ValueError"
        with pytest.raises(BrokenPipeError):  # a broken end closes its side
            p.ep.send(b"x")
    finally:
        assert p.close() == 0


# ------------------------------------------------------------------ hostile peers
class Hostile:
    """This process as a peer that writes the region by hand; the victim is a child (side 0)."""

    def __init__(self, **victim_kw: Any) -> None:
        self.fd = R.create(CAP)
        self.sock, child = socket.socketpair()
        try:
            self.victim = Peer(self.fd, child, 0, **victim_kw)
        finally:
            child.close()
        self.map = mmap.mmap(self.fd, R.region_size(CAP))
        self.meta = struct.unpack_from("=I", self.map, 12)[0]

    def ctl(self, ring_no: int) -> int:
        return R.CONTROL_OFFSET + ring_no * R.CONTROL_STRIDE

    def set_head(self, value: int) -> None:  # of ring 1, which the victim reads
        struct.pack_into("=Q", self.map, self.ctl(1), value)

    def set_tail(self, value: int) -> None:  # of ring 0, which the victim writes
        struct.pack_into("=Q", self.map, self.ctl(0) + 128, value)

    def record(self, pos: int, length: int, kind: int = 1, flags: int = 3, total: int | None = None) -> int:
        at = self.meta + CAP + pos % CAP
        struct.pack_into("=IHHQ", self.map, at, length, kind, flags, length if total is None else total)
        return pos + rec(length)

    def close(self) -> int:
        self.map.close()
        status = self.victim.stop()
        self.sock.close()
        os.close(self.fd)
        return status


def _corrupt_head(h: Hostile) -> None:
    h.set_head(CAP + 16)


def _unaligned_head(h: Hostile) -> None:
    h.record(0, 5)
    h.set_head(40)


def _length_past_head(h: Hostile) -> None:
    h.record(0, 5000)
    h.set_head(64)


def _huge_length(h: Hostile) -> None:
    h.record(0, 0xFFFFFFFF)
    h.set_head(CAP)


def _bad_kind(h: Hostile) -> None:
    h.set_head(h.record(0, 5, kind=7))


def _bad_flags(h: Hostile) -> None:
    h.set_head(h.record(0, 5, flags=8 | 3))


def _no_first(h: Hostile) -> None:
    h.set_head(h.record(0, 5, flags=2))


def _huge_total(h: Hostile) -> None:
    h.set_head(h.record(0, 100, flags=1, total=2**62))


def _total_mismatch(h: Hostile) -> None:
    h.set_head(h.record(0, 100, flags=3, total=99))


def _fragment_interrupted(h: Hostile) -> None:
    end = h.record(0, 100, flags=1, total=300)
    h.set_head(h.record(end, 0, kind=2, flags=3))


def _last_too_short(h: Hostile) -> None:
    end = h.record(0, 100, flags=1, total=300)
    h.set_head(h.record(end, 50, flags=2))


def _control_with_payload(h: Hostile) -> None:
    h.set_head(h.record(0, 8, kind=2, flags=3))


def _head_goes_back(h: Hostile) -> None:
    end = h.record(0, 8)
    end = h.record(end, 8, flags=1, total=100)  # an incomplete message after a good one
    h.set_head(end)
    assert h.victim("ep.recv(timeout=5)") == b"\0" * 8
    h.victim.fails("ep.recv(timeout=0.1)")  # takes the first fragment, waits for more
    h.set_head(0)


CORRUPTIONS = {f.__name__[1:]: f for f in (
    _corrupt_head, _unaligned_head, _length_past_head, _huge_length, _bad_kind, _bad_flags,
    _no_first, _huge_total, _total_mismatch, _fragment_interrupted, _last_too_short,
    _control_with_payload, _head_goes_back,
)}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("call", ["recv(timeout=5)", "peek(10)", "recv_view(timeout=5)", "recv_many(9, timeout=5)"])
def test_a_hostile_reader_region_is_refused(case: str, call: str) -> None:
    h = Hostile()
    try:
        CORRUPTIONS[case](h)
        name, msg = h.victim.fails("ep." + call)
        if case == "head_goes_back" and call == "peek(10)":
            name, msg = h.victim.fails("ep.recv(timeout=5)")
        assert name == "ValueError" and "corrupt" in msg, (name, msg)
        assert h.victim("ep.broken") is True
        for later in ("ep.recv(timeout=0)", "ep.send(b'x')", "ep.readable()"):
            assert h.victim.fails(later)[0] == "ValueError"
        # the broken end told its peer: both its directions are closed
        assert struct.unpack_from("=I", h.map, h.ctl(0) + 16)[0] == 1
    finally:
        assert h.close() == 0  # and the victim did not crash


def test_an_interrupted_recv_keeps_what_it_took() -> None:
    """Fragments written by hand, so the reader times out exactly inside a message."""
    h = Hostile()
    try:
        body = bytes(range(256)) + bytes(44)  # 300 bytes, as the records below hold
        at = h.meta + CAP
        end = h.record(0, 100, flags=1, total=300)
        h.map[at + 16: at + 116] = body[:100]
        h.set_head(end)
        assert h.victim.fails("ep.recv(timeout=0.2)")[0] == "TimeoutError"
        assert h.victim("ep.message_left") == 300
        # the first fragment was taken off the ring (its space released) and kept
        assert struct.unpack_from("=Q", h.map, h.ctl(1) + 128)[0] == end
        assert h.victim("ep.read(40, timeout=0)") == body[:40]
        assert h.victim.fails("ep.recv_into(bytearray(100), timeout=0.1)")[0] == "TimeoutError"
        mid = h.record(end, 150, flags=0)
        h.map[at + end + 16: at + end + 166] = body[100:250]
        last = h.record(mid, 50, flags=2)
        h.map[at + mid + 16: at + mid + 66] = body[250:]
        h.set_head(last)
        assert h.victim("ep.peek(1000)") == (body[40:], 260, 0)
        assert h.victim("ep.recv(timeout=5)") == body[40:]
        assert h.victim("ep.message_left") == 0
    finally:
        assert h.close() == 0


def test_a_hostile_tail_is_refused() -> None:
    h = Hostile()
    try:
        h.victim("[ep.send(b'x' * 16000) for _ in range(4)]")  # the ring is full
        h.set_tail(10**12)
        name, msg = h.victim.fails("ep.send(b'y' * 16000, timeout=5)")
        assert name == "ValueError" and "corrupt" in msg
        h2 = Hostile()
        try:
            h2.victim("[ep.send(b'x' * 16000) for _ in range(4)]")
            h2.set_tail(2**64 - 16)  # "behind" the start: also outside the published range
            assert h2.victim.fails("ep.send_many([b'y' * 16000], timeout=5)")[0] == "ValueError"
        finally:
            assert h2.close() == 0
    finally:
        assert h.close() == 0


def test_random_hostile_regions_never_crash_the_reader() -> None:
    """Garbage heads, records and data, rewritten even while the victim reads them."""
    code = r"""
        import importlib.machinery, importlib.util, mmap, random, struct, sys, threading, os
        path = sys.argv[1]
        loader = importlib.machinery.ExtensionFileLoader("winipc._native._ring", path)
        spec = importlib.util.spec_from_file_location("winipc._native._ring", path, loader=loader)
        R = importlib.util.module_from_spec(spec); spec.loader.exec_module(R)
        CAP = 65536
        fd = R.create(CAP)
        size = R.region_size(CAP)
        m = mmap.mmap(fd, size)
        meta = struct.unpack_from("=I", m, 12)[0]
        data = meta + CAP  # ring 1: the victim (side 0) reads it
        head_at = R.CONTROL_OFFSET + R.CONTROL_STRIDE
        outcomes = {}
        stop = False
        def scribble(rng):
            while not stop:
                at = data + rng.randrange(CAP)
                m[at:at + 4] = rng.randbytes(4)
        for seed in range(int(os.environ.get("WINIPC_RING_FUZZ_SEEDS", "300"))):
            rng = random.Random(seed)
            m[meta:] = bytes(size - meta)
            m[R.CONTROL_OFFSET:meta] = bytes(meta - R.CONTROL_OFFSET)
            pos = 0
            for _ in range(rng.randrange(1, 40)):
                n = rng.choice([0, 1, 15, 16, 100, 5000, rng.randrange(70000)])
                kind = rng.choice([1, 1, 1, 2, rng.randrange(65536)])
                flags = rng.choice([3, 3, 1, 2, 0, rng.randrange(65536)])
                total = rng.choice([n, n + rng.randrange(100000), rng.randrange(2**64)])
                struct.pack_into("=IHHQ", m, data + pos % CAP, n & 0xFFFFFFFF, kind, flags, total)
                m[data + (pos + 16) % CAP: data + (pos + 16) % CAP + 8] = rng.randbytes(8)
                pos += 16 + (min(n, 70000) + 15) // 16 * 16
            head = rng.choice([pos, pos % (CAP + 1), rng.randrange(2**64), pos + 8, 16 * rng.randrange(5000)])
            struct.pack_into("=Q", m, head_at, head)
            ep = R.Endpoint(fd, 0, max_message=rng.choice([0, 100, 10**6, 2**40]))
            stop = False
            t = threading.Thread(target=scribble, args=(random.Random(-seed),)) if seed % 3 == 0 else None
            if t: t.start()
            views = []
            try:
                for _ in range(12):
                    call = rng.choice(["recv", "read", "into", "view", "many", "peek", "readable"])
                    try:
                        if call == "recv": ep.recv(timeout=0)
                        elif call == "read": ep.read(rng.randrange(20000), timeout=0)
                        elif call == "into": ep.recv_into(bytearray(rng.randrange(20000)), timeout=0)
                        elif call == "view":
                            v = ep.recv_view(timeout=0); bytes(v); views.append(v)
                        elif call == "many": ep.recv_many(rng.randrange(1, 50), timeout=0)
                        elif call == "peek": ep.peek(rng.randrange(20000))
                        else: ep.readable()
                        outcomes["ok"] = outcomes.get("ok", 0) + 1
                    except (ValueError, TimeoutError, R.ControlPending) as exc:
                        key = type(exc).__name__
                        outcomes[key] = outcomes.get(key, 0) + 1
            finally:
                stop = True
                if t: t.join()
            for v in views: v.release()
            ep.close()
        print(sorted(outcomes.items()))
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = dict(ast.literal_eval(proc.stdout))
    assert outcomes.get("ValueError", 0) > 0 and outcomes.get("ok", 0) > 0


# ------------------------------------------------------------------ build and fallback
def test_c_source_compiles_without_warnings(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if cc is None or not Path(include, "Python.h").exists():
        pytest.skip("no C compiler or Python headers here")
    proc = subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", f"-I{include}", str(SOURCE)],
        capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr


def test_winipc_runs_without_the_extension() -> None:
    env = dict(os.environ, WINIPC_NO_NATIVE="1")
    proc = subprocess.run(
        [sys.executable, "-c", "from winipc._native import AVAILABLE, ring; print(AVAILABLE, ring)"],
        capture_output=True, text=True, timeout=100, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "None"]
