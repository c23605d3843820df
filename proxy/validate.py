"""`meshwire validate`: check meshwire configs and Dapr resources, every problem with its path."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.dapr.component import Component
from config.dapr.documents import Document, read_documents
from config.dapr.errors import ResourceProblem
from config.dapr.resources import FileReport, survey_resources
from config.loader import ConfigError, format_problems, load_file
from config.walk import child
from filters.component_checks import ComponentIssue, check_components

__all__ = ["ResourcesPath", "add_validate_command", "is_dapr_file", "validate"]

DAPR_API = "dapr.io/"


class ResourcesPath(str):
    """A `--resources-path` entry among the FILEs: a folder of Dapr resources, as `run` reads.

    argparse hands `validate` one list, so a folder is told from a file by its type."""

    __slots__ = ()


def add_validate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser(
        "validate",
        help="check config files and Dapr resources",
        description=(
            "Check meshwire configs and Dapr resources (Component, Configuration, Resiliency, "
            "Subscription, HTTPEndpoint), telling them apart by content: a YAML document with "
            f"apiVersion {DAPR_API}... is a Dapr resource. Every problem is reported with its "
            "path, exit 2 if any. Unknown fields in Dapr resources are warnings (daprd ignores "
            "them); in meshwire configs they are problems."
        ),
    )
    # Both land in `files`, in command-line order; ResourcesPath marks the folders.
    validate.add_argument(
        "--resources-path",
        dest="files",
        action="append",
        type=ResourcesPath,
        default=[],
        metavar="DIR",
        help="a folder of Dapr resource YAMLs, checked together as `run` loads them "
        "(repeatable, before or after the FILEs; --components-path is an alias)",
    )
    validate.add_argument(
        "--components-path",
        dest="files",
        action="append",
        type=ResourcesPath,
        help=argparse.SUPPRESS,
    )
    validate.add_argument(
        "files",
        nargs="*",
        action="extend",
        metavar="FILE",
        help="a meshwire config, or a file of Dapr resources (several documents split by ---)",
    )


def is_dapr_file(path: Path) -> bool:
    """Whether some YAML document in the file is a Dapr resource (apiVersion dapr.io/...)."""
    documents, _ = read_documents(path, environ={})
    return any(
        isinstance(d.data, dict) and str(d.data.get("apiVersion", "")).startswith(DAPR_API)
        for d in documents
    )


@dataclass
class _Outcome:
    """What to print for one file: its problem and warning lines, in order, and whether any
    of them is a problem (otherwise the file is `ok`)."""

    name: str
    lines: list[str] = field(default_factory=list)
    failed: bool = False


def validate(inputs: Sequence[str]) -> bool:
    """Check every input and print `FILE: ok` (stdout) or its problems (stderr), warnings
    (stderr) either way; True when there is no problem. Dapr files and folders are checked
    together, as one `run` would load them; each meshwire config on its own."""
    out, err = sys.stdout, sys.stderr
    if not inputs:
        print("meshwire validate: give a FILE or --resources-path DIR", file=err)
        return False
    is_dapr = {name: _is_dapr_input(name) for name in inputs}
    dapr = [name for name in inputs if is_dapr[name]]
    surveyed = _dapr_outcomes(dapr) if dapr else {}
    ok = True
    for name in inputs:
        outcomes = surveyed.get(name) if is_dapr[name] else [_meshwire_outcome(name)]
        if not outcomes:  # a folder without resource files: run accepts it too
            print(f"{name}: ok (no .yaml or .yml files)", file=out)
            continue
        for outcome in outcomes:
            for line in outcome.lines:
                print(line, file=err)
            if outcome.failed:
                ok = False
            else:
                print(f"{outcome.name}: ok", file=out)
    return ok


def _is_dapr_input(name: str) -> bool:
    return isinstance(name, ResourcesPath) or (Path(name).is_file() and is_dapr_file(Path(name)))


def _meshwire_outcome(name: str) -> _Outcome:
    if Path(name).is_dir():
        hint = "a folder; give its files, or --resources-path for a folder of Dapr resources"
        return _Outcome(name, [f"{name}: $: {hint}"], failed=True)
    try:
        load_file(Path(name))
    except ConfigError as exc:
        return _Outcome(name, format_problems(exc.problems, name).splitlines(), failed=True)
    return _Outcome(name)


def _dapr_outcomes(paths: Sequence[str]) -> dict[str, list[_Outcome]]:
    """The outcomes of every file under `paths`, keyed by the input that named it."""
    surveyed = survey_resources(paths)
    reports = list({id(r): r for found in surveyed.values() for r in found}.values())
    with tempfile.TemporaryDirectory(prefix="meshwire-validate-") as data_dir:
        components = [
            (report, document, resource)
            for report in reports
            for document, resource in report.resources
            if isinstance(resource, Component)
        ]
        issues = check_components([c for _, _, c in components], Path(data_dir))
    where = {id(c): (report, document) for report, document, c in components}
    extra: dict[int, list[tuple[ResourceProblem, bool]]] = {}
    for issue in issues:
        report, document = where[id(issue.component)]
        problem = ResourceProblem(document.source, *_locate(issue, document))
        extra.setdefault(id(report), []).append((problem, issue.fatal))
    outcomes = {id(r): _report_outcome(r, extra.get(id(r))) for r in reports}
    return {given: [outcomes[id(r)] for r in found] for given, found in surveyed.items()}


def _report_outcome(
    report: FileReport, issues: list[tuple[ResourceProblem, bool]] | None
) -> _Outcome:
    problems = [*report.problems, *(p for p, fatal in issues or () if fatal)]
    ignored = [
        ResourceProblem(p.source, p.path, f"{p.message} (ignoreErrors: start-up leaves it out)")
        for p, fatal in issues or ()
        if not fatal
    ]
    warnings = [*report.warnings, *ignored]
    lines = [
        (_document(w, report), 0, f"{w.source}: warning: {w.path}: {w.message}") for w in warnings
    ]
    lines += [(_document(p, report), 1, str(p)) for p in problems]
    lines.sort(key=lambda line: line[:2])  # document by document, its warnings first
    return _Outcome(report.path, [line for _, _, line in lines], bool(problems))


def _document(problem: ResourceProblem, report: FileReport) -> int:
    """The problem's document number in its file (sources read FILE#n when there are several)."""
    head, _, number = problem.source.rpartition("#")
    return int(number) if head == report.path and number.isdigit() else 0


def _locate(issue: ComponentIssue, document: Document) -> tuple[str, str]:
    """Where in the Component's document the issue lies, and what to say there: its type, or
    the metadata entry the backend refused (names match case-insensitively, as in daprd), or
    the metadata list when the entry is missing or not known."""
    if issue.field == "type":
        return "$.spec.type", issue.message
    key = issue.metadata_key
    spec = document.data.get("spec") if isinstance(document.data, dict) else None
    items = spec.get("metadata") if isinstance(spec, dict) else None
    for i, item in enumerate(items if key is not None and isinstance(items, list) else ()):
        if isinstance(item, dict) and str(item.get("name", "")).lower() == str(key).lower():
            entry = child("$.spec.metadata", i)
            return (child(entry, "value") if "value" in item else entry), issue.message
    return "$.spec.metadata", (f"{key}: {issue.message}" if key else issue.message)
