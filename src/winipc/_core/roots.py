"""Where named objects live on the file system.

Two roots, as Windows has two namespaces for kernel objects:

* the machine-wide root holds pipes, mailslots and ``Global\\`` kernel objects. By default
  it is ``/tmp/winipc-global``: a directory root creates with mode 1777 (sticky, like
  /tmp) on first use, so no user can remove or replace another's objects. A non-root user
  who finds it missing gets a 0700 one of their own; one owned by another non-root user is
  refused.
* the per-user root holds ``Local\\`` and unprefixed kernel objects:
  ``$XDG_RUNTIME_DIR/winipc`` when that runtime directory is ours and 0700, else
  ``/tmp/winipc-<uid>``; created 0700 and verified (owner, mode, not a symlink) on every
  resolution.

``WINIPC_ROOT=R`` moves both: the machine-wide root becomes ``R`` itself and the per-user
root ``R/local-<uid>``. The variable is read at every resolution, not cached at import.
"""

from __future__ import annotations

import os
import stat
import tempfile

from winipc._backends import os_backend as B
from winipc._core.names import ObjectName

DEFAULT_GLOBAL = os.path.join(tempfile.gettempdir(), "winipc-global")


def _env_root() -> str | None:
    value = os.environ.get("WINIPC_ROOT")
    return os.path.abspath(value) if value else None


def global_root() -> str:
    """The verified machine-wide root (created when missing)."""
    env = _env_root()
    path = env if env is not None else DEFAULT_GLOBAL
    B.verify_shared_root(path, create=True)
    return path


def local_root() -> str:
    """The verified per-user root (created 0700 when missing)."""
    env = _env_root()
    uid = B.uid()
    if env is not None:
        B.verify_shared_root(env, create=True)
        path = os.path.join(env, f"local-{uid}")
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(tempfile.gettempdir(), f"winipc-{uid}")
        if runtime:
            try:
                st = os.lstat(runtime)
                if (
                    stat.S_ISDIR(st.st_mode)
                    and st.st_uid == uid
                    and not stat.S_IMODE(st.st_mode) & 0o077
                ):
                    path = os.path.join(runtime, "winipc")
            except OSError:
                pass
    B.ensure_private_dir(path)
    return path


def root_for(name: ObjectName) -> str:
    """The root an object of this name lives under."""
    if name.family == "kernel" and name.scope == "local":
        return local_root()
    return global_root()


def all_roots() -> list[str]:
    """Both roots (per-user first), for listing and cleaning."""
    return [local_root(), global_root()]
