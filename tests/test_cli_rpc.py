"""``winipc rpc``: serve, call, ls and idl.

Servers are real ``python -m winipc rpc serve`` processes serving tests/rpc_ifaces.py, and
every one is stopped by its test (SIGTERM or SIGINT; the ``procs`` fixture otherwise).
Calls run as processes too, except the argument-parsing ones, which run in-process with
click's CliRunner against the same real server. Each test has its own WINIPC_ROOT, so the
endpoint mapper shows only that test's servers; conftest checks nothing is left in it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from rpc_ifaces import Color, Point, Shape, Types
from winipc.cli import cli
from winipc.cli._rpc import bytes_from_text, readable, to_json, value_from_text
from winipc.rpc import spec_of

from conftest import child_env

HERE = Path(__file__).resolve().parent
IFACES = str(HERE / "rpc_ifaces.py")

Procs = list[subprocess.Popen[str]]


def winipc(*args: str, cwd: Path | None = None, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winipc", "rpc", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        input=None if input is None else input.decode(),
        timeout=30,
    )


def ok(*args: str, cwd: Path | None = None) -> str:
    done = winipc(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["rpc", *args], input=input, catch_exceptions=False)


def serve(procs: Procs, *args: str, target: str = IFACES + ":TypesImpl") -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``winipc rpc serve TARGET --json ARGS`` as a process, once it serves: (process, its JSON line)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "winipc", "rpc", "serve", target, "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    procs.append(p)
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], 20)
    line = p.stdout.readline() if ready else ""
    if not line:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"the server did not start: {err}")
    return p, json.loads(line)


def stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    """Stop a server as a user would; it must exit cleanly. Returns its stderr."""
    p.send_signal(sig)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    return err


@pytest.fixture
def server(procs: Procs) -> tuple[subprocess.Popen[str], str]:
    """A TypesImpl server on its own ncalrpc endpoint: (process, binding)."""
    p, info = serve(procs, "--binding", f"ncalrpc:[cli-{os.getpid()}]")
    return p, info["bindings"][0]


# --------------------------------------------------------------------------- serve, call, ls


def test_serve_call_ls_and_stop(procs: Procs) -> None:
    p, info = serve(
        procs, "-b", "ncalrpc:", "-b", r"ncacn_np:[\pipe\cli-rpc-np]", "-b", "ncacn_ip_tcp:127.0.0.1[0]",
        "--allow-anonymous",
    )
    local, pipe, tcp = info["bindings"]
    assert local.startswith("ncalrpc:[LRPC-") and pipe == r"ncacn_np:[\pipe\cli-rpc-np]"
    assert tcp.startswith("ncacn_ip_tcp:127.0.0.1[") and not tcp.endswith("[0]")
    assert info["interfaces"] == [{"name": "Types", "uuid": str(spec_of(Types).uuid), "version": "1.2"}]
    assert info["pid"] == p.pid

    for b in (local, pipe, tcp):
        assert ok("call", b, IFACES + ":Types.divmod", "17", "5") == "[\n  3,\n  2\n]\n"
        assert json.loads(ok("call", b, IFACES + ":Types.echo_str", "über", "--json")) == "über"
    me = json.loads(ok("call", local, IFACES + ":Types.whoami", "--json"))
    assert me["server_pid"] == p.pid and me["local"] is True

    listed = json.loads(ok("ls", "--json"))
    assert sorted(e["binding"] for e in listed) == sorted(info["bindings"])
    for e in listed:
        assert (e["interface"], e["version"], e["pid"], e["uid"]) == ("Types", "1.2", p.pid, os.getuid())
        assert e["uuid"] == info["interfaces"][0]["uuid"] and e["user"]
    table = ok("ls")
    assert table.splitlines()[0].split() == ["INTERFACE", "VERSION", "UUID", "BINDING", "PID", "USER"]
    assert sum(1 for line in table.splitlines() if line.startswith("Types")) == 3
    assert local in table and pipe in table and str(p.pid) in table

    err = stop(p)
    assert "serving Types 1.2 on 3 bindings" in err and "stopping" in err and "Traceback" not in err
    assert json.loads(ok("ls", "--json")) == []
    empty = winipc("ls")
    assert empty.returncode == 0 and empty.stdout == "" and "no endpoints" in empty.stderr

    # the server is gone: RPC_S_SERVER_UNAVAILABLE, exit status 1, class and code named
    for b in (local, pipe, tcp):
        done = winipc("call", b, IFACES + ":Types.echo_int", "1")
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith("error: [WinError 1722 RPC_S_SERVER_UNAVAILABLE] "), done.stderr
        assert done.stderr.rstrip().endswith("(ServerUnavailable)") and "Traceback" not in done.stderr
    done = winipc("call", local, IFACES + ":Types.echo_int", "1", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == {
        "class": "ServerUnavailable",
        "winerror": 1722,
        "name": "RPC_S_SERVER_UNAVAILABLE",
        "message": done.stderr.split("] ", 1)[1].rsplit(" (", 1)[0],
    }


def test_serve_text_output_and_sigint(procs: Procs) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "winipc", "rpc", "serve", "rpc_ifaces:PublicImpl", "--public"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=child_env(), cwd=HERE,  # a dotted module, found in the current folder
    )
    procs.append(p)
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], 20)
    binding = p.stdout.readline().strip() if ready else ""
    assert binding.startswith("ncalrpc:[LRPC-"), binding  # the default: a dynamic ncalrpc endpoint
    # the interface named by the module and the interface alone (--module MODULE:Interface)
    assert ok("call", binding, "hello", "--module", "rpc_ifaces:Public", cwd=HERE) == "hello\n"
    assert ok("call", binding, "Public.hello", "-m", "rpc_ifaces", cwd=HERE) == "hello\n"
    err = stop(p, signal.SIGINT)
    assert "serving Public 1.0 on 1 binding" in err and "stopping" in err


def test_call_resolves_a_partial_binding_through_the_endpoint_mapper(server: tuple[subprocess.Popen[str], str]) -> None:
    assert ok("call", "ncalrpc:", IFACES + ":Types.echo_int", "42") == "42\n"
    stop(server[0])
    done = winipc("call", "ncalrpc:", IFACES + ":Types.echo_int", "42")
    assert done.returncode == 1
    assert done.stderr.startswith("error: [WinError 1753 EPT_S_NOT_REGISTERED] "), done.stderr
    assert "(EndpointNotRegistered)" in done.stderr


def test_call_and_ls_through_another_hosts_endpoint_mapper(procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        monkeypatch.setenv("WINIPC_RPC_EPM_PORT", str(s.getsockname()[1]))
    p, info = serve(procs, "--binding", "ncacn_ip_tcp:127.0.0.1[0]", "--allow-anonymous")
    deadline = time.monotonic() + 20
    while (done := winipc("ls", "--host", "127.0.0.1", "--json")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the server takes the mapper's port as it starts
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {(r["interface"], r["binding"]) for r in rows} == {("Types", info["bindings"][0])}
    assert ok("call", "ncacn_ip_tcp:127.0.0.1", IFACES + ":Types.echo_int", "42") == "42\n"
    assert "Types" in ok("ls", "--host", "127.0.0.1")
    stop(p)
    done = winipc("ls", "--host", "127.0.0.1")
    assert done.returncode == 1 and "1722" in done.stderr and "endpoint mapper" in done.stderr


def test_call_errors_name_class_and_code(server: tuple[subprocess.Popen[str], str]) -> None:
    _, b = server
    t = IFACES + ":Types."
    done = winipc("call", b, t + "fail", "zero")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        "error: [WinError 1726 RPC_S_CALL_FAILED] ZeroDivisionError: integer division or modulo by zero (ServerFault)\n"
    )
    done = winipc("call", b, t + "fail", "zero", "--json")
    assert json.loads(done.stdout)["error"]["remote_type"] == "ZeroDivisionError"
    done = winipc("call", b, t + "fail", "denied")
    assert done.returncode == 1
    assert done.stderr.startswith("error: [WinError 5 ERROR_ACCESS_DENIED] the implementation said no (AccessDenied)")
    started = time.monotonic()
    done = winipc("call", b, t + "slow", "10", "--timeout", "0.5")
    assert done.returncode == 1 and time.monotonic() - started < 8
    assert done.stderr.startswith("error: [WinError 1818 RPC_S_CALL_CANCELLED] ") and "(CallTimeout)" in done.stderr
    assert ok("call", b, t + "slow", "0.05", "--timeout", "5") == "done\n"
    bad = winipc("call", "ncalrpc:[bad name]", t + "echo_int", "1")
    assert bad.returncode == 1 and bad.stderr.startswith("error: [WinError 1706 "), bad.stderr


def test_tls(procs: Procs, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    p, info = serve(procs, "-b", "ncacn_ip_tcp:127.0.0.1[0]", "--tls-cert", str(cert_file), "--tls-key",
                    str(key_file), "--allow-anonymous")
    (b,) = info["bindings"]
    me = json.loads(ok("call", b, IFACES + ":Types.whoami", "--json", "--tls-ca", str(ca_file)))
    assert me["local"] is False and me["server_pid"] == p.pid
    plain = winipc("call", b, IFACES + ":Types.echo_int", "1", "--timeout", "5")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr  # TLS server, plain client
    stop(p)


# --------------------------------------------------------------------------- arguments and results


def test_arguments_are_read_as_their_annotations_say(server: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    _, b = server

    def call(method: str, *args: str, as_json: bool = True, input: bytes | None = None) -> Any:
        r = invoke("call", b, IFACES + ":Types." + method, *args, *(["--json"] if as_json else []), input=input)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout) if as_json else r.stdout

    assert call("echo_int", "-5") == -5  # a negative number is not an option
    assert call("echo_int", "0x10") == 16 and call("echo_int", "1_000") == 1000 and call("echo_int", "007") == 7
    assert call("echo_u32", "4294967295") == 4294967295
    assert call("echo_float", "-1.5e3") == -1500.0
    assert [call("echo_bool", v) for v in ("true", "No", "1", "off")] == [True, False, True, False]
    assert call("echo_str", "v=1", as_json=False) == "1\n"  # NAME=VALUE names the parameter
    assert call("echo_str", "v=v=1") == "v=1"
    assert call("echo_bytes", "0x00ff1b") == "00ff1b"  # --json: bytes as hex
    assert call("echo_bytes", "0x00ff1b", as_json=False) == "hex: 00 ff 1b\n"
    assert call("echo_bytes", "plain text", as_json=False) == "plain text\n"
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    assert call("size", "@" + str(blob), as_json=False) == "256\n"
    assert call("size", "@-", input=b"from stdin") == 10
    assert call("echo_none", "null") is None and call("echo_none", "null", as_json=False) == ""
    assert call("echo_list", "[1, 2, 3]") == [1, 2, 3]
    assert call("echo_dict", '{"a": [1, 2.5]}') == {"a": [1.0, 2.5]}
    assert call("echo_tuple", '[1, "x", "0x0102"]') == [1, "x", "0102"]
    assert call("echo_vartuple", "[]") == []
    assert call("echo_enum", "GREEN", "safe") == ["GREEN", "SAFE"]  # by name or by value
    assert call("echo_enum", "1", "Mode.FAST", as_json=False) == '[\n  "RED",\n  "FAST"\n]\n'
    shape = {"name": "tri", "points": [{"x": 0, "y": 1}, {"x": 2.5, "y": 3, "tag": "t"}], "color": 2}
    assert call("echo_struct", json.dumps(shape)) == {
        "name": "tri",
        "points": [{"x": 0.0, "y": 1.0, "tag": ""}, {"x": 2.5, "y": 3.0, "tag": "t"}],
        "color": "GREEN",
        "weights": None,
    }
    (tmp_path / "shape.json").write_text(json.dumps(shape))
    assert call("echo_struct", "@" + str(tmp_path / "shape.json"))["name"] == "tri"
    assert call("echo_optional", "null") is None
    assert call("echo_optional", '{"x": 1, "y": 2}') == {"x": 1.0, "y": 2.0, "tag": ""}
    assert call("echo_array", "[[1, 2], [3, 4]]") == {"dtype": "<i8", "shape": [2, 2], "data": [[2, 4], [6, 8]]}
    assert call("divmod", "b=3", "a=10") == [3, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Types.echo_int", "x"), "echo_int: argument v: 'x' is not an integer"),
        (("Types.echo_int", "1", "2"), "echo_int takes 1 positional argument(s) (v); got more"),
        (("Types.echo_i8", "300"), "Types.echo_i8: parameter 'v': 300 is out of range for Int8 (-128..127)"),
        (("Types.echo_bool", "maybe"), "is not a bool"),
        (("Types.echo_bytes", "0xzz"), "is not hex digits after 0x"),
        (("Types.size", "@/no/such/file"), "cannot read /no/such/file"),
        (("Types.echo_enum", "BLUE", "fast"), "'BLUE' is not a member of Color (RED, GREEN)"),
        (("Types.echo_list", "[1,"), "echo_list: argument v: not JSON"),
        (("Types.echo_struct", '{"name": "s"}'), "Shape needs field 'points', 'color'"),
        (("Types.echo_struct", '{"name": "s", "points": [{"x": "a", "y": 1}], "color": 1}'),
         "argument s.points[0].x: expected a number, got 'a'"),
        (("Types.echo_struct", '{"name": "s", "points": [], "color": 1, "z": 0}'), "Shape has no field 'z'"),
        (("Types.divmod", "1"), "Types.divmod: missing required argument(s) 'b'"),
        (("Types.divmod", "a=1", "2"), "a positional argument ('2') after NAME=VALUE ones"),
        (("Types.nosuch",), "Types has no method 'nosuch' (methods: echo_bool, echo_int,"),
        (("NoSuch.echo_int", "1"), "has no 'NoSuch'"),
    ],
)
def test_bad_arguments_exit_2_before_connecting(args: tuple[str, ...], message: str) -> None:
    method, *rest = args
    r = invoke("call", "ncalrpc:[nobody-listens]", IFACES + ":" + method, *rest)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and r.stdout == ""


def test_a_call_needs_the_declaration_and_says_what_the_binding_serves(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    _, b = server
    r = invoke("call", b, "Types.echo_int", "1")
    assert r.exit_code == 2
    assert "give it as MODULE:Interface.method or with --module MODULE" in r.stderr
    assert f"the server at {b} serves Types 1.2 (5b1f6c2a-8d3e-4f7a-9b0c-1d2e3f405061)" in r.stderr
    r = invoke("call", "ncalrpc:[elsewhere]", "Types.echo_int", "1")
    assert r.exit_code == 2 and "the endpoint mapper has no entry for ncalrpc:[elsewhere]" in r.stderr
    r = invoke("call", b, IFACES + ":Types.echo_int", "1", "--module", IFACES)
    assert r.exit_code == 2 and "give the module once" in r.stderr
    r = invoke("call", b, "echo_int", "1", "--module", IFACES)  # which of its interfaces?
    assert r.exit_code == 2 and "name the interface" in r.stderr


def test_conversions_in_process() -> None:
    struct = spec_of(Types).by_name["echo_struct"].params[0].type
    value = value_from_text(struct, '{"name": "n", "points": [{"x": 1, "y": 2}], "color": "RED"}', "s")
    assert value == Shape("n", [Point(1.0, 2.0)], Color.RED)
    assert to_json(value) == {"name": "n", "points": [{"x": 1.0, "y": 2.0, "tag": ""}], "color": "RED", "weights": None}
    assert to_json({1: b"\x00", Color.GREEN: (1, 2.5)}) == {"1": "00", "GREEN": [1, 2.5]}
    assert to_json(float("nan")) == "nan"
    assert bytes_from_text("0x 00 ff", "v") == b"\x00\xff" and bytes_from_text("x", "v") == b"x"
    assert readable("\x1b[2J") == '"\\u001b[2J"'  # never drives the terminal
    assert readable(b"\x1b[2J") == "hex: 1b 5b 32 4a"
    assert readable(True) == "true" and readable(Color.RED) == "RED" and readable(2.5) == "2.5"


# --------------------------------------------------------------------------- idl, serve errors


def test_idl_prints_the_interface_as_json() -> None:
    idl = json.loads(ok("idl", IFACES + ":Types"))
    assert idl["idl"] == 1 and idl["name"] == "Types" and idl["version"] == [1, 2]
    assert idl["uuid"] == "5b1f6c2a-8d3e-4f7a-9b0c-1d2e3f405061"
    names = [m["name"] for m in idl["methods"]]
    assert names[:3] == ["echo_bool", "echo_int", "echo_i8"] and "whoami" in names
    assert [m["opnum"] for m in idl["methods"]] == list(range(len(names)))
    assert {"Shape", "Point", "Color", "Mode"} <= set(idl["types"])
    assert idl == spec_of(Types).to_idl()
    one_line = ok("idl", "rpc_ifaces:Files", "--indent", "0", cwd=HERE)
    assert one_line.count("\n") == 1 and json.loads(one_line)["name"] == "Files"
    assert json.loads(ok("idl", IFACES + ":TypesImpl"))["name"] == "Types"  # the implementation will do

    for target, message in [
        (IFACES, "name the interface: "),
        (IFACES + ":Nope", "has no 'Nope'"),
        (IFACES + ":Point", "Point is not an RPC interface"),
        ("no_such_module:X", "cannot import no_such_module: ModuleNotFoundError"),
        ("/no/such/file.py:X", "/no/such/file.py: no such file"),
    ]:
        done = winipc("idl", target)
        assert done.returncode == 2 and done.stdout == ""
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ((IFACES + ":Types",), 2, "Types is the interface Types; name the class that implements it"),
        ((IFACES + ":Point",), 2, "Point implements no RPC interface"),
        ((IFACES,), 2, "name the implementation: "),
        ((IFACES + ":TypesImpl", "--tls-cert", "x.pem"), 2, "--tls-cert and --tls-key go together"),
        ((IFACES + ":TypesImpl", "--allow-anonymous"), 2, "--allow-anonymous applies to ncacn_ip_tcp"),
        ((IFACES + ":TypesImpl", "-b", "ncadg_ip_udp:[1]"), 1, "[WinError 1703 RPC_S_PROTSEQ_NOT_SUPPORTED]"),
    ],
)
def test_serve_refuses_what_it_cannot_serve(args: tuple[str, ...], status: int, message: str) -> None:
    r = invoke("serve", *args)
    assert r.exit_code == status, r.output
    assert message in r.stderr and r.stdout == ""


def test_serve_refuses_an_endpoint_in_use(server: tuple[subprocess.Popen[str], str]) -> None:
    _, b = server
    done = winipc("serve", IFACES + ":TypesImpl", "-b", b)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: [WinError 5 ERROR_ACCESS_DENIED] ") and "in use" in done.stderr
