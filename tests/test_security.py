"""Security: a second OS user is refused before payload is read; squatters are refused."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from winipc import SecurityAttributes, pipes
from winipc import errors as W
from winipc._core.names import pipe_name
from xuser import USER
from xuser import python_for as _python_for
from xuser import second_user as _second_user


def _as_user(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [_python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, timeout=30, cwd="/",
    )


CLIENT = r"""
from winipc import pipes, errors as W
try:
    c = pipes.connect(r"\\.\pipe\guarded")
    c.write(b"SECRET")
    print("connected")
except W.AccessDenied as e:
    print("denied", e.winerror)
"""


def test_second_user_refused_by_default(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    with pipes.PipeInstance(r"\\.\pipe\guarded"):
        out = _as_user(user, CLIENT, root, src)
    assert out.stdout.strip() == "denied 5", out.stderr


def test_second_user_refused_by_server_check_before_payload(shared_root: tuple[Path, Path]) -> None:
    """File modes let everyone reach the socket; the allow list does not name the user."""
    user = _second_user()
    root, src = shared_root
    sec = SecurityAttributes(allow=[("uid:65534", "rwc")])  # nobody, not our second user
    with pipes.PipeInstance(r"\\.\pipe\guarded", security=sec) as inst:
        # the winipc client checks the pipe's security itself...
        out = _as_user(user, CLIENT, root, src)
        assert out.stdout.strip() == "denied 5", out.stderr
        # ...and a raw client that ignores it is dropped by the server unread
        sock_path = inst.socket_path
        assert sock_path is not None
        raw = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"SECRET")
    print("eof" if s.recv(10) == b"" else "data")
except (BrokenPipeError, ConnectionResetError):
    print("eof")
"""
        env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
        short = f"/tmp/wsec-{os.getpid()}"
        os.symlink(sock_path, short)
        try:
            attacker = subprocess.Popen(
                [_python_for(user), "-c", raw, short], user=user.pw_uid, group=user.pw_gid,
                extra_groups=[], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
            )
            result: dict[str, bytes] = {}

            def serve() -> None:
                inst.connect(timeout=20)
                result["first"] = inst.recv()

            t = threading.Thread(target=serve)
            t.start()
            a_out, a_err = attacker.communicate(timeout=20)
            assert a_out.strip() == "eof", a_err
            friend = pipes.connect(r"\\.\pipe\guarded")  # the owner is let in
            friend.write(b"hello")
            t.join(20)
            friend.close()
        finally:
            os.unlink(short)
        assert result["first"] == b"hello"  # the attacker's bytes were never read


def test_second_user_allowed_by_name(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    sec = SecurityAttributes(allow=[(f"user:{USER}", "rwc")])
    with pipes.PipeInstance(r"\\.\pipe\guarded", security=sec) as inst:
        t = threading.Thread(target=lambda: inst.connect(timeout=20))
        t.start()
        out = _as_user(user, CLIENT, root, src)
        t.join(20)
        assert out.stdout.strip() == "connected", out.stderr
        assert inst.recv() == b"SECRET"
        assert inst.peer.uid == user.pw_uid


def test_pre_created_squatter_is_refused_not_adopted(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    squat = r"""
import os, sys, socket, json, time
d = sys.argv[1]
os.mkdir(d, 0o755)
open(os.path.join(d, "record"), "w").write(json.dumps({"v": 1, "type": "pipe", "name": "x",
    "owner": os.getuid(), "creator_pid": os.getpid(), "created": 0,
    "attrs": {"open_mode": 3, "message": False, "max_instances": 255, "default_timeout": 0.05},
    "security": {"allow": [["everyone", -1, 15]], "deny": []}}))
h = open(os.path.join(d, "holders"), "w")
import fcntl, struct
fcntl.fcntl(h.fileno(), fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 1, 1, 0))
s = socket.socket(socket.AF_UNIX); s.bind(os.path.join(d, "0.sock")); s.listen(5)
os.chmod(os.path.join(d, "0.sock"), 0o777)
print("squatting", flush=True)
sys.stdin.readline()
"""
    path = root / pipe_name("squatted").storage_id
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [_python_for(user), "-c", squat, str(path)], user=user.pw_uid, group=user.pw_gid,
        extra_groups=[], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "squatting"
        with pytest.raises(W.AccessDenied):
            pipes.PipeInstance(r"\\.\pipe\squatted")  # another user's live pipe: not ours to join
        with pytest.raises(W.AccessDenied):
            pipes.connect(r"\\.\pipe\squatted", expect_server_uid=os.geteuid())
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()
    # dead now, but another user's: we may not reclaim it (sticky root) unless root
    shutil.rmtree(path)


def test_symlink_and_file_squatters_are_refused(winipc_root: Path) -> None:
    target = winipc_root.parent / "elsewhere"
    target.mkdir()
    os.symlink(target, winipc_root / pipe_name("linked").storage_id)
    with pytest.raises(W.AccessDenied):
        pipes.PipeInstance(r"\\.\pipe\linked")
    (winipc_root / pipe_name("linked").storage_id).unlink()
    (winipc_root / pipe_name("filed").storage_id).write_text("x")
    with pytest.raises(W.AccessDenied):
        pipes.PipeInstance(r"\\.\pipe\filed")
    (winipc_root / pipe_name("filed").storage_id).unlink()
    assert os.listdir(target) == []


def test_objects_are_owner_only_whatever_the_umask(winipc_root: Path) -> None:
    old = os.umask(0)
    try:
        with pipes.PipeInstance(r"\\.\pipe\private") as inst:
            st_dir = os.stat(inst.path)
            assert st_dir.st_mode & 0o777 == 0o700
            for f in os.listdir(inst.path):
                assert os.stat(os.path.join(inst.path, f)).st_mode & 0o077 == 0, f
    finally:
        os.umask(old)


def test_expect_server_uid() -> None:
    with pipes.PipeInstance(r"\\.\pipe\who"):
        with pytest.raises(W.AccessDenied):
            pipes.connect(r"\\.\pipe\who", expect_server_uid=os.geteuid() + 1)
        pipes.connect(r"\\.\pipe\who", expect_server_uid=os.geteuid()).close()


def test_root_checks_refuse_unsafe_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "open"
    bad.mkdir()
    os.chmod(bad, 0o777)  # writable by all, not sticky, not ours? ours: allowed only if we own it
    if os.geteuid() == 0:
        os.chown(bad, 65534, 65534)
    else:  # pragma: no cover
        pytest.skip("needs root to make a foreign-owned root")
    monkeypatch.setenv("WINIPC_ROOT", str(bad))
    with pytest.raises(W.AccessDenied):
        pipes.PipeInstance(r"\\.\pipe\x")
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    monkeypatch.setenv("WINIPC_ROOT", str(link))
    with pytest.raises(W.AccessDenied):
        pipes.PipeInstance(r"\\.\pipe\x")
