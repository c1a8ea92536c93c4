"""JSON log lines: the fields a record carries, its traceback, and values JSON cannot
hold written as text rather than lost."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from modelreg.logs import JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("modelreg.app", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_record_is_one_line_of_json_with_its_fields() -> None:
    line = JsonFormatter().format(record("slow: %s", principal="ci", latency_ms=12.5))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "modelreg.app"
    assert parsed["principal"] == "ci"
    assert parsed["latency_ms"] == 12.5
    assert parsed["time"].endswith("+00:00")
    assert "request_id" not in parsed  # only what the record has


def test_an_exception_keeps_its_traceback_and_odd_values_become_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", peer=Path("/x"))
        failed.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in parsed["exception"]
    assert parsed["peer"] == "/x"
