"""Named and anonymous pipes against Windows semantics, with real processes on both ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winipc import errors as W
from winipc import pipes
from winipc._core import namespace
from winipc._core.names import pipe_name

from conftest import run_py, wait_line

ECHO_SERVER = r"""
import sys
from winipc import pipes, errors as W
name, message, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
inst = pipes.PipeInstance(name, message=message, max_instances=1)
print("ready", flush=True)
for _ in range(n):
    inst.connect()
    try:
        while True:
            inst.write(inst.recv())
    except W.BrokenPipe:
        pass
    inst.disconnect()
inst.close()
print("done", flush=True)
"""


def _finish(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 200_000), min_size=1, max_size=8))
def test_message_boundaries_random_sizes(sizes: list[int]) -> None:
    name = rf"\\.\pipe\bound-{os.getpid()}-{len(sizes)}-{sum(sizes)}"
    proc = run_py(ECHO_SERVER, name, "1", "1")
    try:
        wait_line(proc, "ready")
        with pipes.connect(name, read_message=True) as c:
            msgs = [os.urandom(n) for n in sizes]
            writer = threading.Thread(target=lambda: [c.write(m) for m in msgs])
            writer.start()  # write and read at once: the echo would fill both buffers
            got = [c.recv(timeout=20) for _ in msgs]
            writer.join()
            assert [len(g) for g in got] == sizes
            assert got == msgs
    finally:
        _finish(proc)


def test_many_clients_at_once() -> None:
    server = r"""
import sys, threading
from winipc import pipes, errors as W
name = sys.argv[1]
insts = [pipes.PipeInstance(name, message=True, max_instances=16) for _ in range(16)]
def serve(inst):
    inst.connect()
    try:
        while True:
            m = inst.recv()
            inst.write(m[::-1])
    except W.BrokenPipe:
        pass
    inst.disconnect()
threads = [threading.Thread(target=serve, args=(i,)) for i in insts]
for t in threads: t.start()
print("ready", flush=True)
for t in threads: t.join()
for i in insts: i.close()
"""
    client = r"""
import sys, os
from winipc import pipes
c = pipes.connect(sys.argv[1], read_message=True)
for k in range(50):
    m = os.urandom(1 + k * 37)
    assert c.transact(m, 1 << 20) == m[::-1]
c.close()
print("ok", flush=True)
"""
    name = r"\\.\pipe\many"
    srv = run_py(server, name)
    try:
        wait_line(srv, "ready")
        clients = [run_py(client, name) for _ in range(16)]
        for cp in clients:
            out, err = cp.communicate(timeout=60)
            assert out.strip() == "ok", err
        _finish(srv)
        assert srv.returncode == 0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def test_server_killed_mid_message_gives_typed_error_and_name_is_reclaimed() -> None:
    server = r"""
import sys, time, struct
from winipc import pipes
inst = pipes.PipeInstance(sys.argv[1], message=True, fast_path=False)  # the socket format
print("ready", flush=True)
inst.connect()
inst.socket.sendall(struct.pack("<I", 1 << 20) + b"x" * 1000)   # half a message
print("sent", flush=True)
time.sleep(60)
"""
    name = r"\\.\pipe\killed"
    srv = run_py(server, name)
    try:
        wait_line(srv, "ready")
        c = pipes.connect(name, read_message=True)
        wait_line(srv, "sent")
        result: dict[str, object] = {}

        def reader() -> None:
            try:
                result["data"] = c.recv()
            except W.WinIPCError as e:
                result["error"] = e
                result["at"] = time.monotonic()

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.2)
        killed_at = time.monotonic()
        srv.send_signal(signal.SIGKILL)
        t.join(5)
        assert not t.is_alive()
        assert "data" not in result, "a partial message was reported as whole"
        assert isinstance(result["error"], W.BrokenPipe)
        assert result["error"].winerror == W.ERROR_BROKEN_PIPE
        assert float(result["at"]) - killed_at < 1.0  # type: ignore[arg-type]
        c.close()
    finally:
        _finish(srv)
    # the dead pipe is gone for clients and reclaimed by the next creator
    with pytest.raises(W.FileNotFound):
        pipes.connect(name)
    with pipes.PipeInstance(name, first_instance=True):
        pass


def test_busy_wait_named_pipe_and_missing_name() -> None:
    server = r"""
import sys
from winipc import pipes
inst = pipes.PipeInstance(sys.argv[1], max_instances=1)
print("ready", flush=True)
inst.connect()
print("accepted", flush=True)
sys.stdin.readline()          # hold the client until told
inst.disconnect()
print("relisten", flush=True)
inst.connect()
inst.disconnect()
inst.close()
"""
    name = r"\\.\pipe\busy"
    srv = run_py(server, name, stdin=subprocess.PIPE)
    try:
        wait_line(srv, "ready")
        first = pipes.connect(name)
        wait_line(srv, "accepted")
        with pytest.raises(W.PipeBusy) as busy:
            pipes.connect(name)
        assert busy.value.winerror == 231
        t0 = time.monotonic()
        with pytest.raises(W.SemTimeout) as to:
            pipes.wait_named_pipe(name, 0.3)
        assert to.value.winerror == 121
        assert time.monotonic() - t0 >= 0.3  # never early
        assert srv.stdin is not None
        srv.stdin.write("go\n")
        srv.stdin.flush()
        wait_line(srv, "relisten")
        pipes.wait_named_pipe(name, 10)
        second = pipes.connect(name)
        second.close()
        first.close()
        srv.stdin.close()
    finally:
        _finish(srv)
    t0 = time.monotonic()
    with pytest.raises(W.FileNotFound) as nf:
        pipes.wait_named_pipe(r"\\.\pipe\missing", 5)
    assert nf.value.winerror == 2 and time.monotonic() - t0 < 1


def test_more_data_then_rest_and_byte_read_mode_never_234() -> None:
    proc = run_py(ECHO_SERVER, r"\\.\pipe\more", "1", "1")
    try:
        wait_line(proc, "ready")
        c = pipes.connect(r"\\.\pipe\more")
        c.write(b"0123456789")
        assert c.read(4) == b"0123"  # byte-read mode (the default): no ERROR_MORE_DATA
        assert c.read(100) == b"456789"
        c.set_read_mode(True)
        c.write(b"abcdefghij")
        c.write(b"second")
        with pytest.raises(W.MoreData) as more:
            c.read(4)
        assert more.value.data == b"abcd" and more.value.winerror == 234
        assert c.read(100) == b"efghij"  # the rest, never merged with the next message
        assert c.read(100) == b"second"
        c.close()
    finally:
        _finish(proc)


def test_peek_message_pipe() -> None:
    proc = run_py(ECHO_SERVER, r"\\.\pipe\peek", "1", "1")
    try:
        wait_line(proc, "ready")
        c = pipes.connect(r"\\.\pipe\peek", read_message=True)
        assert c.peek(10) == pipes.PeekResult(b"", 0, 0)  # empty: returns at once
        c.write(b"hello world")
        c.write(b"xy")
        deadline = time.monotonic() + 5
        while c.peek(0).total_available < 13 and time.monotonic() < deadline:
            time.sleep(0.01)
        p = c.peek(5)
        assert (p.data, p.total_available, p.left_this_message) == (b"hello", 13, 6)
        assert c.recv() == b"hello world"  # peek removed nothing
        assert c.peek(100) == pipes.PeekResult(b"xy", 2, 0)
        assert c.recv() == b"xy"
        c.close()
    finally:
        _finish(proc)


def test_disconnect_gives_pipe_not_connected() -> None:
    server = r"""
import sys
from winipc import pipes
inst = pipes.PipeInstance(sys.argv[1], message=True)
print("ready", flush=True)
inst.connect()
inst.write(b"unread")
inst.disconnect()
print("disconnected", flush=True)
inst.close()
"""
    name = r"\\.\pipe\disc"
    srv = run_py(server, name)
    try:
        wait_line(srv, "ready")
        c = pipes.connect(name, read_message=True)
        wait_line(srv, "disconnected")
        with pytest.raises(W.PipeNotConnected) as e:
            c.recv()
        assert e.value.winerror == 233
        with pytest.raises(W.PipeNotConnected):
            c.write(b"x")
        c.close()
    finally:
        _finish(srv)


def test_server_close_delivers_data_then_109_and_writes_232() -> None:
    server = r"""
import sys
from winipc import pipes
inst = pipes.PipeInstance(sys.argv[1], message=True)
print("ready", flush=True)
inst.connect()
for m in (b"one", b"two", b"three"):
    inst.write(m)
inst.flush()
inst.close()
"""
    name = r"\\.\pipe\closing"
    srv = run_py(server, name)
    try:
        wait_line(srv, "ready")
        c = pipes.connect(name, read_message=True)
        assert [c.recv(), c.recv(), c.recv()] == [b"one", b"two", b"three"]
        with pytest.raises(W.BrokenPipe) as e:
            c.recv()
        assert e.value.winerror == 109
        with pytest.raises(W.PipeClosing) as w:
            for _ in range(100):
                c.write(b"x" * 1000)
        assert w.value.winerror == 232
        c.close()
    finally:
        _finish(srv)


def test_nowait_and_connect_states() -> None:
    inst = pipes.PipeInstance(r"\\.\pipe\nowait", nowait=True)
    try:
        with pytest.raises(W.PipeListening) as pl:
            inst.connect()
        assert pl.value.winerror == 536
        c = pipes.connect(r"\\.\pipe\nowait", nowait=True)
        assert inst.connect() is True  # the client came first: ERROR_PIPE_CONNECTED
        with pytest.raises(W.NoData) as nd:
            c.read(10)
        assert nd.value.winerror == 232
        with pytest.raises(W.NoData):
            inst.read(10)
        c.write(b"hi")
        inst.nowait = False
        assert inst.read(10) == b"hi"
        assert inst.client_pid == os.getpid()
        c.close()
    finally:
        inst.close()


def test_instances_limit_first_instance_and_direction() -> None:
    a = pipes.PipeInstance(r"\\.\pipe\lim", max_instances=2)
    b = pipes.PipeInstance(r"\\.\PIPE\LIM", max_instances=2)  # names are case-insensitive
    try:
        with pytest.raises(W.PipeBusy):
            pipes.PipeInstance(r"\\.\pipe\lim", max_instances=2)
        with pytest.raises(W.AccessDenied):
            pipes.PipeInstance(r"\\.\pipe\lim", first_instance=True)
        with pytest.raises(W.AccessDenied):
            pipes.PipeInstance(r"\\.\pipe\lim", message=True)
    finally:
        a.close()
        b.close()
    with pipes.PipeInstance(r"\\.\pipe\in", open_mode=pipes.OpenMode.INBOUND) as inbound:
        with pytest.raises(W.AccessDenied):
            pipes.connect(r"\\.\pipe\in")  # read + write on an inbound pipe
        c = pipes.connect(r"\\.\pipe\in", read=False)
        inbound.connect()
        c.write(b"up")
        assert inbound.read(2) == b"up"
        with pytest.raises(W.AccessDenied):
            inbound.write(b"down")
        c.close()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"max_instances": 0}, "max_instances"),
        ({"max_instances": 256}, "max_instances"),
        ({"open_mode": 7}, "open_mode"),
        ({"read_message": True}, "read_message"),
        ({"default_timeout": -1}, "default_timeout"),
        ({"out_buffer_size": -5}, "out_buffer_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(W.InvalidParameter, match=word):
        pipes.PipeInstance(r"\\.\pipe\bad", **kwargs)  # type: ignore[arg-type]


def test_call_named_pipe_and_transact() -> None:
    proc = run_py(ECHO_SERVER, r"\\.\pipe\call", "1", "2")
    try:
        wait_line(proc, "ready")
        assert pipes.call_named_pipe(r"\\.\pipe\call", b"ping", 100, 5) == b"ping"
        pipes.wait_named_pipe(r"\\.\pipe\call", 10)  # the server re-listens after the call
        with pipes.connect(r"\\.\pipe\call") as c:
            with pytest.raises(W.WinIPCError) as bad:
                c.transact(b"x")  # byte-read mode: ERROR_BAD_PIPE
            assert bad.value.winerror == W.ERROR_BAD_PIPE
            c.set_read_mode(True)
            with pytest.raises(W.MoreData) as more:
                c.transact(b"long reply", 4)
            assert more.value.data == b"long"
    finally:
        _finish(proc)


@pytest.mark.skipif(
    shutil.which("socat") is None and not os.environ.get("WINIPC_REQUIRE_ALL"),
    reason="socat is not installed",
)
def test_socat_talks_to_a_byte_mode_pipe() -> None:
    proc = run_py(ECHO_SERVER, r"\\.\pipe\socat", "0", "1")
    try:
        wait_line(proc, "ready")
        info = [o for o in namespace.list_objects() if o.type == "pipe"]
        assert len(info) == 1 and len(info[0].fs_paths) == 1
        # pytest's folders make the path longer than sun_path holds: reach it by a short link
        short = f"/tmp/wsocat-{os.getpid()}"
        os.symlink(info[0].fs_paths[0], short)
        try:
            out = subprocess.run(
                ["socat", "-t", "2", "-", f"UNIX-CONNECT:{short}"],
                input=b"plain bytes, no framing\n",
                capture_output=True,
                timeout=20,
                check=True,
            )
        finally:
            os.unlink(short)
        assert out.stdout == b"plain bytes, no framing\n"
    finally:
        _finish(proc)


def test_anonymous_pipe_semantics() -> None:
    r, w = pipes.create_pipe()
    with r, w:
        w.write(b"abc")
        assert r.available() == 3
        assert r.read(10) == b"abc"
        with pytest.raises(W.AccessDenied):
            r.write(b"x")
        with pytest.raises(W.SemTimeout):
            r.read(1, timeout=0.05)
        w.close()
        with pytest.raises(W.BrokenPipe):
            r.read(1)
        with pytest.raises(W.InvalidHandle) as ih:
            w.write(b"x")
        assert ih.value.winerror == 6
    r2, w2 = pipes.create_pipe()
    r2.close()
    with pytest.raises(W.PipeClosing):
        w2.write(b"x")
    w2.close()


def test_names_are_case_insensitive_and_display_keeps_spelling() -> None:
    with pipes.PipeInstance(r"\\.\pipe\MiXeD") as inst:
        assert inst.name == r"\\.\pipe\MiXeD"
        c = pipes.connect(r"\\.\PIPE\mixed")
        inst.connect()
        c.close()
        assert pipe_name("mixed").storage_id == pipe_name(r"\\.\pipe\MIXED").storage_id


def test_anonymous_peek_and_flush() -> None:
    r, w = pipes.create_pipe()
    with r, w:
        assert r.peek(4) == pipes.PeekResult(b"", 0, 0)
        w.write(b"abcdef")
        assert r.peek(3) == pipes.PeekResult(b"abc", 6, 0)
        assert r.available() == 6
        assert r.read(10) == b"abcdef"  # the peeked bytes come first, nothing is lost
        w.write(b"x")
        done = threading.Event()
        t = threading.Thread(target=lambda: (w.flush(timeout=10), done.set()))
        t.start()
        time.sleep(0.05)
        assert not done.is_set()  # flush waits for the reader
        assert r.read(1) == b"x"
        t.join(10)
        assert done.is_set()
        w.close()
        with pytest.raises(W.BrokenPipe):
            r.peek(1)


def test_cancel_io_aborts_only_what_is_pending() -> None:
    inst = pipes.PipeInstance(r"\\.\pipe\cancel", message=True)
    c = pipes.connect(r"\\.\pipe\cancel", read_message=True)
    try:
        inst.connect()
        assert c.cancel_io() is False  # nothing pending: nothing is left to abort later
        inst.write(b"after")
        assert c.recv(timeout=10) == b"after"
        errors: list[BaseException] = []

        def blocked(end: pipes.PipeConnection) -> None:
            try:
                end.recv()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=blocked, args=(end,)) for end in (c, inst)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while not (c._waiting and inst._waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.cancel_io() and inst.cancel_io()
        for t in threads:
            t.join(10)
        assert [type(e) for e in errors] == [W.OperationAborted, W.OperationAborted]
        assert all(e.winerror == 995 for e in errors)  # type: ignore[attr-defined]
        inst.write(b"still usable")
        assert c.recv(timeout=10) == b"still usable"
    finally:
        c.close()
        inst.close()
