"""Process logs on stderr: plain text, or one JSON object per line in Dapr's log schema."""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import UTC, datetime
from typing import TextIO

from proxy.version import VERSION

# Dapr's level names (`warn`, not `warning`), which its log pipelines filter on.
_LEVELS = {
    "DEBUG": "debug",
    "INFO": "info",
    "WARNING": "warn",
    "ERROR": "error",
    "CRITICAL": "fatal",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Dapr's `--log-as-json` schema: time, level, type, msg, scope, instance, app_id, ver.

    `scope` is the logger's name (meshwire.server, …); a traceback is appended to `msg`, so one
    record is always one line.
    """

    def __init__(self, app_id: str | None = None, worker: int | None = None) -> None:
        super().__init__()
        self._fixed: dict[str, str | int] = {"instance": socket.gethostname(), "ver": VERSION}
        if app_id:
            self._fixed["app_id"] = app_id
        if worker is not None:  # one of `run --concurrency` workers: which one
            self._fixed["worker"] = worker

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": _LEVELS.get(record.levelname, record.levelname.lower()),
            "type": "log",
            "msg": message,
            "scope": record.name,
            **self._fixed,
        }
        return json.dumps(entry, ensure_ascii=False)


def configure(
    level: str,
    as_json: bool,
    app_id: str | None = None,
    stream: TextIO | None = None,
    worker: int | None = None,
) -> None:
    """Route every logger, and Python warnings, to one stderr handler; `level` is
    debug|info|warn|warning|error. A `run --concurrency` worker's lines say which it is."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(app_id, worker))
    elif worker is not None:
        worker_format = f"%(asctime)s %(levelname)s %(name)s [worker {worker}]: %(message)s"
        handler.setFormatter(logging.Formatter(worker_format))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("WARNING" if level.lower() == "warn" else level.upper())
    # A library's warnings.warn becomes a record (logger py.warnings) in the same format, so
    # with --log-as-json nothing on stderr is plain text.
    logging.captureWarnings(True)
