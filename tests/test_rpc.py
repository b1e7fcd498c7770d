"""winipc.rpc across real processes: types, errors, context handles, callbacks, security."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rpc_ifaces import (
    Asker,
    AsyncIface,
    Color,
    Files,
    Mode,
    Point,
    Public,
    Shape,
    Types,
    TypesNewerMinor,
    TypesTooMany,
    TypesV2,
    TypesWrong,
)
from winipc import errors as W
from winipc import rpc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "rpc_server.py")


class Server:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, SERVER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail("the RPC server process did not start")
        info = json.loads(line)
        self.bindings: list[str] = info["bindings"]
        self.pid: int = info["pid"]

    @property
    def binding(self) -> str:
        return self.bindings[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server("ncalrpc:[types]", "ncacn_np:[\\pipe\\rpctest]", "ncacn_ip_tcp:127.0.0.1[0]", "--anonymous")
    yield s
    s.stop()


def test_string_bindings() -> None:
    b = rpc.StringBinding.parse(r"ncacn_np:[\pipe\orders,opt=1]")
    assert (b.protseq, b.endpoint, b.options) == ("ncacn_np", r"\pipe\orders", {"opt": "1"})
    assert b.pipe_name == r"\\.\pipe\orders"
    obj = "12345678-1234-1234-1234-123456789abc"
    b = rpc.StringBinding.parse(f"{obj}@ncacn_ip_tcp:10.0.0.1[4747]")
    assert str(b.object_uuid) == obj and b.endpoint == "4747" and not b.is_local
    assert str(b) == f"{obj}@ncacn_ip_tcp:10.0.0.1[4747]"
    assert rpc.compose("ncalrpc", "", "x") == "ncalrpc:[x]"
    with pytest.raises(W.ProtseqNotSupported):
        rpc.StringBinding.parse("ncadg_ip_udp:host[1]")
    with pytest.raises(W.InvalidStringBinding):
        rpc.StringBinding.parse("no colon")
    with pytest.raises(W.InvalidEndpointFormat):
        rpc.StringBinding.parse("ncacn_ip_tcp:host[99999]")
    with pytest.raises(W.InvalidEndpointFormat):
        rpc.StringBinding.parse("ncacn_np:[orders]")
    with pytest.raises(W.InvalidStringBinding):
        rpc.StringBinding.parse("ncalrpc:otherhost[x]")


def test_every_type_round_trips_on_every_transport(server: Server) -> None:
    assert len(server.bindings) == 3
    shape = Shape("tri", [Point(0.0, 1.5, "a"), Point(2.0, -1.0)], Color.GREEN, {"w": 0.5})
    for binding in server.bindings:
        with rpc.bind(binding) as b:
            t = b.client(Types)
            assert t.echo_bool(True) is True
            assert t.echo_int(-(2**63)) == -(2**63) and t.echo_int(2**64 - 1) == 2**64 - 1
            assert t.echo_i8(-128) == -128
            assert t.echo_u32(2**32 - 1) == 2**32 - 1
            assert t.echo_float(1.25) == 1.25 and t.echo_float(3) == 3.0
            assert t.echo_str("héllo ☃") == "héllo ☃"
            big = os.urandom(1 << 20)
            assert t.echo_bytes(b"") == b"" and t.echo_bytes(big) == big
            assert t.size(big) == len(big)
            assert t.echo_none(None) is None
            assert t.echo_list([1, 2, 3]) == [1, 2, 3]
            assert t.echo_dict({"a": [1.0], "b": []}) == {"a": [1.0], "b": []}
            assert t.echo_tuple((1, "x", b"y")) == (1, "x", b"y")
            assert t.echo_vartuple((1, 2, 3)) == (1, 2, 3)
            assert t.echo_enum(Color.RED, Mode.SAFE) == (Color.RED, Mode.SAFE)
            assert t.echo_struct(shape) == shape
            assert t.echo_optional(None) is None and t.echo_optional(Point(1, 2)) == Point(1.0, 2.0)
            for arr in (np.arange(12, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 200_000)):
                out = t.echo_array(arr)
                assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr * 2)
            assert t.divmod(17, 5) == (3, 2)
            assert t.divmod(a=17, b=5) == (3, 2)


def test_type_mismatches_are_typed_errors_and_the_server_keeps_serving(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        t = b.client(Types)
        with pytest.raises(W.BadStubData, match="v"):
            t.echo_i8(128)  # refused before sending
        with pytest.raises(W.BadStubData):
            t.echo_int("1")  # type: ignore[arg-type]
        with pytest.raises(W.BadStubData):
            t.echo_list([1, "2"])  # type: ignore[list-item]
        with pytest.raises(W.BadStubData):
            t.divmod(1)  # type: ignore[call-arg]
        wrong = b.client(TypesWrong)
        with pytest.raises(W.BadStubData) as e:
            wrong.echo_bool("yes")  # the server's stub refuses a str where it declared bool
        assert e.value.winerror == W.RPC_X_BAD_STUB_DATA
        with pytest.raises(W.BadStubData):
            t.fail("badresult")  # the server's result does not fit its own declaration
        assert t.echo_bool(False) is False


def test_unknown_method_wrong_version_and_server_exceptions(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        with pytest.raises(W.ProcnumOutOfRange):
            b.client(TypesTooMany).m23()
        with pytest.raises(W.UnknownInterface):
            b.client(TypesV2).echo_bool(True)
        with pytest.raises(W.UnknownInterface):
            b.client(TypesNewerMinor).echo_bool(True)  # the server has 1.2, the client wants 1.9
        t = b.client(Types)
        with pytest.raises(W.ServerFault) as e:
            t.fail("zero")
        assert e.value.remote_type == "ZeroDivisionError" and e.value.winerror == W.RPC_S_CALL_FAILED
        with pytest.raises(W.AccessDenied, match="said no"):
            t.fail("denied")
        assert t.echo_int(7) == 7


def test_oversized_frames(server: Server) -> None:
    small = Server("ncalrpc:[small]", "ncacn_ip_tcp:127.0.0.1[0]", "--anonymous", "--max-frame", "65536")
    try:
        with rpc.bind(small.binding) as b:
            t = b.client(Types)
            with pytest.raises(W.ProtocolError):
                t.size(b"x" * 100_000)  # over the limit the server announced
            assert t.size(b"x" * 1000) == 1000
        # a raw client that ignores the limit: the server drops it and serves the others
        port = int(small.bindings[1].rsplit("[", 1)[1].rstrip("]"))
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(bytes([1, 1, 0, 0]) + (0).to_bytes(4, "little") + (10**8).to_bytes(4, "little") + bytes(4))
            s.settimeout(10)
            assert s.recv(100) == b""
        with rpc.bind(small.bindings[1]) as b:
            assert b.client(Types).echo_str("still here") == "still here"
    finally:
        small.stop()


def test_context_handles_and_rundown_when_the_client_is_killed(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        f = b.client(Files)
        h = f.open("first")
        assert isinstance(h, rpc.ClientContextHandle)
        assert f.append(h, "a") == 1 and f.append(h, "b") == 2
        assert f.close(h) == "a+b"
        with pytest.raises(W.ContextMismatch):
            f.append(h, "c")
        f.open("left-open")
    # the binding closed with a handle open: the server ran it down
    child = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {HERE!r})
        from rpc_ifaces import Files
        from winipc import rpc
        b = rpc.bind({server.binding!r})
        f = b.client(Files)
        h = f.open("killed")
        print("open", flush=True)
        f.hold(h, 60)
    """)
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "open"
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    with rpc.bind(server.binding) as b:
        f = b.client(Files)
        deadline = time.monotonic() + 10
        while "killed" not in f.rundowns() and time.monotonic() < deadline:
            time.sleep(0.05)
        # the dead client's handle was run down once the held call's connection closed
        # (its method is still sleeping; rundown waits for the association's last connection)
        assert "left-open" in f.rundowns()
    # a handle from another binding is refused
    with rpc.bind(server.binding) as b1, rpc.bind(server.binding) as b2:
        h = b1.client(Files).open("mine")
        with pytest.raises(W.ContextMismatch):
            b2.client(Files).append(h, "x")


def test_oneway_callbacks_async_and_cancel(server: Server) -> None:
    class AskerImpl(Asker):
        def answer(self, question: str) -> str:
            return question[::-1]

    with rpc.bind(server.binding, callbacks=[AskerImpl()]) as b:
        f = b.client(Files)
        f.note("one")
        f.note("two")
        assert f.notes() == ["one", "two"]  # oneway calls ran, in order
        assert f.ask_client("olleh") == "client says: hello"
        t = b.client(Types)
        fut = b.submit(t.slow, 0.2)
        assert fut.result(10) == "done"
        fut = b.submit(t.slow, 30.0)
        time.sleep(0.3)
        assert fut.cancel()
        with pytest.raises(W.CallCancelled):
            fut.result(10)
        with pytest.raises(W.CallTimeout):
            b.client(Types, timeout=0.3).slow(30.0)
        assert t.echo_int(5) == 5

        async def main() -> list[str]:
            a = b.async_client(AsyncIface)
            return list(await asyncio.gather(a.later(0.1, "x"), a.later(0.05, "y")))

        assert asyncio.run(main()) == ["X", "Y"]
    with rpc.bind(server.binding) as b, pytest.raises(W.UnknownInterface):
        b.client(Files).ask_client("x")  # no callback interface on this binding


def _in_threads(n: int, work: Callable[[int], None]) -> None:
    """work(0) .. work(n - 1) at once, one thread each; the first exception is raised here."""
    errors: list[BaseException] = []
    gate = threading.Barrier(n)

    def run(k: int) -> None:
        try:
            gate.wait(10)
            work(k)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def test_concurrent_threads_share_one_binding(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        t = b.client(Types)

        def work(k: int) -> None:
            for i in range(200):
                assert t.divmod(k * 1000 + i, 7) == divmod(k * 1000 + i, 7)

        _in_threads(8, work)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connect_opens_the_pool_ahead_and_surfaces_errors(server: Server) -> None:
    before = _open_fds()
    with rpc.bind(server.binding) as b:
        b.connect(3)  # RpcBindingBind: three connections, made now
        opened = _open_fds() - before
        assert opened >= 3
        b.connect(2)  # already idle: nothing more
        assert _open_fds() - before == opened
        t = b.client(Types)

        def work(k: int) -> None:
            for i in range(50):
                assert t.echo_int(k * 100 + i) == k * 100 + i

        _in_threads(3, work)
        for bad in (0, 65, 1.5, True):
            with pytest.raises(W.InvalidParameter, match="connections"):
                b.connect(bad)  # type: ignore[arg-type]
    assert _open_fds() == before  # closing the binding closed them all
    with pytest.raises(W.InvalidHandle):
        b.connect()
    with rpc.bind("ncalrpc:[no-such-endpoint]", connect_timeout=1.0) as nobody:
        with pytest.raises(W.ServerUnavailable):
            nobody.connect()
        assert _open_fds() == before


def test_register_takes_an_instance() -> None:
    from rpc_ifaces import PublicImpl

    s = rpc.RpcServer()
    with pytest.raises(W.InvalidParameter, match="instance of the implementation, not the class PublicImpl"):
        s.register(PublicImpl)
    with pytest.raises(W.InvalidParameter, match="not the class Public"):
        s.register(Public, PublicImpl())  # the arguments the wrong way round
    s.register(PublicImpl(), Public)


def test_unregister_reaches_connections_already_open() -> None:
    """A connection that already called an interface sees it go and come back (RpcServerUnregisterIf)."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from rpc_ifaces import PublicImpl, Public\n"
        "from winipc import rpc\n"
        "s = rpc.RpcServer(); impl = PublicImpl(); s.register(impl)\n"
        "print(s.listen('ncalrpc:[unreg]'), flush=True); s.start()\n"
        "for line in sys.stdin:\n"
        "    s.unregister(Public) if line.strip() == 'off' else s.register(impl)\n"
        "    print('ok', flush=True)\n"
        "s.stop()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None

    def say(word: str) -> None:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(word + "\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok"

    try:
        with rpc.bind(p.stdout.readline().strip()) as b:
            b.connect(1)
            pub = b.client(Public)
            assert pub.hello() == "hello"
            say("off")
            with pytest.raises(W.UnknownInterface):
                pub.hello()  # the same connection: its lookup cache must not answer
            say("on")
            assert pub.hello() == "hello"
    finally:
        p.stdin.close()
        p.wait(15)
        p.stdout.close()


def test_whoami_and_endpoint_mapper(server: Server) -> None:
    with rpc.bind(server.binding) as b:
        me = b.client(Types).whoami()
    assert me["uid"] == os.getuid() and me["pid"] == os.getpid() and me["local"] and me["principal"] == f"uid:{os.getuid()}"
    names = {(e.name, e.binding) for e in rpc.endpoint_entries()}
    assert ("Types", server.binding) in names
    with rpc.bind_interface(Types) as b:
        assert str(b).startswith("ncalrpc:") and b.client(Types).echo_int(3) == 3
    with rpc.bind_interface(Types, protseq="ncacn_ip_tcp") as b:
        assert b.client(Types).whoami()["local"] is False
    server.stop()
    with pytest.raises(W.EndpointNotRegistered):
        rpc.bind_interface(Types)
    with pytest.raises(W.ServerUnavailable):
        rpc.bind(server.binding).client(Types).echo_int(1)


def test_remote_callers_need_the_endpoints_consent() -> None:
    key = os.urandom(32)
    s = Server("ncacn_ip_tcp:127.0.0.1[0]", "--key", f"alice:{key.hex()}", "--min-level", "5")
    try:
        with rpc.bind(s.binding) as b, pytest.raises(W.AccessDenied):
            b.client(Types).echo_int(1)  # anonymous, and the endpoint does not allow it
        connect = rpc.AuthInfo(rpc.AuthLevel.CONNECT, "alice", key)
        with rpc.bind(s.binding, auth=connect) as b, pytest.raises(W.AccessDenied):
            b.client(Types).echo_int(1)  # Types wants PKT_INTEGRITY
        wrong = rpc.AuthInfo(rpc.AuthLevel.PKT_INTEGRITY, "alice", os.urandom(32))
        with rpc.bind(s.binding, auth=wrong) as b, pytest.raises(W.SecurityPackageError):
            b.client(Types).echo_int(1)  # the wrong key
        with rpc.bind(s.binding, auth=rpc.AuthInfo(rpc.AuthLevel.PKT_INTEGRITY, "alice", key)) as b:
            me = b.client(Types).whoami()
            assert me["principal"] == "alice" and me["level"] == 5 and me["local"] is False
    finally:
        s.stop()


def test_integrity_level_rejects_a_tampered_frame() -> None:
    key = os.urandom(32)
    s = Server("ncacn_ip_tcp:127.0.0.1[0]", "--key", f"alice:{key.hex()}")
    port = int(s.binding.rsplit("[", 1)[1].rstrip("]"))
    lsock = socket.create_server(("127.0.0.1", 0))
    tamper = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, flip: bool) -> None:
        try:
            while data := src.recv(65536):
                if flip and tamper.is_set() and len(data) > 20:
                    data = data[:-40] + bytes([data[-40] ^ 1]) + data[-39:]
                    tamper.clear()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            src.close()

    def proxy() -> None:
        c, _ = lsock.accept()
        u = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
        threading.Thread(target=pump, args=(u, c, False), daemon=True).start()

    threading.Thread(target=proxy, daemon=True).start()
    try:
        via = f"ncacn_ip_tcp:127.0.0.1[{lsock.getsockname()[1]}]"
        with rpc.bind(via, auth=rpc.AuthInfo(rpc.AuthLevel.PKT_INTEGRITY, "alice", key)) as b:
            t = b.client(Types)
            assert t.echo_str("a" * 100) == "a" * 100
            tamper.set()
            with pytest.raises(W.CallFailed):
                t.echo_str("b" * 100)  # the server refused the altered frame and closed
        with rpc.bind(s.binding, auth=rpc.AuthInfo(rpc.AuthLevel.PKT_INTEGRITY, "alice", key)) as b:
            assert b.client(Types).echo_str("ok") == "ok"
    finally:
        lsock.close()
        s.stop()


def test_a_second_user_is_refused_by_an_owner_only_interface(shared_root: tuple[Path, Path]) -> None:
    import shutil

    import msgpack

    import xuser

    user = xuser.second_user()
    root, src = shared_root
    shutil.copytree(os.path.dirname(msgpack.__file__), src / "msgpack")  # the other user's Python needs it
    s = Server("ncalrpc:[shared]", "--public")
    try:
        child = textwrap.dedent(f"""
            from winipc import rpc, errors
            @rpc.interface(uuid={rpc.spec_of(Public).uuid.hex!r}, version=(1, 0))
            class Public:
                def hello(self) -> str: ...
            @rpc.interface(uuid={rpc.spec_of(Types).uuid.hex!r}, version=(1, 2))
            class Types:
                def echo_bool(self, v: bool) -> bool: ...
                def echo_int(self, v: int) -> int: ...
            with rpc.bind({s.binding!r}) as b:
                print(b.client(Public).hello())
                try:
                    b.client(Types).echo_int(1)
                except errors.AccessDenied:
                    print("denied")
        """)
        env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
        r = subprocess.run([xuser.python_for(user), "-c", child], user=user.pw_uid, group=user.pw_gid,
                           extra_groups=[], capture_output=True, text=True, env=env, cwd="/", timeout=60)
        assert r.stdout.split() == ["hello", "denied"], r.stderr
    finally:
        s.stop()


def test_tls_privacy_level_and_client_certificates(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    server_cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    key = os.urandom(32)
    s = Server("ncacn_ip_tcp:127.0.0.1[0]", "--key", f"alice:{key.hex()}", "--tls", f"{cert_file}:{key_file}:{ca_file}")
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with rpc.bind(s.binding, tls=ctx, auth=rpc.AuthInfo(rpc.AuthLevel.PKT_PRIVACY, "alice", key)) as b:
            me = b.client(Types).whoami()
            assert (me["principal"], me["level"], me["local"]) == ("alice", 6, False)
            assert b.client(Types).echo_bytes(b"secret" * 50_000) == b"secret" * 50_000
        bob = ctx
        ca.issue_cert("bob.example", common_name="bob").configure_cert(bob)
        with rpc.bind(s.binding, tls=bob, auth=rpc.AuthInfo(rpc.AuthLevel.CONNECT)) as b:
            assert b.client(Types).whoami()["principal"] == "cn:bob"  # identified by its certificate
        with pytest.raises(W.UnsupportedAuthnLevel):  # privacy without TLS
            rpc.bind(s.binding, auth=rpc.AuthInfo(rpc.AuthLevel.PKT_PRIVACY, "alice", key)).client(Types).echo_int(1)
        with pytest.raises(W.ServerUnavailable):  # a client that does not trust the server's certificate
            rpc.bind(s.binding, tls=ssl.create_default_context()).client(Types).echo_int(1)
    finally:
        s.stop()


def test_a_killed_servers_endpoint_record_is_swept() -> None:
    from winipc._core import namespace

    s = Server("ncalrpc:[doomed]")
    assert any(e.binding == s.binding for e in rpc.endpoint_entries())
    s.proc.kill()
    s.proc.wait()
    s.stop()
    assert not any(e.binding == s.binding for e in rpc.endpoint_entries())
    assert not [o for o in namespace.list_objects() if o.type == "rpc-endpoints"]  # gone from disk too
    namespace.clean()  # the killed server's pipe leftover is the pipe layer's (reclaimed by `winipc clean`)
