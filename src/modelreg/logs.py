"""Logs as JSON lines (MODELREG_LOG_FORMAT=json) and the access log (MODELREG_ACCESS_LOG=on):
one line per call with its request id, principal, method, status and latency.

The access log is written by the interceptor's outer wrapper (api/interceptors.py) only
when it is on; off, a call pays nothing for it. The request id is the caller's
`x-request-id` metadata when it sends one, else a fresh one.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

ACCESS = logging.getLogger("modelreg.access")
REQUEST_ID = "x-request-id"
# what a record may carry besides its message (the access log's fields)
FIELDS = ("request_id", "principal", "method", "code", "latency_ms", "peer")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, the access fields
    it carries, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            "message": record.getMessage(),
        }
        line |= {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, form: str) -> None:
    """The root logger's handler: text lines (the default) or JSON lines."""
    if form == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
