"""The ``picker3d`` command line: a public contract (add flags, never rename them).

Each sub-command lives in :mod:`picker3d.engine.commands` (its parser and a thin ``main``).
Bad input ends in one line ``picker3d: error: ...`` naming the culprit and exit status 2; no
traceback is shown (set PICKER3D_DEBUG=1 to see it).
"""
import argparse
import os
import sys

from .commands import COMMANDS
from .errors import InputError


def build_parser():
    from .._version import __version__
    parser = argparse.ArgumentParser(prog="picker3d", description="Deep-learning particle picking in cryo-ET.")
    parser.add_argument("--version", action="version", version=f"picker3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    declared = []
    for module, _ in COMMANDS.values():
        if module not in declared:          # copick-read and copick-write share a module
            module.add_args(sub)
            declared.append(module)
    return parser


def _report_error(line):
    """Also write the error line where a caller (a Scipion protocol) asked for it."""
    path = os.environ.get("PICKER3D_ERROR_FILE")
    if path:
        try:
            with open(path, "w") as fh:
                fh.write(line + "\n")
        except OSError:
            pass


def _fail(msg):
    line = f"picker3d: error: {msg}"
    print(line, file=sys.stderr)
    _report_error(line)
    return 2


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as exc:     # a removed flag (commands.common.Removed)
        return _fail(exc)
    try:
        return COMMANDS[args.command][1](args)
    except (InputError, OSError, MemoryError) as exc:
        # bad input, a full disk, a missing permission, no memory: one line, no traceback
        if os.environ.get("PICKER3D_DEBUG"):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            what = f"{exc.filename}: {exc.strerror}" if exc.filename else (exc.strerror or str(exc))
            msg = f"{what} (while running '{args.command}')"
        elif isinstance(exc, MemoryError):
            msg = f"out of memory while running '{args.command}'"
        else:
            msg = str(exc)
        return _fail(msg)
    except KeyboardInterrupt:
        print("picker3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
