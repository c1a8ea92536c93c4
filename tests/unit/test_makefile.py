"""The Makefile, CI and the docs name the same commands: every `make X` that the README,
CONTRIBUTING.md or .ci/run shows is a target, and .PHONY lists only targets that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"^([A-Za-z0-9_./$()-]+(?: [A-Za-z0-9_./$()-]+)*):(?!=)", re.MULTILINE)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
MAKE = re.compile(r"(?:^|[\s;&|(])make ([a-z][\w./-]*)", re.MULTILINE)


def _makefile() -> str:
    return (ROOT / "Makefile").read_text()


def _targets() -> set[str]:
    return {name for names in RULE.findall(_makefile()) for name in names.split()} - {".PHONY"}


def _phony() -> set[str]:
    lines = [line for line in _makefile().splitlines() if line.startswith(".PHONY:")]
    return {name for line in lines for name in line.removeprefix(".PHONY:").split()}


def _make_commands(text: str) -> set[str]:
    """The targets of the `make ...` commands in the code of a Markdown text."""
    blocks = FENCE.findall(text)
    spans = INLINE.findall(FENCE.sub("", text))
    return {target for code in blocks + spans for target in MAKE.findall(code)}


def test_phony_lists_only_targets_that_exist() -> None:
    assert _phony()
    assert _phony() <= _targets()


def test_every_make_command_in_the_docs_and_ci_is_a_phony_target() -> None:
    named = {
        doc: _make_commands((ROOT / doc).read_text()) for doc in ("README.md", "CONTRIBUTING.md")
    }
    named[".ci/run"] = set(MAKE.findall((ROOT / ".ci" / "run").read_text()))
    assert {"test", "run"} <= named["README.md"]
    assert {"lint", "test"} <= named[".ci/run"]
    for doc, targets in named.items():
        assert targets <= _phony(), f"{doc} runs make {sorted(targets - _phony())}"


def test_the_helpers_see_rules_and_commands() -> None:
    assert _make_commands("run `make lint` then\n```sh\nX=1 make test\n```\nmake sure") == {
        "lint",
        "test",
    }
    assert RULE.findall("a b: c\n\tx\nV := 1\n") == ["a b"]
