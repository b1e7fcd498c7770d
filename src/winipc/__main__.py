"""``python -m winipc``: the ``winipc`` command."""

from winipc.cli import main

if __name__ == "__main__":
    main()
