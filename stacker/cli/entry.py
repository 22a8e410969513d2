"""The `stack` console script. Ctrl-C while the CLI is still importing (typer, rich, the command
modules) gives the same one line and exit code 130 as Ctrl-C inside a command, not a traceback."""

from __future__ import annotations

import sys

INTERRUPTED = "interrupted; rerun to resume"


def main() -> None:
    try:
        from stacker.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED + "\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
