"""The ``winipc`` command: ls, rm, clean, pipe serve/send/cat, bench registration.

Servers and object holders are real processes; ls/rm/clean also run in-process with
click's CliRunner. Every process started here is stopped by the test (or, if the test
fails first, by the ``procs`` fixture), and conftest checks that no object is left.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import winipc
from winipc.cli import cli

from conftest import child_env, run_py, wait_line

HOLD = """
import sys
from winipc._core import namespace
from winipc._core.names import parse
from winipc._core.security import SecurityAttributes
import winipc

kind, name = sys.argv[1], sys.argv[2]
if kind == "pipe":
    obj = winipc.PipeInstance(name)
    print("ready", obj.socket_path, flush=True)
    sys.stdin.read()
    obj.close()
elif kind == "client":
    obj = winipc.connect(name)
    print("ready", flush=True)
    sys.stdin.read()
    obj.close()
else:
    ref, _ = namespace.create(parse(name), kind, {}, SecurityAttributes())
    print("ready", ref.path, flush=True)
    sys.stdin.read()
    ref.release()
"""


def hold(
    procs: list[subprocess.Popen[str]], kind: str, name: str
) -> tuple[subprocess.Popen[str], str]:
    """A process holding one object (``kind``: pipe, client, or a kernel type)."""
    p = run_py(HOLD, kind, name, stdin=subprocess.PIPE)
    procs.append(p)
    line = wait_line(p, "ready")
    return p, line.partition(" ")[2]


def release(p: subprocess.Popen[str]) -> None:
    """Let a holder close its handle and exit normally."""
    _, err = p.communicate("", timeout=10)
    assert p.returncode == 0, err


def winipc_cmd(
    *args: str, input: str | bytes | None = None, timeout: float = 15
) -> subprocess.CompletedProcess[bytes]:
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run(
        [sys.executable, "-m", "winipc", *args],
        input=data,
        capture_output=True,
        env=child_env(),
        timeout=timeout,
    )


def serve(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    """``winipc pipe serve ARGS`` as a process, once it says it is serving."""
    p = subprocess.Popen(
        [sys.executable, "-m", "winipc", "pipe", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    procs.append(p)
    assert p.stderr is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stderr], [], [], max(0.0, deadline - time.monotonic()))
        line = p.stderr.readline() if ready else ""
        if line.startswith("serving "):
            return p
        if not line:
            break
    p.kill()
    _, err = p.communicate()
    raise AssertionError(f"server did not start: {err}")


def stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Stop a server as a user would; it must exit cleanly."""
    p.send_signal(sig)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    return out, err


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ls_json() -> list[dict[str, object]]:
    result = invoke("ls", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    return entries


def entry(entries: list[dict[str, object]], name: str) -> dict[str, object] | None:
    found = [e for e in entries if e["name"] == name]
    return found[0] if found else None


# --------------------------------------------------------------------------- ls, rm, clean


def test_ls_shows_a_live_pipe_of_another_process(procs: list[subprocess.Popen[str]]) -> None:
    p, sock_path = hold(procs, "pipe", r"\\.\pipe\LsDemo")
    assert os.path.exists(sock_path)

    result = invoke("ls")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if r"\\.\pipe\LsDemo" in line]
    assert len(rows) == 1, result.stdout
    cols = rows[0].split()
    assert cols[0] == "pipe"
    assert cols[3] == "1"  # handle count
    assert cols[4] == str(p.pid)
    assert "alive" in cols
    assert sock_path in result.stdout  # the listening instance's socket, whole

    entries = ls_json()
    e = entry(entries, r"\\.\pipe\LsDemo")
    assert e is not None, entries
    assert e["type"] == "pipe" and e["handles"] == 1 and e["creator_pid"] == p.pid
    assert e["alive"] is True
    assert e["fs_paths"] == [sock_path]
    assert isinstance(e["path"], str) and sock_path.startswith(e["path"])
    assert abs(float(e["created"]) - time.time()) < 60  # type: ignore[arg-type]

    only = invoke("ls", "--type", "event", "--json")
    assert json.loads(only.stdout) == []
    release(p)
    assert entry(ls_json(), r"\\.\pipe\LsDemo") is None


@pytest.mark.parametrize(
    ("kind", "name", "display"),
    [
        ("pipe", r"\\.\pipe\RmDemo", r"\\.\pipe\RmDemo"),
        ("event", r"Global\RmDemo", r"Global\RmDemo"),
        ("event", "RmDemo", r"Local\RmDemo"),
    ],
)
def test_rm_takes_a_live_name_out(
    procs: list[subprocess.Popen[str]], kind: str, name: str, display: str
) -> None:
    p, _ = hold(procs, kind, name)
    assert entry(ls_json(), display) is not None

    result = invoke("rm", name.upper())  # names are case-insensitive
    assert result.exit_code == 0, result.output
    assert display.upper() in result.stdout.upper()
    assert entry(ls_json(), display) is None

    again = invoke("rm", name)
    assert again.exit_code == 1
    assert again.stderr.startswith("error: [WinError 2 ERROR_FILE_NOT_FOUND]")
    release(p)  # its handle still works and closes without complaint


def test_rm_errors(procs: list[subprocess.Popen[str]]) -> None:
    bad = invoke("rm", "Nowhere\\x")
    assert bad.exit_code == 1 and "ERROR_INVALID_NAME" in bad.stderr

    p, _ = hold(procs, "pipe", "Hinted")
    hint = invoke("rm", "Hinted")  # a plain name is Local\Hinted, not the pipe
    assert hint.exit_code == 1
    assert "ERROR_FILE_NOT_FOUND" in hint.stderr and r"\\.\pipe\Hinted" in hint.stderr
    release(p)

    usage = invoke("rm")
    assert usage.exit_code == 2


def test_clean_removes_dead_leftovers_only(procs: list[subprocess.Popen[str]]) -> None:
    doomed, _ = hold(procs, "pipe", r"\\.\pipe\Doomed")
    stale_event, _ = hold(procs, "event", r"Global\DoomedToo")
    live, _ = hold(procs, "pipe", r"\\.\pipe\Alive")
    for p in (doomed, stale_event):
        p.kill()  # SIGKILL: no chance to clean up
        p.wait()

    entries = ls_json()
    for name in (r"\\.\pipe\Doomed", r"Global\DoomedToo"):
        e = entry(entries, name)
        assert e is not None and e["alive"] is False and e["handles"] == 0
    table = invoke("ls").stdout
    assert len([line for line in table.splitlines() if "Doomed" in line and "stale" in line]) == 2

    result = invoke("clean")
    assert result.exit_code == 0, result.output
    assert r"\\.\pipe\Doomed" in result.stdout and r"Global\DoomedToo" in result.stdout
    assert r"\\.\pipe\Alive" not in result.stdout

    entries = ls_json()
    assert [e["name"] for e in entries] == [r"\\.\pipe\Alive"]
    assert entries[0]["alive"] is True

    nothing = invoke("clean", "--json")
    assert nothing.exit_code == 0 and json.loads(nothing.stdout) == []
    release(live)


def test_clean_json_lists_what_it_removed(procs: list[subprocess.Popen[str]]) -> None:
    p, _ = hold(procs, "mutex", "CleanJson")
    p.kill()
    p.wait()
    result = invoke("clean", "--json")
    removed = json.loads(result.stdout)
    assert [(r["type"], r["name"], r["alive"]) for r in removed] == [
        ("mutex", r"Local\CleanJson", False)
    ]


def test_ls_and_clean_leave_service_folders_alone(winipc_root: Path) -> None:
    """The atom table, the clipboards and the queue store are not objects: `winipc ls`
    does not show them and `winipc clean` never removes them."""
    from winipc._core import atoms, roots

    atom = atoms.add("KeepMe")
    local = Path(roots.local_root())
    for folder in (local / "clipboard", winipc_root / "clipboard", winipc_root / "msmq"):
        folder.mkdir()
        (folder / "state").write_bytes(b"x")
    assert json.loads(invoke("ls", "--json").stdout) == []
    assert json.loads(invoke("clean", "--json").stdout) == []
    assert atoms.name_of(atom) == "KeepMe"
    for folder in (local / "clipboard", winipc_root / "clipboard", winipc_root / "msmq"):
        assert (folder / "state").read_bytes() == b"x"
    (winipc_root / "msmq" / "state").unlink()  # the leftover check allows only queues' folder


# --------------------------------------------------------------------------- pipes


@pytest.mark.parametrize(("mode", "sig"), [((), signal.SIGTERM), (("--message",), signal.SIGINT)])
def test_serve_echo_and_send(
    procs: list[subprocess.Popen[str]], mode: tuple[str, ...], sig: int
) -> None:
    server = serve(procs, "EchoDemo", "--echo", *mode)
    for data in ("hello, pipe", "déjà vu\n"):
        result = winipc_cmd("pipe", "send", r"\\.\pipe\EchoDemo", data, *mode, "--wait", "5")
        assert result.returncode == 0, result.stderr
        assert result.stdout == data.encode()
    from_stdin = winipc_cmd("pipe", "send", "echodemo", "-", "--wait", "5", input=b"\x00\xffraw")
    assert from_stdin.stdout == b"\x00\xffraw", from_stdin.stderr
    _, err = stop(server, sig)
    assert err.count("connected") == 3


@pytest.mark.parametrize("mode", [(), ("--message",)])
def test_serve_exec(procs: list[subprocess.Popen[str]], mode: tuple[str, ...]) -> None:
    server = serve(procs, "ExecDemo", "--exec", "tr a-z A-Z", *mode)
    for _ in range(2):  # one run of the command per client (or message)
        result = winipc_cmd("pipe", "send", "ExecDemo", "shout this", *mode, "--wait", "5")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"SHOUT THIS"
    stop(server)


def test_serve_prints_what_clients_send(procs: list[subprocess.Popen[str]]) -> None:
    server = serve(procs, "PrintDemo", "--message")
    result = winipc_cmd("pipe", "cat", "PrintDemo", input="first\nsecond\n")
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    out, _ = stop(server)
    assert out == "first\nsecond\n"


def test_send_to_a_missing_pipe_names_the_error() -> None:
    result = winipc_cmd("pipe", "send", "NoSuchPipe", "hello")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().startswith("error: [WinError 2 ERROR_FILE_NOT_FOUND]")


def test_send_to_a_busy_pipe_and_more_instances(procs: list[subprocess.Popen[str]]) -> None:
    server = serve(procs, "BusyDemo", "--echo")
    occupant, _ = hold(procs, "client", "BusyDemo")
    busy = winipc_cmd("pipe", "send", "BusyDemo", "x", "--wait", "0.2")
    assert busy.returncode == 1
    assert "ERROR_PIPE_BUSY" in busy.stderr.decode()
    release(occupant)
    stop(server)

    server = serve(procs, "BusyDemo", "--echo", "--instances", "2")
    e = entry(ls_json(), r"\\.\pipe\BusyDemo")
    assert e is not None and e["handles"] == 2 and len(e["fs_paths"]) == 2  # type: ignore[arg-type]
    row = [line for line in invoke("ls").stdout.splitlines() if "BusyDemo" in line]
    assert row[0].split()[3] == "2"
    occupant, _ = hold(procs, "client", "BusyDemo")
    ok = winipc_cmd("pipe", "send", "BusyDemo", "second instance", "--wait", "5")
    assert ok.returncode == 0 and ok.stdout == b"second instance", ok.stderr
    release(occupant)
    stop(server)


def test_cat_moves_stdin_through_an_echo_server(procs: list[subprocess.Popen[str]]) -> None:
    server = serve(procs, "CatDemo", "--echo")
    data = os.urandom(300_000)  # more than the socket buffers hold: both ways at once
    result = winipc_cmd("pipe", "cat", r"\\.\pipe\CatDemo", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data
    stop(server)

    server = serve(procs, "CatDemo", "--echo", "--message")
    result = winipc_cmd("pipe", "cat", "CatDemo", input="one\ntwo\n\nlast")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\n\nlast\n"
    stop(server)


def test_serve_refuses_a_pipe_of_another_type(procs: list[subprocess.Popen[str]]) -> None:
    server = serve(procs, "TypeDemo", "--echo")
    clash = winipc_cmd("pipe", "serve", "TypeDemo", "--message")
    assert clash.returncode == 1
    assert "error: [WinError 5 ERROR_ACCESS_DENIED]" in clash.stderr.decode()
    stop(server)


# --------------------------------------------------------------------------- the command


def test_version_and_usage_errors() -> None:
    version = invoke("--version")
    assert version.exit_code == 0 and winipc.__version__ in version.stdout
    assert invoke("pipe", "serve").exit_code == 2
    assert invoke("pipe", "serve", "x", "--instances", "0").exit_code == 2
    assert invoke("pipe", "serve", "x", "--echo", "--exec", "cat").exit_code == 2
    assert invoke("nosuchcommand").exit_code == 2


def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("winipc")
    if not script.exists():
        pytest.skip("the winipc console script is not installed next to this Python")
    result = subprocess.run(
        [str(script), "ls", "--json"], capture_output=True, env=child_env(), timeout=15
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_bench_is_registered_when_its_module_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command("bench")
    def fake_bench() -> None:
        """Fake benchmark."""
        click.echo("benched")

    module = types.ModuleType("winipc.bench.cli")
    module.bench = fake_bench  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "winipc.bench.cli", module)
    assert invoke("bench").stdout == "benched\n"
    assert invoke("bench", "--help").exit_code == 0

    monkeypatch.setitem(sys.modules, "winipc.bench.cli", None)  # import now fails
    result = invoke("--help")
    assert result.exit_code == 0 and " ls " in result.stdout
    assert invoke("bench").exit_code == 2
