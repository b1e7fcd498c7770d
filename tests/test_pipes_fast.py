"""The shared-memory fast path of named pipes, with real processes on both ends.

Every other pipe test also runs on the fast path (it is on by default between winipc
processes); this file checks the negotiation, what only the fast path has (zero copy),
the new calls on both paths, a hostile client, and the socket path's suite again with
the fast path off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from winipc import errors as W
from winipc import pipes
from winipc._backends import os_backend as B
from winipc._core import namespace
from winipc.pipes import _fast
from winipc.sync import Event, wait_any

from conftest import SRC, run_py, wait_line

pytestmark = pytest.mark.skipif(
    _fast._ring is None and not os.environ.get("WINIPC_REQUIRE_ALL"),
    reason="the fast path's extension is not built",
)

SERVER = r"""
import os, sys, time
from winipc import pipes, errors as W
name, message, fast, action = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
inst = pipes.PipeInstance(name, message=message, max_instances=1,
                          fast_path=None if fast == "auto" else fast == "1")
print("ready", flush=True)
inst.connect()
print("fast", inst.fast_path, flush=True)
if action == "echo":
    try:
        while True:
            inst.write(inst.recv())
    except W.BrokenPipe:
        pass
elif action == "hold":  # write one message, then wait to be killed
    inst.write(b"before")
    time.sleep(60)
elif action == "silent":  # connected, reading, nothing comes
    t0 = time.process_time()
    try:
        inst.read(1, timeout=1.0)
    except W.SemTimeout:
        pass
    print("cpu", time.process_time() - t0, flush=True)
elif action == "disconnect":
    inst.write(b"x" * 100)
    inst.disconnect()
    print("disconnected", flush=True)
    time.sleep(5)
elif action == "handles":
    from winipc.sync import Event
    ev = Event(None, manual_reset=True)
    inst.write(b"one")
    inst.send_handle(ev)
    inst.write(b"two")
    inst.recv()  # the client's go: it set the event through its copy
    print("event", ev.wait(0), flush=True)
elif action == "arrays":
    try:
        while True:
            inst.send_array(inst.recv_array())
    except W.InvalidData:
        print("refused", flush=True)
inst.close()
print("done", flush=True)
"""


def _server(name: str, action: str, message: bool = True, fast: str = "auto") -> subprocess.Popen[str]:
    proc = run_py(SERVER, name, "1" if message else "0", fast, action)
    wait_line(proc, "ready")
    return proc


def _finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), err
    return out


@pytest.mark.parametrize("server_fast,client_fast,expect", [
    ("auto", None, True),
    ("0", None, False),
    ("auto", False, False),
])
def test_negotiation(server_fast: str, client_fast: bool | None, expect: bool) -> None:
    name = rf"\\.\pipe\fp-neg-{server_fast}-{client_fast}"
    proc = _server(name, "echo", fast=server_fast)
    with pipes.connect(name, read_message=True, fast_path=client_fast) as c:
        assert c.fast_path is expect
        assert wait_line(proc, "fast") == f"fast {expect}"
        for size in (0, 1, 100, 70_000):
            data = os.urandom(size)
            c.write(data)
            assert c.recv(timeout=10) == data
    _finish(proc)


def test_env_switch_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINIPC_FASTPATH", "0")
    name = r"\\.\pipe\fp-env"
    with pipes.PipeInstance(name, message=True) as inst:
        assert inst.socket_path is not None and inst.socket_path.endswith(".sock")
        assert not inst.socket_path.endswith(_fast.SLOT_SUFFIX)


@pytest.mark.parametrize("message", [True, False])
def test_big_transfers_fragment_and_arrive_whole(message: bool) -> None:
    name = rf"\\.\pipe\fp-big-{message}"
    proc = _server(name, "echo", message=message)
    sizes = [_fast.RING_CAPACITY * 2 + 17, 1, _fast.RING_CAPACITY // 4 + 1, 3 * 1024 * 1024]
    with pipes.connect(name, read_message=message) as c:
        assert c.fast_path
        msgs = [os.urandom(n) for n in sizes]
        writer = threading.Thread(target=lambda: [c.write(m) for m in msgs])
        writer.start()
        if message:
            got = [c.recv(timeout=30) for _ in msgs]
            assert [len(g) for g in got] == sizes
            assert got == msgs
        else:
            assert c.read_exact(sum(sizes), timeout=30) == b"".join(msgs)
        writer.join()
    _finish(proc)


@pytest.mark.parametrize("fast", [True, False])
def test_batches_views_buffers_and_recv_into(fast: bool) -> None:
    name = rf"\\.\pipe\fp-api-{fast}"
    proc = _server(name, "echo", fast="1" if fast else "0")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path is fast
        msgs = [os.urandom(n) for n in (0, 5, 64, 1000, 65536)] * 20
        counts: list[int] = []
        writer = threading.Thread(target=lambda: counts.append(c.send_many(msgs)))
        writer.start()  # the echo fills both directions: read while writing
        got: list[bytes] = []
        while len(got) < len(msgs):
            batch = c.recv_many(max_count=7, timeout=10)
            assert 1 <= len(batch) <= 7
            got += batch
        writer.join(10)
        assert counts == [len(msgs)]
        assert got == msgs
        # send_buffer: the block's bytes go out when it ends, nothing when it raises
        with pytest.raises(RuntimeError), c.send_buffer(10) as buf:
            buf[:] = b"0123456789"
            raise RuntimeError("changed my mind")
        with c.send_buffer(10) as buf:
            buf[:] = b"abcdefghij"
        # recv_into: whole message; then one longer than the buffer (MoreData, then the rest)
        target = bytearray(16)
        assert c.recv_into(target, timeout=10) == 10
        assert bytes(target[:10]) == b"abcdefghij"
        c.write(b"x" * 20)
        with pytest.raises(W.MoreData) as ei:
            c.recv_into(target, timeout=10)
        assert ei.value.data == b"x" * 16
        assert c.recv_into(target, timeout=10) == 4
        # recv_view: read-only, equal, and released
        c.write(b"view me")
        view = c.recv_view(timeout=10)
        assert view.readonly and bytes(view) == b"view me"
        view.release()
        with pytest.raises(W.InvalidParameter):
            c.recv_into(b"immutable")
        with pytest.raises(W.InvalidParameter):
            c.recv_many(0)
    _finish(proc)


def test_zero_copy_view_holds_its_ring_space_until_released() -> None:
    name = r"\\.\pipe\fp-hold"
    proc = _server(name, "echo")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        size = _fast.RING_CAPACITY // 8
        c.write(b"a" * size)
        held = c.recv_view(timeout=10)  # points into the ring: that space is not reused
        sent = threading.Event()

        def flood() -> None:
            for _ in range(12):  # 1.5 rings' worth behind the held view
                c.write(b"b" * size)
            sent.set()

        t = threading.Thread(target=flood)
        t.start()
        got = 0
        deadline = time.monotonic() + 20
        while got < 4 and time.monotonic() < deadline:
            assert bytes(c.recv_view(timeout=10)) == b"b" * size  # released at once
            got += 1
        assert bytes(held) == b"a" * size  # unchanged while held
        held.release()
        while got < 12:
            with c.recv_view(timeout=10) as v:
                assert bytes(v) == b"b" * size
            got += 1
        t.join(10)
        assert sent.is_set()
    _finish(proc)


@pytest.mark.parametrize("fast", [True, False])
def test_numpy_arrays_round_trip(fast: bool) -> None:
    np = pytest.importorskip("numpy")
    name = rf"\\.\pipe\fp-np-{fast}"
    proc = _server(name, "arrays", fast="1" if fast else "0")
    arrays = [
        np.arange(24, dtype=np.float64).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        np.zeros((0, 5), dtype=np.uint8),
        np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")]),
        np.arange(10, dtype=">u4")[::2],  # not contiguous: sent as a contiguous copy
        np.arange(300_000, dtype=np.int64).reshape(1000, 300),  # larger than one ring record
    ]
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path is fast
        for arr in arrays:
            c.send_array(arr)
            back = c.recv_array(timeout=20)
            assert back.dtype == arr.dtype and back.shape == arr.shape
            assert np.array_equal(back, arr)
            assert not back.flags.writeable
            del back
        with pytest.raises(W.InvalidParameter):
            c.send_array(np.array([object()], dtype=object))
        c.write(b"not an array at all")
    out = _finish(proc)
    assert "refused" in out  # the server's recv_array refused the plain message


def test_recv_array_refuses_lies() -> None:
    np = pytest.importorskip("numpy")
    good = _fast.array_header(np.arange(4, dtype=np.int32)) + np.arange(4, dtype=np.int32).tobytes()
    assert list(_fast.array_from(good)) == [0, 1, 2, 3]
    for bad in (good[:-1], good + b"\0", b"WNDA", b"XXXX" + good[4:], good[:8] + b"\xff\xff\x00\x00" + good[12:]):
        with pytest.raises(W.InvalidData):
            _fast.array_from(bad)


def test_peer_killed_while_reader_sleeps_is_a_broken_pipe() -> None:
    name = r"\\.\pipe\fp-kill"
    proc = _server(name, "hold")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        assert c.recv(timeout=10) == b"before"
        result: list[BaseException | bytes] = []

        def reader() -> None:
            try:
                result.append(c.recv(timeout=30))
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        proc.kill()
        t.join(10)  # liveness bound, not a speed figure
        assert not t.is_alive()
        assert isinstance(result[0], W.BrokenPipe)
    _finish(proc)
    assert [o.name for o in namespace.clean()] == [name]  # the dead server's pipe


def test_disconnect_reaches_the_fast_path_client() -> None:
    name = r"\\.\pipe\fp-disc"
    proc = _server(name, "disconnect")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        wait_line(proc, "disconnected")
        with pytest.raises(W.PipeNotConnected):
            c.recv(timeout=10)
        with pytest.raises(W.PipeNotConnected):
            c.write(b"y")
    _finish(proc)


def test_wait_any_wakes_on_fast_path_data_and_cancel_io() -> None:
    name = r"\\.\pipe\fp-wait"
    proc = _server(name, "echo")
    with pipes.connect(name, read_message=True) as c, Event(None) as never:
        assert c.fast_path
        assert wait_any([never, c], timeout=0.05) is None  # nothing yet
        threading.Timer(0.2, lambda: c.write(b"ping")).start()
        assert wait_any([never, c], timeout=10) == 1  # the echo rang the doorbell
        assert c.recv(timeout=1) == b"ping"
        # cancel a read blocked in another thread
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: _catch(errors, c.recv, 30))
        t.start()
        time.sleep(0.2)
        assert c.cancel_io()
        t.join(10)
        assert not t.is_alive() and isinstance(errors[0], W.OperationAborted)
    _finish(proc)


def _catch(sink: list[BaseException], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        sink.append(exc)


def test_handles_keep_their_place_among_fast_path_data() -> None:
    name = r"\\.\pipe\fp-handles"
    proc = _server(name, "handles")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        assert c.recv(timeout=10) == b"one"
        with pytest.raises(W.InvalidData):
            c.recv(timeout=10)  # the handle is next, not data
        ev = c.recv_handle(timeout=10)
        assert c.recv(timeout=10) == b"two"
        ev.set()
        c.write(b"go")
        assert wait_line(proc, "event") == "event True"
        ev.close()
    _finish(proc)


def test_silent_connected_pair_uses_no_cpu() -> None:
    name = r"\\.\pipe\fp-idle"
    proc = _server(name, "silent")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        line = wait_line(proc, "cpu", timeout=20)
        assert float(line.split()[1]) < 0.05  # < 5% of one core over 1 s of waiting
    _finish(proc)


HOSTILE = r"""
import os, socket, sys
from winipc._backends import os_backend as B
from winipc.pipes import _fast
path, how = sys.argv[1], sys.argv[2]
s = B.connect_unix(path, sock=_fast.client_socket())
if how == "garbage":
    s.sendall(b"hello, I am not a region")
elif how == "unsealed":
    fd = os.memfd_create("fake")
    os.ftruncate(fd, 1 << 20)
    socket.send_fds(s, [_fast.OFFER_FRAME], [fd])
elif how == "file":
    fd = os.open(sys.executable, os.O_RDONLY)
    socket.send_fds(s, [_fast.OFFER_FRAME], [fd])
print("sent", flush=True)
try:
    print("closed" if s.recv(1) == b"" else "served", flush=True)
except ConnectionResetError:
    print("closed", flush=True)
"""


@pytest.mark.parametrize("how", ["garbage", "unsealed", "file"])
def test_hostile_offer_is_refused_and_the_next_client_served(how: str) -> None:
    name = rf"\\.\pipe\fp-hostile-{how}"
    with pipes.PipeInstance(name, message=True, max_instances=1) as inst:
        path = inst.socket_path
        assert path is not None and path.endswith(_fast.SLOT_SUFFIX)
        bad = run_py(HOSTILE, path, how)
        wait_line(bad, "sent")
        # the instance refuses that client and goes on listening
        good: list[pipes.PipeConnection] = []
        t = threading.Thread(target=lambda: good.append(_connect_when_free(name)))
        t.start()
        inst.connect(timeout=10)
        t.join(10)
        assert wait_line(bad, "closed") == "closed"
        bad.communicate(timeout=10)
        assert inst.fast_path and good[0].fast_path
        good[0].write(b"fine")
        assert inst.recv(timeout=10) == b"fine"
        good[0].close()


def _connect_when_free(name: str) -> pipes.PipeConnection:
    deadline = time.monotonic() + 10
    while True:
        try:
            return pipes.connect(name, read_message=True)
        except W.PipeBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_duplicated_fast_path_client_works_in_the_child() -> None:
    name = r"\\.\pipe\fp-dup"
    proc = _server(name, "echo")
    with pipes.connect(name, read_message=True) as c:
        assert c.fast_path
        c.write(b"before")
        assert c.recv(timeout=10) == b"before"
        fds, meta = c._export()
        copy = pipes.PipeConnection._import([os.dup(fd) for fd in fds], meta)
        assert copy.fast_path
        c.close()  # the copy carries on alone, as after handing a handle over
        copy.write(b"after")
        assert copy.recv(timeout=10) == b"after"
        copy.close()
    _finish(proc)


def test_plain_socket_peer_on_a_fast_path_instance() -> None:
    name = r"\\.\pipe\fp-plain"
    with pipes.PipeInstance(name, max_instances=1) as inst:  # byte-type
        path = inst.socket_path
        assert path is not None
        s = B.connect_unix(path)
        inst.connect(timeout=10)
        assert not inst.fast_path
        s.sendall(b"raw bytes")
        assert inst.read_exact(9, timeout=10) == b"raw bytes"
        inst.write(b"back")
        assert s.recv(4) == b"back"
        s.close()


def test_socket_path_suite_with_the_fast_path_off() -> None:
    """The pipe suites again with WINIPC_FASTPATH=0: the plain socket format stays right."""
    env = dict(os.environ, WINIPC_FASTPATH="0", PYTHONPATH=SRC)
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         os.path.join(here, "test_pipes.py"), os.path.join(here, "test_win32.py")],
        env=env, capture_output=True, text=True, timeout=110,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]

