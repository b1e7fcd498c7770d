"""``python -m winipc.bench``: the same as ``winipc bench``."""

from winipc.bench.cli import main

main()
