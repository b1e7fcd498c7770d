"""Shared fixtures: every test gets its own namespace root and must leave it empty."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def winipc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh WINIPC_ROOT per test; fails the test if an object is left behind."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("WINIPC_ROOT", str(root))
    # RPC servers do not take part in the network endpoint mapper unless a test says so
    # (tests/test_rpc_mapper.py gives each of its tests a port of its own)
    monkeypatch.setenv("WINIPC_RPC_EPM_PORT", "0")
    # nor do pipes that take remote clients hold the pipe port (tests/test_pipes_remote.py)
    monkeypatch.setenv("WINIPC_PIPE_PORT", "0")
    yield root
    left = []
    for entry in root.iterdir():
        if entry.name.startswith("local-"):
            # the user's clipboard persists, as a session's clipboard does on Windows
            left += [str(p) for p in entry.iterdir() if p.name != "clipboard"]
        elif entry.name in ("atoms", "clipboard"):
            continue  # atoms live until the machine restarts; clipboards keep their data
        elif entry.name.startswith(".dead."):
            continue
        elif entry.name == "pipe-remote" and entry.is_dir():
            left += [str(p) for p in entry.iterdir()]  # every intake closed with its pipe
        elif entry.name == "msmq" and entry.is_dir():
            # the queue store folder itself may stay; queues in it (and transaction tokens
            # of processes that are gone) may not
            left += [str(p) for p in entry.iterdir() if p.name != ".tx"]
            tx = entry / ".tx"
            if tx.is_dir():
                left += [str(p) for p in tx.iterdir()]
        else:
            left.append(str(entry))
    assert not left, f"objects left behind: {left}"


@pytest.fixture
def shared_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A sticky 1777 root (the machine-wide root's stand-in) and a copy of src both users read."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="winipc-xuser-"))
    os.chmod(base, 0o755)
    root = base / "root"
    root.mkdir()
    os.chmod(root, 0o1777)
    src = base / "src"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("WINIPC_ROOT", str(root))
    try:
        yield root, src
        left = [
            p.name
            for p in root.iterdir()
            if not p.name.startswith((".dead.", "local-")) and p.name not in ("atoms", "clipboard")
            and not (p.name == "pipe-remote" and not any(p.iterdir()))  # intakes closed with their pipes
        ]
        store = root / "msmq"
        if "msmq" in left and all(p.name == ".tx" for p in store.iterdir()):
            left.remove("msmq")  # the queue store folder may stay, empty
        assert not left, f"objects left behind: {left}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    """A TCP port nothing listens on now (on every IPv4 address)."""
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """Our environment, with this checkout's src first on PYTHONPATH (for child processes)."""
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts: asked to stop (SIGTERM), killed after 5 s, and reaped."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        p.communicate(timeout=10)


def run_py(code: str, *args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[str]:
    """Start ``code`` in a real Python process (stdout/stderr piped, text mode)."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = SRC + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        **kw,  # type: ignore[arg-type]
    )


def wait_line(proc: subprocess.Popen[str], expect: str, timeout: float = 10.0) -> str:
    """Read lines from ``proc.stdout`` until one starts with ``expect``."""
    import select

    assert proc.stdout is not None
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"process ended before {expect!r}; stderr:\n{err}")
        if line.startswith(expect):
            return line.rstrip("\n")
    raise AssertionError(f"no line starting with {expect!r} within {timeout} s")
