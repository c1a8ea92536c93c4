"""The `modelreg` command line (`modelreg.cli:main` is the console script).

parser.py builds it and runs the local commands (serve, migrate); commands.py is what
every client command shares; models.py, versions.py and artifacts.py hold the
commands by area; output.py prints results, progress.py draws the transfer bar.
"""

from modelreg.cli.commands import (
    DEFAULT_TARGET,
    EXIT_FAILED,
    EXIT_PARTIAL,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from modelreg.cli.parser import build_parser, main

__all__ = [
    "DEFAULT_TARGET",
    "EXIT_FAILED",
    "EXIT_PARTIAL",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
