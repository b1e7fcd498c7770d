"""TLS on the command line: ``pipe serve --remote``, ``pipe send|cat \\\\HOST\\pipe\\NAME``,
``rpc serve`` with ``--tls-ca`` and ``rpc call`` with a client certificate.

Servers and clients are real ``python -m winipc`` processes; 127.0.0.2 stands for the other
machine (as in tests/test_pipes_remote.py) and each test has a pipe port of its own.
Certificates come from trustme: one CA signs the server's (for 127.0.0.2) and the
clients' (common names alice and bob). Usage errors run in-process with click's CliRunner.
Every server is stopped by its test (SIGTERM, exit status 0); conftest checks that no
pipe or intake socket is left.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from winipc.cli import cli

from conftest import child_env, free_port

HOST = "127.0.0.2"
IFACES = str(Path(__file__).resolve().parent / "rpc_ifaces.py")

Procs = list[subprocess.Popen[str]]


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the server's certificate and key, and the clients'."""

    ca: str
    server_cert: str
    server_key: str
    folder: Path

    def client(self, cn: str) -> list[str]:
        """``--tls-cert/--tls-key/--tls-ca`` for a client with common name ``cn``."""
        return ["--tls-cert", str(self.folder / f"{cn}.crt"), "--tls-key", str(self.folder / f"{cn}.key"),
                "--tls-ca", self.ca]

    def server(self) -> list[str]:
        return ["--tls-cert", self.server_cert, "--tls-key", self.server_key, "--tls-ca", self.ca]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("cli-pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaves = {"server": ca.issue_cert(HOST, "localhost")}
    for cn in ("alice", "bob"):
        leaves[cn] = ca.issue_cert(f"{cn}.example", common_name=cn)
    for name, leaf in leaves.items():
        leaf.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
        leaf.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    return Pki(str(folder / "ca.pem"), str(folder / "server.crt"), str(folder / "server.key"), folder)


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    p = free_port()
    monkeypatch.setenv("WINIPC_PIPE_PORT", str(p))  # every process started here takes it
    return p


def winipc(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "winipc", *args], input=input, capture_output=True,
                          env=child_env(), timeout=60)


def start(procs: Procs, *args: str, ready: str) -> tuple[subprocess.Popen[str], str]:
    """``winipc ARGS`` as a process, once a line starting with ``ready`` appears (on stderr for
    ``pipe serve``, on stdout for ``rpc serve --json``): (process, that line)."""
    p = subprocess.Popen([sys.executable, "-m", "winipc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, env=child_env())
    procs.append(p)
    stream = p.stderr if args[0] == "pipe" else p.stdout
    assert stream is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        readable, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        line = stream.readline() if readable else ""
        if line.startswith(ready):
            return p, line.rstrip("\n")
        if not line:
            break
    p.kill()
    out, err = p.communicate()
    raise AssertionError(f"the server did not start: {out}{err}")


def stop(p: subprocess.Popen[str]) -> str:
    """SIGTERM, as a user stops a server; it must exit cleanly. Returns its stderr."""
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    return err


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# --------------------------------------------------------------------------- pipes


def test_pipe_serve_remote_and_send_cat_from_another_machine(procs: Procs, pki: Pki, port: int) -> None:
    server, status = start(procs, "pipe", "serve", "clitls", "--echo", "--message", "--remote",
                           "--remote-client", "alice", "--remote-client", "carol", *pki.server(), ready="serving ")
    assert f"remote clients: alice, carol (TLS through pipe port {port}, held by this process)" in status
    name = rf"\\{HOST}\pipe\clitls"
    sent = winipc("pipe", "send", name, "hello over TLS", *pki.client("alice"))
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == b"hello over TLS"  # message mode by default: the pipe's type, told by its server
    cat = winipc("pipe", "cat", name, *pki.client("alice"), input=b"one\ntwo")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == b"one\ntwo\n"  # two messages, each printed on its own line
    err = stop(server)
    assert err.count("connected from ") == 2 and "(cn:alice)" in err, err
    assert "Traceback" not in err


def test_pipe_cat_moves_bytes_both_ways_through_a_remote_byte_pipe(procs: Procs, pki: Pki, port: int) -> None:
    server, _ = start(procs, "pipe", "serve", "clitlsbytes", "--echo", "--remote", *pki.server(), ready="serving ")
    data = os.urandom(300_000)  # more than the buffers hold: both directions at once, then the half-close
    cat = winipc("pipe", "cat", rf"\\{HOST}\pipe\clitlsbytes", *pki.client("bob"), input=data)
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == data
    assert "(cn:bob)" in stop(server)  # no --remote-client: any certificate the CA signs


def test_pipe_send_with_a_certificate_the_pipe_does_not_name_is_refused(procs: Procs, pki: Pki,
                                                                        port: int) -> None:
    server, _ = start(procs, "pipe", "serve", "clitlsbob", "--echo", "--remote", "--remote-client", "bob",
                      *pki.server(), ready="serving ")
    refused = winipc("pipe", "send", rf"\\{HOST}\pipe\clitlsbob", "let me in", *pki.client("alice"))
    assert refused.returncode == 1 and refused.stdout == b""
    assert refused.stderr.decode().startswith("error: [WinError 5 ERROR_ACCESS_DENIED]"), refused.stderr
    welcome = winipc("pipe", "send", rf"\\{HOST}\pipe\clitlsbob", "bob here", *pki.client("bob"))
    assert welcome.returncode == 0 and welcome.stdout == b"bob here", welcome.stderr
    err = stop(server)
    assert err.count("connected") == 1 and "(cn:bob)" in err  # alice never reached an instance


def test_a_local_pipe_server_takes_no_remote_clients(procs: Procs, pki: Pki, port: int) -> None:
    server, status = start(procs, "pipe", "serve", "clitlslocal", "--echo", ready="serving ")
    assert "remote" not in status
    local = winipc("pipe", "send", "clitlslocal", "still local")
    assert local.returncode == 0 and local.stdout == b"still local", local.stderr
    remote = winipc("pipe", "send", rf"\\{HOST}\pipe\clitlslocal", "x", *pki.client("alice"))
    assert remote.returncode == 1
    assert "ERROR_BAD_NETPATH" in remote.stderr.decode()  # no pipe here holds the pipe port
    stop(server)


# --------------------------------------------------------------------------- rpc


def test_rpc_over_ncacn_np_from_another_machine(procs: Procs, pki: Pki, port: int) -> None:
    server, line = start(procs, "rpc", "serve", IFACES + ":TypesImpl", "--json", "-b", r"ncacn_np:[\pipe\clitlsrpc]",
                         *pki.server(), ready="{")
    assert json.loads(line)["bindings"] == [r"ncacn_np:[\pipe\clitlsrpc]"]
    binding = rf"ncacn_np:{HOST}[\pipe\clitlsrpc]"
    done = winipc("rpc", "call", binding, IFACES + ":Types.whoami", "--json", *pki.client("alice"))
    assert done.returncode == 0, done.stderr
    me = json.loads(done.stdout)
    assert (me["principal"], me["local"], me["server_pid"]) == ("cn:alice", False, server.pid)
    echoed = winipc("rpc", "call", binding, IFACES + ":Types.echo_str", "über TLS", *pki.client("bob"))
    assert echoed.returncode == 0 and echoed.stdout.decode() == "über TLS\n", echoed.stderr
    local = winipc("rpc", "call", r"ncacn_np:[\pipe\clitlsrpc]", IFACES + ":Types.echo_int", "7")
    assert local.returncode == 0 and local.stdout == b"7\n", local.stderr  # local callers as before
    err = stop(server)
    assert f"ncacn_np from other machines: TLS through pipe port {port}, held by this process" in err


def test_rpc_tcp_with_tls_ca_requires_a_client_certificate(procs: Procs, pki: Pki) -> None:
    cert = ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key]
    server, line = start(procs, "rpc", "serve", IFACES + ":TypesImpl", "--json", "-b", f"ncacn_ip_tcp:{HOST}[0]",
                         *cert, "--tls-ca", pki.ca, "--allow-anonymous", ready="{")
    (binding,) = json.loads(line)["bindings"]
    done = winipc("rpc", "call", binding, IFACES + ":Types.whoami", "--json", *pki.client("alice"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["principal"] == "cn:alice"
    # the TLS handshake itself wants a certificate (CERT_REQUIRED), whatever --allow-anonymous says
    anonymous = winipc("rpc", "call", binding, IFACES + ":Types.echo_int", "1", "--tls-ca", pki.ca, "--timeout", "10")
    assert anonymous.returncode == 1 and anonymous.stdout == b"", anonymous.stdout
    assert "Traceback" not in anonymous.stderr.decode()
    stop(server)

    # without --tls-ca, TLS as before: no client certificate asked for
    server, line = start(procs, "rpc", "serve", IFACES + ":TypesImpl", "--json", "-b", f"ncacn_ip_tcp:{HOST}[0]",
                         *cert, "--allow-anonymous", ready="{")
    (binding,) = json.loads(line)["bindings"]
    plain = winipc("rpc", "call", binding, IFACES + ":Types.echo_int", "2", "--tls-ca", pki.ca)
    assert plain.returncode == 0 and plain.stdout == b"2\n", plain.stderr
    stop(server)


# --------------------------------------------------------------------------- usage errors


def usage_error(*args: str) -> str:
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    return r.stderr


def test_usage_errors_name_the_option(pki: Pki) -> None:
    alice = pki.client("alice")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("pipe", "serve", "x", "--tls-cert", pki.server_cert), "--tls-cert applies with --remote"),
        (("pipe", "serve", "x", "--tls-ca", pki.ca), "--tls-ca applies with --remote"),
        (("pipe", "serve", "x", "--remote-client", "bob"), "--remote-client applies with --remote"),
        (("pipe", "serve", "x", "--remote", "--tls-cert", pki.server_cert, "--tls-key", pki.server_key),
         "missing: --tls-ca"),
        (("pipe", "serve", "x", "--remote"), "missing: --tls-cert, --tls-key, --tls-ca"),
        (("pipe", "send", "x", "hi", *alice), "--tls-cert applies to a pipe on another machine"),
        (("pipe", "send", r"\\.\pipe\x", "hi", "--tls-ca", pki.ca), "--tls-ca applies to a pipe on another machine"),
        (("pipe", "cat", r"\\localhost\pipe\x", "--tls-key", pki.server_key), "--tls-key applies to a pipe"),
        (("pipe", "send", rf"\\{HOST}\pipe\x", "hi"), "give --tls-cert and --tls-key"),
        (("pipe", "cat", rf"\\{HOST}\pipe\x", "--tls-ca", pki.ca), "give --tls-cert and --tls-key"),
        (("pipe", "send", rf"\\{HOST}\pipe\x", "hi", "--tls-cert", pki.server_cert),
         "--tls-cert and --tls-key go together"),
        (("rpc", "serve", IFACES + ":TypesImpl", "-b", r"ncacn_np:[\pipe\x]", "--tls-cert", pki.server_cert,
          "--tls-key", pki.server_key), "--tls-cert on ncacn_np needs --tls-ca"),
        (("rpc", "serve", IFACES + ":TypesImpl", "-b", "ncalrpc:", *pki.server()),
         "--tls-cert applies to ncacn_ip_tcp and ncacn_np bindings"),
        (("rpc", "serve", IFACES + ":TypesImpl", "-b", "ncacn_ip_tcp:127.0.0.1[0]", "--tls-ca", pki.ca),
         "--tls-ca needs --tls-cert and --tls-key"),
        (("rpc", "call", "ncalrpc:[x]", IFACES + ":Types.echo_int", "1", "--tls-ca", pki.ca),
         "--tls-ca applies to ncacn_ip_tcp and to ncacn_np on another host"),
        (("rpc", "call", r"ncacn_np:[\pipe\x]", IFACES + ":Types.echo_int", "1", *alice),
         "--tls-cert applies to ncacn_ip_tcp and to ncacn_np on another host"),
        (("rpc", "call", rf"ncacn_np:{HOST}[\pipe\x]", IFACES + ":Types.echo_int", "1"),
         "give --tls-cert and --tls-key"),
        (("rpc", "call", "ncacn_ip_tcp:127.0.0.1[1]", IFACES + ":Types.echo_int", "1", "--tls-key", pki.server_key),
         "--tls-cert and --tls-key go together"),
    ]
    for args, message in cases:
        err = usage_error(*args)
        assert message in err and "Traceback" not in err, (args, err)


def test_files_that_do_not_load_name_their_option(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = str(tmp_path / "missing.pem")
    key, cert = pki.server_key, pki.server_cert
    other_key = str(pki.folder / "alice.key")
    remote = ("pipe", "serve", "x", "--remote")
    cases: list[tuple[tuple[str, ...], str]] = [
        ((*remote, "--tls-cert", missing, "--tls-key", key, "--tls-ca", pki.ca), "Invalid value for --tls-cert: cannot read"),
        ((*remote, "--tls-cert", str(junk), "--tls-key", key, "--tls-ca", pki.ca), "Invalid value for --tls-cert"),
        ((*remote, "--tls-cert", cert, "--tls-key", str(junk), "--tls-ca", pki.ca), "Invalid value for --tls-key"),
        ((*remote, "--tls-cert", cert, "--tls-key", other_key, "--tls-ca", pki.ca),
         f"Invalid value for --tls-key: {other_key} is not the key of {cert}"),
        ((*remote, "--tls-cert", cert, "--tls-key", key, "--tls-ca", str(junk)), "Invalid value for --tls-ca"),
        (("pipe", "send", rf"\\{HOST}\pipe\x", "hi", "--tls-cert", cert, "--tls-key", key, "--tls-ca", missing),
         "Invalid value for --tls-ca: cannot read"),
        (("rpc", "call", rf"ncacn_np:{HOST}[\pipe\x]", IFACES + ":Types.echo_int", "1", "--tls-cert", str(junk),
          "--tls-key", key), "Invalid value for --tls-cert"),
        (("rpc", "serve", IFACES + ":TypesImpl", "-b", "ncacn_ip_tcp:127.0.0.1[0]", "--tls-cert", cert,
          "--tls-key", other_key), "Invalid value for --tls-key"),
    ]
    for args, message in cases:
        err = usage_error(*args)
        assert message in err and "Traceback" not in err, (args, err)


def test_every_command_that_reaches_another_machine_has_the_three_options() -> None:
    import click

    from winipc.cli import _tls

    for group, name in (("pipe", "serve"), ("pipe", "send"), ("pipe", "cat"), ("rpc", "serve"), ("rpc", "call")):
        sub = cli.commands[group]
        assert isinstance(sub, click.Group)
        opts = [opt for param in sub.commands[name].params for opt in param.opts]
        for option in (_tls.CERT, _tls.KEY, _tls.CA):
            assert opts.count(option) == 1, (group, name, option)
