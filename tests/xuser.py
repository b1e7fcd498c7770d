"""A second OS user for cross-user tests (tests run as root in CI and create one)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

USER = "winipc-test2"
REQUIRE = bool(os.environ.get("WINIPC_REQUIRE_ALL"))


def second_user() -> pwd.struct_passwd:
    """The second user, created on first use; skips (fails in CI) when not root."""
    if os.geteuid() != 0:
        if REQUIRE:
            pytest.fail("cross-user tests need root to create a second user")
        pytest.skip("cross-user tests need root")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
        return pwd.getpwnam(USER)


def python_for(user: pwd.struct_passwd) -> str:
    """A Python >= 3.10 interpreter that ``user`` may run (ours may sit under /root)."""
    for cand in (sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not cand or not os.path.exists(cand):
            continue
        try:
            r = subprocess.run(
                [cand, "-c", "import sys; assert sys.version_info >= (3, 10)"],
                user=user.pw_uid, group=user.pw_gid, extra_groups=[], capture_output=True,
            )
        except OSError:
            continue
        if r.returncode == 0:
            return cand
    pytest.fail(f"no Python >= 3.10 that user {USER} can run")
