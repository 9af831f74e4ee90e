"""Command line: ``python -m proxima.contracts.build [--check]``.

Compiles ``contracts/src`` and writes ``contracts/artifacts/<Name>.json``; with
``--check`` it only reports artifacts that are missing, different or stale and
exits with status 1 if there are any.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._build import ARTIFACTS_DIR, SOURCE_DIR, check_artifacts, compile_sources, write_artifacts
from ._errors import BuildError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the build command.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit status: 0 on success, 1 if artifacts are out of date in
        ``--check`` mode, 2 if compilation failed.
    """
    parser = argparse.ArgumentParser(
        prog="python -m proxima.contracts.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="compare only; write nothing")
    parser.add_argument("--source-dir", type=Path, default=SOURCE_DIR)
    parser.add_argument("--artifacts-dir", type=Path, default=ARTIFACTS_DIR)
    parser.add_argument("-v", "--verbose", action="store_true", help="show compiler warnings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    try:
        artifacts = compile_sources(args.source_dir)
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)  # noqa: T201
        return 2
    if args.check:
        diff = check_artifacts(artifacts, args.artifacts_dir)
        if diff.clean:
            print(f"{len(artifacts)} artifact(s) up to date in {args.artifacts_dir}")  # noqa: T201
            return 0
        print(  # noqa: T201
            "artifacts are out of date; run `python -m proxima.contracts.build`:",
            *diff.describe(),
            sep="\n  ",
            file=sys.stderr,
        )
        return 1
    diff = write_artifacts(artifacts, args.artifacts_dir)
    for line in diff.describe():
        print(f"updated {line}")  # noqa: T201
    print(f"{len(artifacts)} artifact(s) in {args.artifacts_dir}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
