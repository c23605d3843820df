"""Process logs: Dapr's JSON schema with --log-as-json, one line per record, Dapr level names."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from exporters import process_log
from proxy.version import VERSION


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logging")
def test_json_lines_follow_daprs_schema() -> None:
    out = io.StringIO()
    process_log.configure("warn", as_json=True, app_id="orders", stream=out)
    log = logging.getLogger("meshwire.server")
    log.info("not shown: below warn")
    log.warning("listener %s: %d connections", "ingress", 3)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("request failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the traceback stays inside its record's line
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "listener ingress: 3 connections"
    assert (first["level"], first["type"], first["scope"]) == ("warn", "log", "meshwire.server")
    assert first["app_id"] == "orders"
    assert first["ver"] == VERSION
    assert first["instance"]
    assert first["time"].endswith("Z")
    datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert second["level"] == "error"
    assert second["msg"].startswith("request failed\nTraceback")
    assert "ValueError: boom" in second["msg"]


@pytest.mark.usefixtures("restore_root_logging")
def test_text_lines_without_json_and_no_app_id_field() -> None:
    out = io.StringIO()
    process_log.configure("debug", as_json=False, stream=out)
    logging.getLogger("meshwire.admin").debug("level %s", "changed")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("DEBUG meshwire.admin: level changed")
    out = io.StringIO()
    process_log.configure("info", as_json=True, stream=out)
    logging.getLogger("meshwire").info("x")
    assert "app_id" not in json.loads(out.getvalue())
