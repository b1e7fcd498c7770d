"""Named clipboards and other OS users: owner-only by default, wider access only when granted."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from winipc import clipboard as cb
from winipc import errors as W
from winipc._core.security import SecurityAttributes
from xuser import USER, python_for, second_user

PROBE = """
from winipc import clipboard as cb
from winipc import errors as W
try:
    c = cb.Clipboard({name!r})
except W.AccessDenied as e:
    print("OPEN-DENIED", e.winerror)
else:
    try:
        print("TEXT", c.get_text())
    except W.AccessDenied as e:
        print("READ-DENIED", e.winerror)
    try:
        c.set_text("from the other user")
        print("WROTE")
    except W.AccessDenied as e:
        print("WRITE-DENIED", e.winerror)
    c.release()
try:
    cb.set_text("mine")  # the other user's own default clipboard works
    print("DEFAULT", cb.get_text())
except W.WinIPCError as e:
    print("DEFAULT-FAILED", e)
"""


@pytest.fixture
def xuser(shared_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[pwd.struct_passwd, Path, Path]]:
    user = second_user()
    root, src = shared_root
    monkeypatch.setenv("WINIPC_CLIPBOARD_BRIDGE", "0")
    shutil.copytree(os.path.dirname(msgpack.__file__), src / "msgpack")
    yield user, root, src
    # named clipboards keep their data (like the session's); remove this test's store
    shutil.rmtree(root / "clipboard", ignore_errors=True)
    for local in root.glob("local-*"):
        shutil.rmtree(local, ignore_errors=True)


def run_as(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> list[str]:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin",
           "WINIPC_CLIPBOARD_BRIDGE": "0"}
    proc = subprocess.run(
        [python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, cwd="/", timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_second_user_cannot_read_owner_only_clipboard(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    with cb.Clipboard("Global\\secret-clip") as c:
        c.set_text("top secret")
        out = run_as(user, PROBE.format(name="Global\\secret-clip"), root, src)
        assert out[0] == "OPEN-DENIED 5"
        assert out[1] == "DEFAULT mine"
        assert c.get_text() == "top secret"  # untouched
    folder = next((root / "clipboard").iterdir())
    assert (folder.stat().st_mode & 0o777) == 0o700
    for f in folder.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
    # nor can the other user squat the name first: it exists, it is ours
    assert (root / "clipboard").stat().st_mode & 0o1777 == 0o1777


def test_granted_user_can_share_a_named_clipboard(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    sec = SecurityAttributes(allow={f"user:{USER}": "rw"})
    try:
        c = cb.Clipboard("Global\\shared-clip", security=sec)
    except W.NotSupported:
        pytest.skip("no POSIX ACLs on this file system")
    with c:
        c.set_text("for both")
        out = run_as(user, PROBE.format(name="Global\\shared-clip"), root, src)
        assert out[:2] == ["TEXT for both", "WROTE"]
        assert c.get_text() == "from the other user"
        c.set_text("again mine")  # the owner can still replace what the grantee wrote
        assert c.get_text() == "again mine"


def test_read_only_grant(xuser: tuple[pwd.struct_passwd, Path, Path]) -> None:
    user, root, src = xuser
    sec = SecurityAttributes(allow={f"user:{USER}": "r"})
    try:
        c = cb.Clipboard("Global\\readonly-clip", security=sec)
    except W.NotSupported:
        pytest.skip("no POSIX ACLs on this file system")
    with c:
        c.set_text("look only")
        out = run_as(user, PROBE.format(name="Global\\readonly-clip"), root, src)
        assert out[:2] == ["TEXT look only", "WRITE-DENIED 5"]
        assert c.get_text() == "look only"
