"""Structured JSON logs, one object per line, without PHI or secrets.

Only whitelisted `extra` fields are written (hookInstance, service, rules fired, timings,
status...), so a careless `extra={...}` cannot leak a token or patient data into the log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ALLOWED_FIELDS = (
    "event",
    "service",
    "hook",
    "hookInstance",
    "status",
    "fired",
    "topics",
    "cards",
    "latencyMs",
    "evaluateMs",
    "fetchMs",
    "fetched",
    "noData",
    "rulesetVersion",
    "prefetchKey",
    "method",
    "path",
    "iss",
    "reason",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """JSON logs on stderr for the service and uvicorn (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # access lines carry query strings and client addresses: keep them out by default
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
