"""docs/wire/rpc.md proved by a second implementation: a Node.js client calls a winipc server.

tests/node/rpc_client.mjs was written from the wire document alone, with one npm package
(@msgpack/msgpack, pinned in tests/node/package.json). It binds over TCP, calls methods of
rpc_ifaces.Types and Files by the opnums of their IDL JSON, and prints what came back.
Without node, or when npm cannot fetch the package, the tests skip (fail under
WINIPC_REQUIRE_ALL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rpc_ifaces import Files, Types
from winipc import errors as W
from winipc import rpc

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
CLIENT = NODE_DIR / "rpc_client.mjs"
SERVER = HERE / "rpc_server.py"
REPO = HERE.parent
REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))
MSGPACK_PIN = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["@msgpack/msgpack"]


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (required: WINIPC_REQUIRE_ALL=1)")
    pytest.skip(reason)


def _installed_version() -> str | None:
    pkg = NODE_DIR / "node_modules" / "@msgpack" / "msgpack" / "package.json"
    try:
        return str(json.loads(pkg.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with @msgpack/msgpack installed into tests/node/node_modules."""
    exe = shutil.which("node") or ("/usr/bin/node" if os.path.exists("/usr/bin/node") else None)
    npm = shutil.which("npm")
    if exe is None or npm is None:
        _unavailable("node and npm are needed for the Node.js RPC client")
    assert exe is not None and npm is not None
    try:
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        errors = [line for line in r.stderr.splitlines() if line.startswith("npm error")][:2]
        problem = f"exit status {r.returncode}: {' / '.join(errors)}" if r.returncode else "no error reported"
    except subprocess.TimeoutExpired:
        problem = "no answer within 300 s"
    if _installed_version() != MSGPACK_PIN:
        _unavailable(f"npm could not install @msgpack/msgpack {MSGPACK_PIN} into {NODE_DIR} "
                     f"(is the npm registry reachable?): {problem}")
    return exe


class Server:
    """tests/rpc_server.py in a child process (as in test_rpc.py)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SERVER), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail("the RPC server process did not start")
        info = json.loads(line)
        self.bindings: list[str] = info["bindings"]
        self.pid: int = info["pid"]

    @property
    def port(self) -> int:
        return int(self.bindings[0].rsplit("[", 1)[1].rstrip("]"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def idl_file(tmp_path: Path) -> Path:
    path = tmp_path / "idl.json"
    path.write_text(json.dumps({"Types": rpc.spec_of(Types).to_idl(), "Files": rpc.spec_of(Files).to_idl()}))
    return path


def run_client(node: str, port: int, idl: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(CLIENT), "127.0.0.1", str(port), str(idl), *extra],
                          capture_output=True, text=True, timeout=120)


def client_results(node: str, port: int, idl: Path, *extra: str) -> dict[str, Any]:
    r = run_client(node, port, idl, *extra)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def fault(status: int, type_name: str, *, executed: bool) -> dict[str, Any]:
    return {"status": status, "type": type_name, "did_not_execute": not executed}


def check_results(out: dict[str, Any], server: Server, *, signed: bool) -> None:
    assert out["bind"] == {"max_frame": 16 * 1024 * 1024, "pid": server.pid, "signed": signed}
    ok = {
        "echo_bool": True,
        "echo_int": -42,
        "echo_int_max": {"$int": str(2**64 - 1)},
        "echo_int_min": {"$int": str(-(2**63))},
        "echo_i8": -128,
        "echo_float": 1.25,
        "echo_float_from_int": 3,  # the server's float 3.0; JSON has one number type
        "echo_str": "héllo ☃",
        "echo_bytes": {"$bytes": "000102ff"},
        "echo_none": None,
        "echo_list": [1, 2, 3],
        "echo_dict": {"a": [1.5], "b": []},
        "echo_tuple": [7, "x", {"$bytes": b"y".hex()}],
        "echo_enum": [2, "safe"],  # Color.GREEN and Mode.SAFE by value
        "echo_struct": {"name": "tri", "points": [{"x": 0.5, "y": 1.5, "tag": "a"}, {"x": 2.5, "y": -1.5, "tag": ""}],
                        "color": 1, "weights": {"w": 0.5}},  # the default of Point.tag filled in by the server
        "echo_optional_none": None,
        "echo_optional_point": {"x": 1.5, "y": 2.5, "tag": ""},
        "echo_array": {"$ndarray": {"dtype": "<i4", "shape": [2, 2],
                                    "data": {"$bytes": b"".join(v.to_bytes(4, "little", signed=True)
                                                                for v in (2, 4, 6, -8)).hex()}}},
        "divmod": [3, 2],
        "size_oob": 100_000,
        "echo_bytes_oob_ok": True,
        "files_append": 1,
        "files_close": "a",
        "files_notes": ["one"],
    }
    for label, value in ok.items():
        assert out[label] == {"ok": value}, label
    assert out["files_note"] == {"ok": None, "oneway": True}
    ctx = out["files_open"]["ok"]["$ctx"]
    assert len(bytes.fromhex(ctx)) == 16
    faults = {
        "fail_zero": fault(W.RPC_S_CALL_FAILED, "ZeroDivisionError", executed=True),
        "fail_denied": fault(W.RPC_S_ACCESS_DENIED, "AccessDenied", executed=True),
        "bad_stub_data": fault(W.RPC_X_BAD_STUB_DATA, "BadStubData", executed=False),
        "wrong_arity": fault(W.RPC_X_BAD_STUB_DATA, "BadStubData", executed=False),
        "unknown_opnum": fault(W.RPC_S_PROCNUM_OUT_OF_RANGE, "ProcnumOutOfRange", executed=False),
        "unknown_interface": fault(W.RPC_S_UNKNOWN_IF, "UnknownInterface", executed=False),
        "files_append_closed": fault(W.RPC_X_SS_CONTEXT_MISMATCH, "ContextMismatch", executed=False),
    }
    for label, want in faults.items():
        got = dict(out[label]["fault"])
        message = got.pop("message")
        assert got == want, label
        assert isinstance(message, str) and message, label
    assert "expected int, got str" in out["bad_stub_data"]["fault"]["message"]
    assert out["fail_denied"]["fault"]["message"] == "the implementation said no"


@pytest.fixture
def anonymous_server() -> Iterator[Server]:
    s = Server("ncacn_ip_tcp:127.0.0.1[0]", "--anonymous")
    yield s
    s.stop()


def test_node_client_at_level_none(node: str, anonymous_server: Server, idl_file: Path) -> None:
    out = client_results(node, anonymous_server.port, idl_file)
    check_results(out, anonymous_server, signed=False)


def test_node_client_with_a_key_at_pkt_integrity(node: str, idl_file: Path) -> None:
    key = bytes(range(32))
    s = Server("ncacn_ip_tcp:127.0.0.1[0]", "--key", f"alice:{key.hex()}", "--min-level", "5")
    try:
        # the key handshake, then an HMAC trailer on every frame both ways
        check_results(client_results(node, s.port, idl_file, f"alice:{key.hex()}"), s, signed=True)
        # the wrong key: the server's proof does not verify, the client gives up
        r = run_client(node, s.port, idl_file, f"alice:{bytes(32).hex()}")
        assert r.returncode == 1 and "the server does not hold the key" in r.stderr
        # anonymous at an endpoint that does not admit it: BIND_NAK with ERROR_ACCESS_DENIED
        r = run_client(node, s.port, idl_file)
        assert r.returncode == 1 and f"BIND_NAK {W.RPC_S_ACCESS_DENIED} AccessDenied" in r.stderr
        # the server is still serving
        with rpc.bind(s.bindings[0], auth=rpc.AuthInfo(rpc.AuthLevel.PKT_INTEGRITY, "alice", key)) as b:
            assert b.client(Types).divmod(7, 2) == (3, 1)
    finally:
        s.stop()
