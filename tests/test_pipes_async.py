"""asyncio named pipes: AsyncPipeServer and AsyncPipeConnection against real processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import time
from typing import Any

import pytest

from winipc import errors as W
from winipc._core import namespace
from winipc.pipes import PipeInstance
from winipc.pipes import connect as sync_connect
from winipc.pipes._async import AsyncPipeConnection
from winipc.pipes._async_server import AsyncPipeServer

from conftest import run_py, wait_line

NAME = r"\\.\pipe\async-test"


def _start(procs: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    p = run_py(code, *args)
    procs.append(p)
    return p


def _finish(p: subprocess.Popen[str], timeout: float = 20.0) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


async def _line(p: subprocess.Popen[str], prefix: str) -> str:
    return await asyncio.to_thread(wait_line, p, prefix)


# --------------------------------------------------------------------------- many clients

ASYNC_SERVER_MANY = r"""
import asyncio, sys
from winipc.pipes._async_server import AsyncPipeServer

name, n = sys.argv[1], int(sys.argv[2])

async def main():
    state = {"now": 0, "peak": 0, "done": 0}
    everyone, finished = asyncio.Event(), asyncio.Event()

    async def handler(conn):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            assert await conn.recv() == b"hello"
            if state["peak"] >= n:
                everyone.set()
            # a barrier: only a server holding all n clients at once gets past it
            await asyncio.wait_for(everyone.wait(), 15)
            await conn.send(b"go %d" % conn.peer_pid)
            async for msg in conn:
                await conn.send(msg[::-1])
        finally:
            state["now"] -= 1
            state["done"] += 1
            if state["done"] == n:
                finished.set()

    server = AsyncPipeServer(name, handler, message=True, max_instances=n + 2, listeners=4)
    async with server:
        print("READY", flush=True)
        serving = asyncio.ensure_future(server.serve_forever())
        await finished.wait()
        server.close()
        await serving
        await server.wait_closed()
    print("DONE", state["peak"], server.instances, flush=True)

asyncio.run(main())
"""

SYNC_CLIENT = r"""
import os, sys, time
from winipc import errors as W
from winipc.pipes import connect, wait_named_pipe

name, seed = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 15
while True:
    try:
        conn = connect(name, read_message=True)
        break
    except W.PipeBusy:
        wait_named_pipe(name, max(0.0, deadline - time.monotonic()))
with conn:
    go = conn.transact(b"hello")
    assert go == b"go %d" % os.getpid(), go
    for i in range(20):
        payload = os.urandom(1 + (seed * 7919 + i * 104729) % 150000)
        assert conn.transact(payload, 1 << 20) == payload[::-1]
print("OK", flush=True)
"""

ASYNC_CLIENT = r"""
import asyncio, os, sys
from winipc.pipes._async import AsyncPipeConnection

name, seed = sys.argv[1], int(sys.argv[2])

async def main():
    async with await AsyncPipeConnection.connect(name, read_message=True, timeout=15) as conn:
        go = await conn.transact(b"hello")
        assert go == b"go %d" % os.getpid(), go
        for i in range(20):
            payload = os.urandom(1 + (seed * 7919 + i * 104729) % 150000)
            assert await conn.transact(payload, 1 << 20) == payload[::-1]
    print("OK", flush=True)

asyncio.run(main())
"""


def test_async_server_serves_many_client_processes_at_once(procs: list[Any]) -> None:
    n = 20
    server = _start(procs, ASYNC_SERVER_MANY, NAME, str(n))
    wait_line(server, "READY")
    clients = [
        _start(procs, SYNC_CLIENT if i % 2 else ASYNC_CLIENT, NAME, str(i)) for i in range(n)
    ]
    for c in clients:
        assert "OK" in _finish(c, 30)
    out = _finish(server, 15)
    done = [line for line in out.splitlines() if line.startswith("DONE")]
    assert done == [f"DONE {n} 0"], out  # all n held at once; every instance closed


# --------------------------------------------------------------------------- sync server

SYNC_SERVER = r"""
import sys
from winipc.pipes import PipeInstance

with PipeInstance(sys.argv[1], message=True, max_instances=1) as inst:
    print("READY", flush=True)
    inst.connect(timeout=10)
    while True:
        msg = inst.recv()
        if msg == b"disconnect":
            inst.disconnect()  # DisconnectNamedPipe
            break
        inst.send(msg.upper())
    inst.connect(timeout=10)
    inst.send(inst.recv().upper())
    inst.flush(5)
print("DONE", flush=True)
"""


def test_async_client_against_sync_server(procs: list[Any]) -> None:
    server = _start(procs, SYNC_SERVER, NAME)
    wait_line(server, "READY")

    async def main() -> None:
        conn = await AsyncPipeConnection.connect(NAME, read_message=True)
        assert conn.peer_pid == server.pid
        assert conn.is_client and conn.message_type
        assert await conn.transact(b"abc") == b"ABC"
        big = os.urandom(300_000)
        assert await conn.transact(big, 1 << 20) == big.upper()
        await conn.send(b"disconnect")
        with pytest.raises(W.PipeNotConnected) as info:
            await conn.recv(timeout=5)
        assert info.value.winerror == W.ERROR_PIPE_NOT_CONNECTED
        with pytest.raises(W.PipeNotConnected):
            await conn.send(b"more")
        await conn.aclose()
        with pytest.raises(W.InvalidHandle):
            await conn.recv()

        async with await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5) as c2:
            assert await c2.transact(b"q") == b"Q"
            await _line(server, "DONE")
            with pytest.raises(W.BrokenPipe) as broken:
                await c2.recv(timeout=5)
            assert type(broken.value) is W.BrokenPipe
            assert broken.value.winerror == W.ERROR_BROKEN_PIPE
            with pytest.raises(W.PipeClosing) as closing:
                await c2.send(b"x")
            assert closing.value.winerror == W.ERROR_NO_DATA

    asyncio.run(main())
    _finish(server)


# --------------------------------------------------------------------------- byte mode

ASYNC_ECHO_SERVER = r"""
import asyncio, sys
from winipc.pipes._async_server import AsyncPipeServer

name, message, clients = sys.argv[1], sys.argv[2] == "message", int(sys.argv[3])

async def main():
    served = 0
    finished = asyncio.Event()

    async def handler(conn):
        nonlocal served
        try:
            if message:
                async for msg in conn:
                    reply = bytes(range(256)) * (int(msg) // 256 + 1)
                    await conn.send(reply[: int(msg)])
            else:
                while True:
                    await conn.write(await conn.read(65536))
        finally:
            served += 1
            if served == clients:
                finished.set()

    async with AsyncPipeServer(name, handler, message=message, max_instances=4) as server:
        print("READY", flush=True)
        await finished.wait()
    print("DONE", flush=True)

asyncio.run(main())
"""

SYNC_BYTE_CLIENT = r"""
import os, sys
from winipc.pipes import connect

with connect(sys.argv[1]) as conn:
    data = os.urandom(500_000)
    for i in range(0, len(data), 70_000):
        conn.write(data[i : i + 70_000])
        assert conn.read_exact(len(data[i : i + 70_000])) == data[i : i + 70_000]
print("OK", flush=True)
"""


def test_byte_mode_echo(procs: list[Any]) -> None:
    server = _start(procs, ASYNC_ECHO_SERVER, NAME, "byte", "3")
    wait_line(server, "READY")
    sync_client = _start(procs, SYNC_BYTE_CLIENT, NAME)

    async def one(seed: int) -> None:
        conn = await AsyncPipeConnection.connect(NAME, timeout=10)
        async with conn:
            assert not conn.message_type
            with pytest.raises(W.InvalidParameter):
                conn.set_read_mode(True)
            data = os.urandom(1_000_000 + seed)

            async def writer() -> None:
                for i in range(0, len(data), 33_333):
                    await conn.write(data[i : i + 33_333])

            sender = asyncio.ensure_future(writer())
            got = bytearray()
            while len(got) < len(data) - 10:
                got += await conn.read(65536, timeout=10)
            await sender
            got += await conn.read_exact(len(data) - len(got), timeout=10)
            assert bytes(got) == data
            assert conn.peek(5).total_available == 0
            assert await conn.write(b"") == 0

    async def main() -> None:
        await asyncio.gather(one(1), one(2))

    asyncio.run(main())
    assert "OK" in _finish(sync_client)
    _finish(server)


# --------------------------------------------------------------------------- message reads


def test_more_data_in_message_read_mode(procs: list[Any]) -> None:
    server = _start(procs, ASYNC_ECHO_SERVER, NAME, "message", "2")
    wait_line(server, "READY")
    ref = bytes(range(256)) * 4

    async def main() -> None:
        async with await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5) as c:
            await c.send(b"10")
            with pytest.raises(W.MoreData) as info:
                await c.read(4)
            assert info.value.data == ref[:4] and info.value.winerror == W.ERROR_MORE_DATA
            with pytest.raises(W.MoreData) as info:
                await c.read(4)
            assert info.value.data == ref[4:8]
            assert await c.read(4) == ref[8:10]
            assert await c.transact(b"0") == b""  # an empty message is a message
            with pytest.raises(W.MoreData) as info:
                await c.transact(b"1000", 10)
            assert info.value.data == ref[:10]
            assert await c.recv() == ref[10:1000]  # the rest of that message
            await c.send(b"5")
            for _ in range(500):
                peeked = c.peek(3)
                if peeked.total_available:
                    break
                await asyncio.sleep(0.01)
            assert (peeked.data, peeked.total_available, peeked.left_this_message) == (
                ref[:3],
                5,
                2,
            )
            c.set_read_mode(False)  # byte-read mode: parts, no MoreData
            assert await c.read(3) == ref[:3]
            assert await c.read(100) == ref[3:5]
            # a peek that takes the data a pending recv waits for must wake that recv
            pending = asyncio.ensure_future(c.recv())
            await asyncio.sleep(0.05)
            await c.send(b"7")
            time.sleep(0.3)  # blocks the loop: the reply arrives while recv cannot run
            assert c.peek(7).data == ref[:7]
            assert await asyncio.wait_for(pending, 2) == ref[:7]
            with pytest.raises(W.WinIPCError) as bad:
                await c.transact(b"1")
            assert bad.value.winerror == W.ERROR_BAD_PIPE

        small = await AsyncPipeConnection.connect(NAME, max_message_size=100, timeout=5)
        async with small:
            await small.send(b"1000")
            with pytest.raises(W.InvalidData):
                await small.recv(timeout=5)
            with pytest.raises(W.InvalidData):  # and it stays refused
                await small.recv(timeout=5)

    asyncio.run(main())
    _finish(server)


# --------------------------------------------------------------------------- killed server

PARTIAL_SERVER = r"""
import sys, time
from winipc._wire import framing
from winipc.pipes import PipeInstance

with PipeInstance(sys.argv[1], message=True) as inst:
    print("READY", flush=True)
    inst.connect(timeout=10)
    inst.send(b"complete")
    inst.socket.sendall(framing.message_header(100_000) + b"p" * 50_000)
    print("PARTIAL", flush=True)
    time.sleep(60)
"""

BIG_SEND_SERVER = r"""
import asyncio, sys
from winipc.pipes._async_server import AsyncPipeServer

async def handler(conn):
    await conn.send(b"hello")
    print("SENDING", flush=True)
    await conn.send(b"x" * (32 << 20))
    print("SENT-ALL", flush=True)
    await asyncio.sleep(60)

async def main():
    async with AsyncPipeServer(sys.argv[1], handler, message=True) as server:
        print("READY", flush=True)
        await server.serve_forever()

asyncio.run(main())
"""


def _assert_cleaned() -> None:
    removed = namespace.clean()  # the killed server's pipe is a dead leftover
    assert [info.type for info in removed] == ["pipe"]


def test_broken_pipe_when_server_killed_mid_message(procs: list[Any]) -> None:
    server = _start(procs, PARTIAL_SERVER, NAME)
    wait_line(server, "READY")

    async def main() -> None:
        async with await AsyncPipeConnection.connect(NAME, timeout=5) as conn:
            assert await conn.recv(timeout=5) == b"complete"
            await _line(server, "PARTIAL")
            pending = asyncio.ensure_future(conn.recv())
            await asyncio.sleep(0.3)
            assert not pending.done()  # half a message is not a message
            assert conn.peek().total_available == 0
            killed = time.monotonic()
            server.kill()
            with pytest.raises(W.BrokenPipe) as info:
                await asyncio.wait_for(pending, 1.0)
            assert time.monotonic() - killed < 1.0
            assert type(info.value) is W.BrokenPipe
            assert info.value.winerror == W.ERROR_BROKEN_PIPE
            with pytest.raises(W.BrokenPipe):
                await conn.recv()

    asyncio.run(main())
    server.wait(5)
    _assert_cleaned()


def test_broken_pipe_when_async_server_killed_mid_send(procs: list[Any]) -> None:
    server = _start(procs, BIG_SEND_SERVER, NAME)
    wait_line(server, "READY")

    async def main() -> None:
        async with await AsyncPipeConnection.connect(NAME, timeout=5) as conn:
            assert await conn.recv(timeout=5) == b"hello"
            await _line(server, "SENDING")
            await asyncio.sleep(0.3)  # the server is stuck in the middle of 32 MiB
            killed = time.monotonic()
            server.kill()
            with pytest.raises(W.BrokenPipe) as info:
                await asyncio.wait_for(conn.recv(), 1.0)
            assert time.monotonic() - killed < 1.0
            assert type(info.value) is W.BrokenPipe

    asyncio.run(main())
    out, _err = server.communicate(timeout=5)
    assert "SENT-ALL" not in out
    _assert_cleaned()


# --------------------------------------------------------------------------- cancellation

MSG = bytes(range(256)) * 1000
HALF = 100_000

CANCEL_SERVER = rf"""
import hashlib, sys, time
from winipc import errors as W
from winipc._wire import framing
from winipc.pipes import PipeInstance

MSG = bytes(range(256)) * 1000
with PipeInstance(sys.argv[1], message=True) as inst:
    print("READY", flush=True)
    inst.connect(timeout=10)
    while True:
        try:
            cmd = inst.recv()
        except W.BrokenPipe:
            break
        if cmd == b"half":
            inst.socket.sendall(framing.message_header(len(MSG)) + MSG[:{HALF}])
        elif cmd == b"rest":
            inst.socket.sendall(MSG[{HALF}:])
        elif cmd == b"big":
            time.sleep(0.5)  # let the client's write block, and be cancelled
            big = inst.recv()
            inst.send(hashlib.sha256(big).hexdigest().encode() + b" %d" % len(big))
        else:
            inst.send(b"echo:" + cmd)
print("DONE", flush=True)
"""


def test_cancellation_leaves_the_connection_whole(procs: list[Any]) -> None:
    server = _start(procs, CANCEL_SERVER, NAME)
    wait_line(server, "READY")

    async def cancel(task: asyncio.Future[Any]) -> None:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def main() -> None:
        conn = await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5)
        # a recv waiting on an empty pipe
        pending = asyncio.ensure_future(conn.recv())
        await asyncio.sleep(0.05)
        await cancel(pending)
        assert await conn.transact(b"ping") == b"echo:ping"
        # a recv holding half a message
        await conn.send(b"half")
        pending = asyncio.ensure_future(conn.recv())
        await asyncio.sleep(0.3)
        assert not pending.done()
        await cancel(pending)
        assert conn.peek().total_available == 0
        await conn.send(b"rest")
        assert await conn.recv(timeout=5) == MSG  # whole, from its first byte
        # a time-out loses nothing either
        with pytest.raises(W.SemTimeout):
            await conn.recv(timeout=0.1)
        assert await conn.transact(b"pong") == b"echo:pong"
        # a write cancelled half-way still sends the whole message, then the next one
        await conn.send(b"big")
        big = bytearray(os.urandom(16 << 20))
        digest = hashlib.sha256(big).hexdigest().encode() + b" %d" % len(big)
        writing = asyncio.ensure_future(conn.write(big))
        await asyncio.sleep(0.1)
        assert not writing.done()
        await cancel(writing)
        big[:] = bytes(len(big))  # the caller's buffer is free again
        await conn.send(b"after")
        assert await conn.recv(timeout=10) == digest
        assert await conn.recv(timeout=5) == b"echo:after"
        # closing the handle ends a pending recv with ERROR_OPERATION_ABORTED
        pending = asyncio.ensure_future(conn.recv())
        await asyncio.sleep(0.05)
        conn.close()
        with pytest.raises(W.OperationAborted):
            await pending

    asyncio.run(main())
    assert "DONE" in _finish(server)


# --------------------------------------------------------------------------- server life cycle

HOLDING_CLIENT = r"""
import sys, time
from winipc import errors as W
from winipc.pipes import connect

with connect(sys.argv[1], read_message=True) as conn:
    assert conn.transact(b"hold") == b"held"
    print("HELD", flush=True)
    try:
        conn.recv(timeout=20)
    except W.BrokenPipe as exc:
        print("GONE", type(exc).__name__, exc.winerror, flush=True)
"""


def test_server_limits_errors_and_shutdown(procs: list[Any]) -> None:
    errors: list[dict[str, Any]] = []

    async def handler(conn: AsyncPipeConnection) -> None:
        msg = await conn.recv()
        if msg == b"boom":
            raise ValueError("handler bug")
        if msg == b"hold":
            await conn.send(b"held")
            await asyncio.sleep(60)
        await conn.send(b"ok")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        server = AsyncPipeServer(NAME, handler, message=True, max_instances=1, first_instance=True)
        async with server:
            with pytest.raises(W.AccessDenied):
                await AsyncPipeServer(NAME, handler, message=True, first_instance=True).start()
            holder = _start(procs, HOLDING_CLIENT, NAME)
            await _line(holder, "HELD")
            assert server.active_clients == 1 and server.instances == 1
            with pytest.raises(W.PipeBusy):  # max_instances=1: the only one is busy
                sync_connect(NAME)
            began = time.monotonic()
            with pytest.raises(W.PipeBusy):
                await AsyncPipeConnection.connect(NAME, timeout=0.2)
            assert time.monotonic() - began >= 0.2
            server.abort_clients()  # the held client is dropped, the instance listens again
            line = await _line(holder, "GONE")
            assert line.split()[1:] == ["PipeNotConnected", "233"]  # DisconnectNamedPipe
            async with await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5) as c:
                await c.send(b"boom")
                with pytest.raises(W.BrokenPipe):
                    await c.recv(timeout=5)
            async with await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5) as c:
                assert c.peer_pid == os.getpid()
                assert await c.transact(b"x") == b"ok"
            serving = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0)
            server.close()
            await serving
            await server.wait_closed()
            assert server.instances == 0 and not server.is_serving()
            with pytest.raises(W.FileNotFound):
                await AsyncPipeConnection.connect(NAME)

    asyncio.run(main())
    assert [str(e.get("exception")) for e in errors] == ["handler bug"]


def test_sync_instance_and_async_client_share_a_pipe() -> None:
    """Needs no second process: the sync server end runs in a thread."""

    async def main() -> None:
        with PipeInstance(NAME, message=True) as inst:
            server = asyncio.to_thread(lambda: (inst.connect(5), inst.send(inst.recv()[::-1])))
            pending = asyncio.ensure_future(server)
            async with await AsyncPipeConnection.connect(NAME, read_message=True, timeout=5) as c:
                assert await c.transact(b"abc", timeout=5) == b"cba"
            await pending

    asyncio.run(main())


def test_disconnect_discards_what_the_client_did_not_read(procs: list[Any]) -> None:
    async def handler(conn: AsyncPipeConnection) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # far more than the buffers hold
            await asyncio.wait_for(conn.send(b"z" * (4 << 20)), 0.2)

    async def main() -> None:
        server = AsyncPipeServer(NAME, handler, message=True, flush_timeout=0.2)
        async with server:
            conn = await AsyncPipeConnection.connect(NAME, timeout=5)
            async with conn:
                while not server.active_clients:
                    await asyncio.sleep(0.01)
                while server.active_clients:  # the flush times out, then DisconnectNamedPipe
                    await asyncio.sleep(0.05)
                with pytest.raises(W.PipeNotConnected):
                    await conn.recv(timeout=5)

    asyncio.run(main())
