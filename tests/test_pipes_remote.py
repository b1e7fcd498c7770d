"""Remote named pipes (\\\\server\\pipe\\name over TLS), across real processes.

The server side runs in child processes; 127.0.0.2 stands for the other machine (it is not
one of the names winipc treats as this machine, and Linux answers on all of 127/8). Each
test gets a pipe port of its own.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winipc import errors as W
from winipc import pipes
from winipc._core import namespace
from winipc._wire import pipe_remote as R
from winipc.pipes import _remote

from conftest import free_port, run_py, wait_line

HOST = "127.0.0.2"

SERVER = r"""
import json, os, signal, ssl, sys
from winipc import errors as W, pipes
from winipc.pipes import _remote
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the fixture's stop: close every handle
name, ca, cert, clients, message, mode, action, count, gateway = sys.argv[1:10]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
insts = [pipes.PipeInstance("\\\\.\\pipe\\" + name, message=message == "1", open_mode=int(mode),
                            reject_remote_clients=False, tls=ctx, remote_clients=clients.split(","))
         for _ in range(int(count))]
inst = insts[0]
import time
deadline = time.monotonic() + 5
while gateway == "wait" and not _remote.gateway_held() and time.monotonic() < deadline:
    time.sleep(0.01)
print("ready", json.dumps({"pid": os.getpid(), "held": _remote.gateway_held()}), flush=True)
while True:
    inst.connect()
    r = inst.remote
    print("client", json.dumps({"pid": inst.client_pid, "computer": inst.client_computer_name,
                                "principal": r.principal, "address": r.address[0]}), flush=True)
    try:
        if action == "echo":
            while True:
                data = inst.recv() if inst.message_type else inst.read(65536)
                inst.write(data.upper() if inst.message_type else data)
        elif action == "disconnect":  # as Microsoft's sample server: write, FlushFileBuffers, disconnect
            inst.write(inst.recv().upper())
            inst.flush(20)
            print("flushed", flush=True)
            inst.disconnect()
            print("disconnected", flush=True)
            continue
        elif action == "sink":
            total = 0
            while True:
                total += len(inst.read(65536))
        elif action == "hold":
            sys.stdin.readline()
    except W.BrokenPipe as exc:
        print("gone", W.error_name(exc.winerror), flush=True)
    except W.WinIPCError as exc:
        print("error", type(exc).__name__, flush=True)
    inst.disconnect()
"""


class Pki:
    def __init__(self, base: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.base = base
        self.ca_file = str(base / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.server_file = self._write("server", self.ca.issue_cert(HOST, "localhost"))

    def _write(self, name: str, leaf: Any) -> str:
        path = self.base / f"{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        return str(path)

    def client(self, cn: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if cn is not None:
            self.ca.issue_cert(f"{cn}.example", common_name=cn).configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    p = free_port()
    monkeypatch.setenv("WINIPC_PIPE_PORT", str(p))  # server processes inherit it
    return p


def _serve(procs: list[subprocess.Popen[str]], pki: Pki, name: str, *, clients: str = "alice",
           message: bool = True, mode: int = 3, action: str = "echo", count: int = 1,
           wait_gateway: bool = True) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    p = run_py(SERVER, name, pki.ca_file, pki.server_file, clients, "1" if message else "0", str(mode), action,
               str(count), "wait" if wait_gateway else "no", stdin=subprocess.PIPE)
    procs.append(p)
    return p, _line(p, "ready")


_pending: dict[int, bytes] = {}


def _line(p: subprocess.Popen[str], expect: str, timeout: float = 20.0) -> Any:
    """The next line of ``p`` that starts with ``expect``, decoded (JSON after the word, or text).

    Reads the pipe unbuffered, so lines that arrive together are all seen.
    """
    assert p.stdout is not None
    fd = p.stdout.fileno()
    deadline = time.monotonic() + timeout
    while True:
        buf = _pending.get(fd, b"")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _pending[fd] = buf
            text = line.decode()
            if text.startswith(expect):
                rest = text.split(" ", 1)[1].strip() if " " in text.strip() else ""
                return json.loads(rest) if rest.startswith("{") else rest
        left = deadline - time.monotonic()
        assert left > 0, f"no line starting with {expect!r} within {timeout} s"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"the server ended before {expect!r}: {p.stderr.read() if p.stderr else ''}"
            _pending[fd] = buf + chunk


def test_message_round_trip_identifies_both_ends(port: int, pki: Pki, procs: list[subprocess.Popen[str]]) -> None:
    p, info = _serve(procs, pki, "orders")
    assert info["held"]
    with pipes.connect(rf"\\{HOST}\pipe\Orders", read_message=True, tls=pki.client("alice")) as c:
        seen = _line(p, "client")
        assert seen == {"pid": os.getpid(), "computer": socket.gethostname(), "principal": "cn:alice",
                        "address": "127.0.0.1"}
        assert c.remote is not None and c.remote.pid == info["pid"] == c.peer_pid
        assert (c.remote.computer_name, c.remote.address) == (HOST, (HOST, port))
        for msg in (b"a", b"", b"hello" * 20_000):
            assert c.transact(msg, size=1 << 20) == msg.upper()
        c.write(b"one")
        c.write(b"two")  # message boundaries survive the network
        assert (c.recv(), c.recv()) == (b"ONE", b"TWO")
        with pytest.raises(W.NotSupported):
            c.send_handle(c)
    assert _line(p, "gone") == "ERROR_BROKEN_PIPE"  # the client closed: the server's read says so


def test_code_written_for_windows_opens_a_remote_pipe(port: int, pki: Pki,
                                                     procs: list[subprocess.Popen[str]]) -> None:
    from winipc.win32 import pywintypes, win32file, win32pipe

    p, info = _serve(procs, pki, "legacy")
    pipes.set_default_tls(pki.client("alice"))  # CreateFile has no place for a context
    try:
        h = win32file.CreateFile(rf"\\{HOST}\pipe\legacy", win32file.GENERIC_READ | win32file.GENERIC_WRITE, 0,
                                 None, win32file.OPEN_EXISTING, 0, None)
        win32pipe.SetNamedPipeHandleState(h, win32pipe.PIPE_READMODE_MESSAGE, None, None)
        win32file.WriteFile(h, b"pywin32")
        assert win32file.ReadFile(h, 100) == (0, b"PYWIN32")
        assert win32pipe.GetNamedPipeServerProcessId(h) == info["pid"]
        with pytest.raises(pywintypes.error) as err:
            win32pipe.GetNamedPipeClientComputerName(h)  # a client's end
        assert err.value.winerror == W.ERROR_PIPE_LOCAL
        h.Close()
    finally:
        pipes.set_default_tls(None)
    assert _line(p, "client")["principal"] == "cn:alice"


def test_byte_pipe_moves_megabytes_both_ways_unchanged(port: int, pki: Pki,
                                                      procs: list[subprocess.Popen[str]]) -> None:
    _serve(procs, pki, "bytes", message=False)
    data = os.urandom(6 * 1024 * 1024 + 17)
    got = bytearray()
    with pipes.connect(rf"\\{HOST}\pipe\bytes", tls=pki.client("alice")) as c:
        def reader() -> None:
            while len(got) < len(data):
                got.extend(c.read(1 << 20, timeout=30))

        t = threading.Thread(target=reader)
        t.start()
        view = memoryview(data)
        for i in range(0, len(data), 100_003):  # writes that straddle every record boundary
            c.write(view[i:i + 100_003])
        t.join(60)
        assert not t.is_alive()
    assert bytes(got) == data


def test_remote_clients_are_refused_unless_admitted(port: int, pki: Pki,
                                                    procs: list[subprocess.Popen[str]]) -> None:
    p, _ = _serve(procs, pki, "guarded", clients="alice,Carol")
    _serve(procs, pki, "inbound", mode=1)
    local_only = pipes.PipeInstance(r"\\.\pipe\localonly")
    try:
        with pytest.raises(W.AccessDenied):  # no certificate: no identity
            pipes.connect(rf"\\{HOST}\pipe\guarded", tls=pki.client(None))
        with pytest.raises(W.AccessDenied):  # a certificate the pipe does not name
            pipes.connect(rf"\\{HOST}\pipe\guarded", tls=pki.client("bob"))
        with pytest.raises(W.AccessDenied):  # a client that does not trust the server
            pipes.connect(rf"\\{HOST}\pipe\guarded", tls=ssl.create_default_context())
        with pytest.raises(W.FileNotFound):
            pipes.connect(rf"\\{HOST}\pipe\nosuchpipe", tls=pki.client("alice"))
        with pytest.raises(W.AccessDenied):  # PIPE_REJECT_REMOTE_CLIENTS (the default)
            pipes.connect(rf"\\{HOST}\pipe\localonly", tls=pki.client("alice"))
        with pytest.raises(W.AccessDenied):  # an inbound pipe cannot be opened for reading
            pipes.connect(rf"\\{HOST}\pipe\inbound", tls=pki.client("alice"))
        with pytest.raises(W.InvalidParameter):
            pipes.connect(rf"\\{HOST}\pipe\guarded", tls=pki.client("alice"), expect_server_uid=0)
        with pipes.connect(rf"\\{HOST}\pipe\guarded", read_message=True, tls=pki.client("carol")) as c:
            assert c.transact(b"still serving") == b"STILL SERVING"  # common names compare case-insensitively
        assert _line(p, "client")["principal"] == "cn:carol"
        with pipes.connect(rf"\\{HOST}\pipe\inbound", read=False, tls=pki.client("alice")) as c:
            c.write(b"in")
    finally:
        local_only.close()


def test_busy_instances_and_wait_named_pipe(port: int, pki: Pki, procs: list[subprocess.Popen[str]]) -> None:
    p, _ = _serve(procs, pki, "single", action="hold")
    name = rf"\\{HOST}\pipe\single"
    pipes.wait_named_pipe(name, 5.0)  # an instance listens
    first = pipes.connect(name, tls=pki.client("alice"))
    _line(p, "client")
    with pytest.raises(W.PipeBusy):
        pipes.connect(name, tls=pki.client("alice"))
    t0 = time.monotonic()
    with pytest.raises(W.SemTimeout):
        pipes.wait_named_pipe(name, 0.3)
    assert time.monotonic() - t0 >= 0.3  # never early
    with pytest.raises(W.FileNotFound):
        pipes.wait_named_pipe(rf"\\{HOST}\pipe\absent", 1.0)

    def release() -> None:
        time.sleep(0.3)
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        first.close()

    t = threading.Thread(target=release)
    t.start()
    pipes.wait_named_pipe(name, 10.0)  # wakes when the server listens again
    t.join()
    with pipes.connect(name, tls=pki.client("alice")) as again:
        assert again.remote is not None


def test_nothing_on_the_port_is_bad_net_path(port: int, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(W.BadNetPath):
        pipes.connect(rf"\\{HOST}\pipe\x", tls=pki.client("alice"))
    with pytest.raises(W.BadNetPath):
        pipes.wait_named_pipe(rf"\\{HOST}\pipe\x", 0.1)
    monkeypatch.setenv("WINIPC_PIPE_PORT", "0")
    with pytest.raises(W.NotSupported):
        pipes.connect(rf"\\{HOST}\pipe\x", tls=pki.client("alice"))
    monkeypatch.setenv("WINIPC_PIPE_PORT", "99999")
    with pytest.raises(W.InvalidParameter):
        pipes.connect(rf"\\{HOST}\pipe\x", tls=pki.client("alice"))


def test_disconnect_reaches_the_client_as_pipe_not_connected(port: int, pki: Pki,
                                                            procs: list[subprocess.Popen[str]]) -> None:
    p, _ = _serve(procs, pki, "drop", action="disconnect")
    with pipes.connect(rf"\\{HOST}\pipe\drop", read_message=True, tls=pki.client("alice")) as c:
        c.write(b"bye")
        time.sleep(0.5)
        with pytest.raises(AssertionError):  # flush waits while this process has not read the reply
            _line(p, "flushed", timeout=0.5)
        assert c.recv() == b"BYE"
        _line(p, "flushed")
        _line(p, "disconnected")
        with pytest.raises(W.PipeNotConnected):
            c.recv(timeout=10)
    with pipes.connect(rf"\\{HOST}\pipe\drop", read_message=True, tls=pki.client("alice")) as c:
        assert c.transact(b"next") == b"NEXT"  # the instance serves the next client


def test_a_killed_client_is_a_broken_pipe_to_the_server(port: int, pki: Pki,
                                                       procs: list[subprocess.Popen[str]]) -> None:
    p, _ = _serve(procs, pki, "victim", action="sink", message=False)
    client = run_py(r"""
import ssl, sys
from winipc import pipes
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.load_cert_chain(sys.argv[2])
c = pipes.connect("\\\\127.0.0.2\\pipe\\victim", tls=ctx)
c.write(b"x" * 100000)
print("sent", flush=True)
sys.stdin.readline()
""", pki.ca_file, pki._write("alice2", pki.ca.issue_cert("a.example", common_name="alice")), stdin=subprocess.PIPE)
    try:
        wait_line(client, "sent", timeout=20)
        _line(p, "client")
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        assert _line(p, "gone") == "ERROR_BROKEN_PIPE"
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate(timeout=10)


def test_another_process_holds_the_port_and_a_survivor_takes_it_over(
        port: int, pki: Pki, procs: list[subprocess.Popen[str]], winipc_root: Path) -> None:
    holder, info_a = _serve(procs, pki, "first")
    assert info_a["held"]
    _other, info_b = _serve(procs, pki, "second", wait_gateway=False)
    assert not info_b["held"]
    with pipes.connect(rf"\\{HOST}\pipe\second", read_message=True, tls=pki.client("alice")) as c:
        assert c.transact(b"routed") == b"ROUTED"  # the holder passed the connection on
        assert c.remote is not None and c.remote.pid == info_b["pid"]
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    namespace.clean()  # the killed holder's pipe (its intake socket is swept below)
    deadline = time.monotonic() + 15
    while True:
        try:
            with pipes.connect(rf"\\{HOST}\pipe\second", read_message=True, tls=pki.client("alice")) as c:
                assert c.transact(b"again") == b"AGAIN"
            break
        except W.BadNetPath:
            assert time.monotonic() < deadline, "no process took the pipe port over"
            time.sleep(0.1)
    _remote.sweep()  # the killed holder's intake socket goes, the survivor's stays
    left = os.listdir(winipc_root / "pipe-remote")
    assert len(left) == 1 and f".{info_b['pid']}." in left[0], left


def test_rpc_over_ncacn_np_from_another_machine(port: int, pki: Pki, tmp_path: Path) -> None:
    from rpc_ifaces import Types
    from test_rpc import Server
    from winipc import rpc

    key_file = tmp_path / "server.key"
    cert_file = tmp_path / "server.crt"
    leaf = pki.ca.issue_cert(HOST)
    leaf.private_key_pem.write_to_path(str(key_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    s = Server(r"ncacn_np:[\pipe\rpcremote]", "--tls", f"{cert_file}:{key_file}:{pki.ca_file}")
    try:
        binding = rf"ncacn_np:{HOST}[\pipe\rpcremote]"
        with rpc.bind(binding, tls=pki.client("alice"), auth=rpc.AuthInfo(rpc.AuthLevel.PKT_PRIVACY)) as b:
            me = b.client(Types).whoami()
            assert (me["principal"], me["level"], me["local"]) == ("cn:alice", 6, False)
            assert b.client(Types).echo_bytes(b"z" * 300_000) == b"z" * 300_000
        with pytest.raises(W.AccessDenied):
            rpc.bind(binding, tls=pki.client(None)).client(Types).echo_int(1)
    finally:
        s.stop()


def test_local_queries_and_arguments() -> None:
    with pipes.PipeInstance(r"\\.\pipe\plain") as inst, pipes.connect(r"\\.\pipe\plain") as c:
        inst.connect(5)
        assert c.remote is None and inst.remote is None
        with pytest.raises(W.PipeLocal):
            _ = inst.client_computer_name
    with pytest.raises(W.InvalidParameter, match="tls"):
        pipes.PipeInstance(r"\\.\pipe\p", reject_remote_clients=False, remote_clients="*")
    with pytest.raises(W.InvalidParameter, match="CERT_REQUIRED"):
        pipes.PipeInstance(r"\\.\pipe\p", reject_remote_clients=False,
                           tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), remote_clients="*")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with pytest.raises(W.InvalidParameter, match="remote_clients"):
        pipes.PipeInstance(r"\\.\pipe\p", reject_remote_clients=False, tls=ctx)
    with pytest.raises(W.InvalidParameter, match="reject_remote_clients=False"):
        pipes.PipeInstance(r"\\.\pipe\p", tls=ctx)
    with pytest.raises(W.InvalidName):
        pipes.connect(r"\\*\pipe\p")
    import asyncio

    with pytest.raises(W.NotSupported):
        asyncio.run(pipes.AsyncPipeConnection.connect(rf"\\{HOST}\pipe\p"))


def test_intake_sockets_go_with_their_instances(winipc_root: Path) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.verify_mode = ssl.CERT_REQUIRED
    a = pipes.PipeInstance(r"\\.\pipe\gone", reject_remote_clients=False, tls=ctx, remote_clients="*")
    b = pipes.PipeInstance(r"\\.\pipe\gone", reject_remote_clients=False, tls=ctx, remote_clients="*")
    folder = winipc_root / "pipe-remote"
    assert len(list(folder.iterdir())) == 1  # one intake per pipe per process
    a.close()
    assert len(list(folder.iterdir())) == 1
    b.close()
    assert list(folder.iterdir()) == []


def test_malformed_preambles_get_an_answer_and_the_gateway_keeps_serving(port: int, pki: Pki,
                                                                        procs: list[subprocess.Popen[str]]) -> None:
    _serve(procs, pki, "sturdy")
    for junk in (b"GET / HTTP/1.0\r\n\r\n", R.preamble(R.OP_OPEN, "x")[:6], b"WNP\x01\x01\xff\xff" + b"a" * 64,
                 R.preamble(R.OP_OPEN, "bad\0name")):
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                answer = s.recv(16)
            except ConnectionResetError:  # closed with our junk unread
                answer = b""
            assert answer in (b"", R.STATUS.pack(W.ERROR_INVALID_NAME))
    with pipes.connect(rf"\\{HOST}\pipe\sturdy", read_message=True, tls=pki.client("alice")) as c:
        assert c.transact(b"ok") == b"OK"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 8))
def test_decoders_take_any_bytes(data: bytes, step: int) -> None:
    pre = R.PreambleDecoder()
    rec = R.RecordDecoder()
    try:
        for i in range(0, len(data), step):
            pre.feed(data[i:i + step])
            if not pre.need():
                pre.result()
                break
    except W.InvalidData:
        pass
    try:
        for i in range(0, len(data), step):
            rec.feed(data[i:i + step])
            while (r := rec.next()) is not None:
                if r.kind == R.HELLO:
                    R.parse_hello(r.payload)
                elif r.kind == R.READY:
                    R.parse_ready(r.payload)
    except W.InvalidData:
        pass


@given(st.text(min_size=1, max_size=200).filter(lambda s: "\0" not in s), st.sampled_from([R.OP_OPEN, R.OP_WAIT]),
       st.integers(0, R.WAIT_FOREVER))
def test_preamble_round_trip(name: str, op: int, wait_ms: int) -> None:
    raw = R.preamble(op, name, wait_ms)
    dec = R.PreambleDecoder()
    for b in raw:
        assert dec.need()
        dec.feed(bytes([b]))
    assert dec.need() == 0
    assert dec.result() == R.Preamble(op, name, wait_ms if op == R.OP_WAIT else 0)


def test_records_and_limits() -> None:
    dec = R.RecordDecoder()
    dec.feed(R.hello(R.Hello(42, True, False, "host")) + R.ready(R.Ready(0, True, 3, 7)) + R.record(R.DATA, b"x" * 10))
    recs = [dec.next(), dec.next(), dec.next()]
    assert [r.kind for r in recs if r] == [R.HELLO, R.READY, R.DATA]
    assert recs[0] is not None and R.parse_hello(recs[0].payload) == R.Hello(42, True, False, "host")
    assert recs[1] is not None and R.parse_ready(recs[1].payload) == R.Ready(0, True, 3, 7)
    with pytest.raises(W.InvalidData):
        R.record(R.DATA, b"x" * (R.MAX_DATA + 1))
    big = R.RecordDecoder()
    big.feed(R.RECORD_HEAD.pack(R.DATA, R.MAX_DATA + 1))
    with pytest.raises(W.InvalidData):  # capped before a byte of it is buffered
        big.next()
    with pytest.raises(W.InvalidData):
        R.parse_hello(R.hello(R.Hello(1, True, True, "h"))[5:] + b"extra")
    assert _remote.common_name({"subject": ((("commonName", "alice"),),)}) == "alice"


FAKE_INTAKE = r"""
import os, socket, sys
path = os.path.join(sys.argv[1], "pipe-remote", sys.argv[2] + ".1.squat.sock")
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o666)
s.listen(16)
print("ready", flush=True)
n = 0
while True:
    c, _ = s.accept()
    try:
        data, fds, _, _ = socket.recv_fds(c, 1, 1)
        if fds:
            n += 1
            print("taken", n, flush=True)
            c.sendall(b"A")  # "mine": the gateway would take the client for handed over
        for fd in fds:
            os.close(fd)
    except OSError:
        pass  # the gateway looked at who we are and left
    c.close()
"""


def test_an_intake_of_another_user_never_gets_the_pipes_clients(
        shared_root: tuple[Path, Path], port: int, pki: Pki, procs: list[subprocess.Popen[str]]) -> None:
    import xuser
    from winipc._core.names import pipe_name

    user = xuser.second_user()
    root, _src = shared_root
    _serve(procs, pki, "target")
    assert (root / "pipe-remote").stat().st_mode & 0o1777 == 0o1777  # shared and sticky
    squat = subprocess.Popen([xuser.python_for(user), "-c", FAKE_INTAKE, str(root),
                              pipe_name(r"\\.\pipe\target").storage_id],
                             user=user.pw_uid, group=user.pw_gid, extra_groups=[], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    try:
        assert _line(squat, "ready") == ""
        for i in range(12):  # the gateway tries intakes in random order: the squatter would get some
            with pipes.connect(rf"\\{HOST}\pipe\target", read_message=True, tls=pki.client("alice")) as c:
                assert c.transact(b"m%d" % i) == b"M%d" % i
    finally:
        squat.kill()
        out, err = squat.communicate(timeout=10)
        for entry in (root / "pipe-remote").iterdir():
            if entry.name.endswith(".squat.sock"):
                entry.unlink()
    assert "taken" not in out, err
