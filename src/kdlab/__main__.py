"""``python -m kdlab`` (and ``torchrun -m kdlab``) -> the kdlab CLI; also the ``kdlab`` console script.

:func:`main` imports the CLI itself, so a Ctrl-C while the imports are still running (the first
second or two) ends with ``aborted`` and exit status 130, like a Ctrl-C later on, not a traceback.
This module imports nothing heavy at its top.
"""

import sys


def main() -> None:
    """Console-script entry point: the CLI's :func:`kdlab.cli.main`, with Ctrl-C during its imports handled."""
    try:
        from kdlab.cli import main as cli_main
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
