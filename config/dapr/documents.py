"""Read the YAML documents of a resource file; Configuration documents are env-expanded first."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from config.dapr.errors import ResourceProblem

__all__ = ["Document", "expand_env", "read_documents"]

_ENV = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_MARKER = re.compile(r"^---(?=[ \t]|\r?$)", re.MULTILINE)


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Go's os.ExpandEnv, which daprd applies to Configuration files: unknown names become ""."""
    env = os.environ if environ is None else environ
    return _ENV.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


@dataclass(frozen=True, slots=True)
class Document:
    """One non-empty YAML document and where it came from."""

    source: str  # the file, plus "#n" when the file holds several documents
    data: object


def _chunks(text: str) -> list[tuple[int, str]]:
    """The file's documents as (first line number, text), split at `---` markers."""
    chunks: list[tuple[int, str]] = []
    start = 0
    line = 1
    for marker in _MARKER.finditer(text):
        chunks.append((line, text[start : marker.start()]))
        line += text.count("\n", start, marker.end())
        start = marker.end()
    chunks.append((line, text[start:]))
    return chunks


def _load(text: str, first_line: int, source: str) -> tuple[object, ResourceProblem | None]:
    try:
        return yaml.safe_load(text), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {first_line + mark.line}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        return None, ResourceProblem(source, "$", f"invalid YAML{where}: {reason}")


def _is_configuration(data: object) -> bool:
    return isinstance(data, dict) and data.get("kind") == "Configuration"


def read_documents(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[list[Document], list[ResourceProblem]]:
    """Every non-empty document in `path` and every problem met reading them."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [ResourceProblem(name, "$", f"cannot read the file: {exc}")]
    parsed = [(line, chunk, *_load(chunk, line, name)) for line, chunk in _chunks(text)]
    kept = [item for item in parsed if item[2] is not None or item[3] is not None]
    documents: list[Document] = []
    problems: list[ResourceProblem] = []
    for index, (first_line, chunk, data, problem) in enumerate(kept, start=1):
        source = name if len(kept) == 1 else f"{name}#{index}"
        if problem is None and _is_configuration(data):
            # daprd runs os.ExpandEnv over Configuration text before decoding it.
            data, problem = _load(expand_env(chunk, environ), first_line, source)
        if problem is not None:
            problems.append(ResourceProblem(source, problem.path, problem.message))
        else:
            documents.append(Document(source, data))
    return documents, problems
