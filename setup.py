"""Build the optional C extension; all package metadata lives in pyproject.toml.

``winipc._native._ring`` is the shared-memory ring of local pipe connections
(docs/fastpath.md). It needs Linux (sealed memfds, futexes). ``winipc._native._xstore``
holds a local queue's express messages in shared memory (docs/wire/msmq-express.md).
``winipc._native._rpcfast`` is winipc.rpc's call path for plain calls on a local ring
(docs/rpc.md).
``optional=True``: where they cannot be built, winipc still installs and runs without
the fast path, and express messages go to the queue's database.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "winipc._native._ring",
            ["src/winipc/_native/_ring.c"],
            # no -Werror here: a newer compiler's new warning must not silently drop the
            # fast path on a user's machine; tests/test_ring.py compiles with -Werror instead
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    )
    ext_modules.append(
        Extension(
            "winipc._native._xstore",
            ["src/winipc/_native/_xstore.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    )
    ext_modules.append(
        Extension(
            "winipc._native._rpcfast",
            ["src/winipc/_native/_rpcfast.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
