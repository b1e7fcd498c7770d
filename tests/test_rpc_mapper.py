"""The network endpoint mapper: bind by interface on a host, across real processes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rpc_ifaces import Files, Public, Types, TypesNewerMinor
from test_rpc import Server
from winipc import errors as W
from winipc import rpc
from winipc.rpc import _mapper

from conftest import free_port


@pytest.fixture
def epm_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("WINIPC_RPC_EPM_PORT", str(port))  # server processes inherit it
    return port


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


@contextlib.contextmanager
def _public_server(binding: str) -> Iterator[dict[str, Any]]:
    """A process serving Public on ``binding`` to anonymous callers; yields what it printed:
    ``binding`` (in use) and ``held`` (the addresses where it holds the mapper's port)."""
    code = (
        "import json, sys; sys.path.insert(0, 'tests')\n"
        "from rpc_ifaces import PublicImpl\n"
        "from winipc import rpc\n"
        "s = rpc.RpcServer(); s.register(PublicImpl())\n"
        f"b = s.listen({binding!r}, allow_anonymous=True)\n"
        "s.start(); print(json.dumps({'binding': b, 'held': s._mapper.held}), flush=True)\n"
        "sys.stdin.read(); s.stop()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    try:
        yield json.loads(p.stdout.readline())
    finally:
        p.stdin.close()
        p.wait(15)
        p.stdout.close()


def _until(what: str, fn: Any, patience: float = 20.0) -> Any:
    """fn() once it stops raising (servers retry the mapper's port every second)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return fn()
        except (W.ServerUnavailable, W.EndpointNotRegistered):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bind_interface_on_a_host(epm_port: int, servers: list[Server]) -> None:
    servers.append(Server("ncacn_ip_tcp:127.0.0.1[0]", "ncalrpc:[mapped]", "--anonymous"))
    port = servers[0].binding.rsplit("[", 1)[1].rstrip("]")

    b = _until("lookup", lambda: rpc.bind_interface(Types, host="127.0.0.1"))
    assert isinstance(b, rpc.Binding)
    with b:
        assert str(b) == f"ncacn_ip_tcp:127.0.0.1[{port}]"  # the TCP binding; ncalrpc is not reachable
        assert b.client(Types).echo_str("over the mapper") == "over the mapper"
    with rpc.bind_interface(Files, host="127.0.0.1", protseq="ncacn_ip_tcp") as b:
        assert str(b).endswith(f"[{port}]")
    # a newer minor version than the server's is not served there (RPC_S_ENDPOINT_NOT_REGISTERED)
    with pytest.raises(W.EndpointNotRegistered) as exc:
        rpc.bind_interface(TypesNewerMinor, host="127.0.0.1")
    assert exc.value.winerror == 1753
    with pytest.raises(W.ProtseqNotSupported):
        rpc.bind_interface(Types, host="127.0.0.1", protseq="ncalrpc")
    rows = _mapper.remote_entries("127.0.0.1")
    assert {r["interface"] for r in rows} >= {"Types", "Files", "Public"}
    assert {r["binding"] for r in rows} == {f"ncacn_ip_tcp:127.0.0.1[{port}]"}


def test_the_mapper_admits_anonymous_callers_to_itself_only(epm_port: int, servers: list[Server]) -> None:
    servers.append(Server("ncacn_ip_tcp:127.0.0.1[0]"))  # the server itself refuses anonymous callers
    _until("lookup", lambda: _mapper.remote_lookup("127.0.0.1", str(rpc.spec_of(Public).uuid), 1, 0))
    with rpc.bind(f"ncacn_ip_tcp:127.0.0.1[{epm_port}]") as b, pytest.raises(W.UnknownInterface):
        b.client(Public).hello()
    with rpc.bind_interface(Public, host="127.0.0.1") as b, pytest.raises(W.AccessDenied):
        b.client(Public).hello()  # found, but the server's own rules still apply


def test_a_binding_on_another_address_is_not_offered(epm_port: int, servers: list[Server]) -> None:
    servers.append(Server("ncacn_ip_tcp:0.0.0.0[0]", "--anonymous"))
    _until("mapper", lambda: _mapper.remote_entries("127.0.0.2"))
    # a second server on 127.0.0.1 only: reachable through 127.0.0.1, not through 127.0.0.2
    with _public_server("ncacn_ip_tcp:127.0.0.1[0]") as info:
        port = info["binding"].rsplit("[", 1)[1].rstrip("]")
        near = {r["binding"] for r in _mapper.remote_entries("127.0.0.1") if r["interface"] == "Public"}
        far = {r["binding"] for r in _mapper.remote_entries("127.0.0.2") if r["interface"] == "Public"}
        assert f"ncacn_ip_tcp:127.0.0.1[{port}]" in near
        assert not any(b.endswith(f"[{port}]") for b in far)
        assert len(far) == 1  # the 0.0.0.0 server's, named by the address asked


def test_another_server_takes_over_when_the_holder_dies(epm_port: int, servers: list[Server]) -> None:
    first = Server("ncacn_ip_tcp:127.0.0.1[0]", "--anonymous")
    servers.append(first)
    _until("mapper", lambda: _mapper.remote_entries("127.0.0.1"))
    with _public_server("ncacn_ip_tcp:127.0.0.1[0]") as info:
        assert info["held"] == []  # the first server holds the port
        first.proc.kill()
        first.proc.wait()
        b = _until("takeover", lambda: rpc.bind_interface(Public, host="127.0.0.1"))
        assert isinstance(b, rpc.Binding)
        with b:
            assert str(b) == info["binding"]
            assert b.client(Public).hello() == "hello"
        rpc.endpoint_entries()  # sweeps the killed server's record


def test_no_mapper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINIPC_RPC_EPM_PORT", str(free_port()))
    with pytest.raises(W.ServerUnavailable) as exc:
        rpc.bind_interface(Public, host="127.0.0.1")
    assert exc.value.winerror == 1722 and "endpoint mapper" in str(exc.value)
    monkeypatch.setenv("WINIPC_RPC_EPM_PORT", "0")
    with pytest.raises(W.InvalidParameter, match="WINIPC_RPC_EPM_PORT"):
        rpc.bind_interface(Public, host="127.0.0.1")
    monkeypatch.setenv("WINIPC_RPC_EPM_PORT", "70000")
    with pytest.raises(W.InvalidParameter, match=r"0\.\.65535"):
        _mapper.epm_port()
