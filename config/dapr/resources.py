"""Load every Dapr resource in the resources paths for one app, collecting every problem."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.dapr.app_configuration import DaprConfiguration, parse_configuration
from config.dapr.component import Component, parse_component
from config.dapr.documents import Document, read_documents
from config.dapr.endpoint import HTTPEndpoint, parse_http_endpoint
from config.dapr.errors import DaprResourceError, ResourceProblem
from config.dapr.fields import Fields, ResourceMeta, read_meta, scopes_overlap
from config.dapr.resiliency import Resiliency, parse_resiliency
from config.dapr.subscription import Subscription, parse_subscription
from config.walk import kind

__all__ = ["KINDS", "FileReport", "Resource", "Resources", "load_resources", "survey_resources"]

V1 = "dapr.io/v1alpha1"
V2 = "dapr.io/v2alpha1"
KINDS: dict[str, tuple[str, ...]] = {
    "Component": (V1,),
    "Configuration": (V1,),
    "Resiliency": (V1,),
    "Subscription": (V1, V2),
    "HTTPEndpoint": (V1,),
}
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "scopes", "auth")
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Resources:
    """The resources that apply to one app, in file order, and the warnings met loading them."""

    components: tuple[Component, ...] = ()
    configurations: tuple[DaprConfiguration, ...] = ()
    resiliencies: tuple[Resiliency, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    http_endpoints: tuple[HTTPEndpoint, ...] = ()
    warnings: tuple[ResourceProblem, ...] = ()  # unknown fields, which daprd ignores
    component_files: Mapping[str, str] = field(default_factory=dict)  # name → its file

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


Resource = Component | DaprConfiguration | Resiliency | Subscription | HTTPEndpoint


@dataclass(frozen=True, slots=True)
class FileReport:
    """One file as `survey_resources` found it: its resources (each with the document it came
    from), its problems and its warnings."""

    path: str
    resources: tuple[tuple[Document, Resource], ...]
    problems: tuple[ResourceProblem, ...]
    warnings: tuple[ResourceProblem, ...]


@dataclass(frozen=True, slots=True)
class _Defined:
    source: str
    scopes: tuple[str, ...]


class _Loader:
    """Reads documents into resources. With an `app_id`, only that app's resources in
    `namespace` (as daprd loads them); with None, every resource, whichever app it is for."""

    def __init__(self, app_id: str | None, namespace: str, environ: Mapping[str, str]) -> None:
        self.app_id = app_id
        self.namespace = namespace
        self.environ = environ
        self.problems: list[ResourceProblem] = []
        self.warnings: list[ResourceProblem] = []
        self.loaded: list[tuple[Document, Resource]] = []
        # (kind, namespace, name) -> where it is defined, and for which apps
        self.names: dict[tuple[str, str, str], list[_Defined]] = {}

    def files(self, path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        if not path.is_dir():
            self.problems.append(ResourceProblem(str(path), "$", "no such file or directory"))
            return []
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES)

    def file(self, path: Path) -> None:
        documents, problems = read_documents(path, self.environ)
        self.problems.extend(problems)
        for document in documents:
            self.document(document)

    def document(self, document: Document) -> None:
        fields = Fields()
        resource = self._parse(document.data, fields)
        self.problems.extend(
            ResourceProblem(document.source, p.path, p.message) for p in fields.problems
        )
        self.warnings.extend(
            ResourceProblem(document.source, p.path, p.message) for p in fields.warnings
        )
        if resource is None:
            return
        if isinstance(resource, Component | HTTPEndpoint):
            kind_name = type(resource).__name__
            key = (kind_name, resource.namespace, resource.name)
            defined = self.names.setdefault(key, [])
            clash = next((d for d in defined if scopes_overlap(d.scopes, resource.scopes)), None)
            if clash is not None:
                message = f"{kind_name} {resource.name!r} is already defined in {clash.source}"
                self.problems.append(ResourceProblem(document.source, "$.metadata.name", message))
                return
            defined.append(_Defined(document.source, resource.scopes))
        self.loaded.append((document, resource))

    def _parse(self, data: object, fields: Fields) -> Resource | None:
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            fields.report("$", f"expected a Dapr resource (an object), got {kind(data)}")
            return None
        meta = read_meta(data, fields, self.namespace)
        versions = KINDS.get(meta.kind)
        if versions is None:
            known = ", ".join(KINDS)
            fields.report("$.kind", f"unknown kind {meta.kind!r}; one of {known}")
            return None
        if meta.api_version not in versions:
            expected = " or ".join(versions)
            fields.report(
                "$.apiVersion", f"expected {expected} for a {meta.kind}, got {meta.api_version!r}"
            )
            return None
        fields.known_keys(data, "$", _TOP_LEVEL)
        if self.app_id is not None and (
            meta.namespace != self.namespace or not meta.in_scope(self.app_id)
        ):
            return None  # another namespace's, or scoped to other apps: daprd skips it
        return self._spec(data, fields.section(data, "spec", "$"), meta, fields)

    def _spec(
        self, doc: dict[str, object], spec: dict[str, object], meta: ResourceMeta, fields: Fields
    ) -> Resource:
        if meta.kind == "Component":
            return parse_component(doc, spec, meta, fields, self.environ)
        if meta.kind == "Configuration":
            service_name = self.app_id or "meshwire"
            return parse_configuration(doc, spec, meta, fields, service_name)
        if meta.kind == "Resiliency":
            return parse_resiliency(spec, meta, fields)
        if meta.kind == "Subscription":
            return parse_subscription(spec, meta, fields)
        return parse_http_endpoint(doc, spec, meta, fields, self.environ)


def load_resources(
    paths: Sequence[Path],
    app_id: str,
    namespace: str = "default",
    *,
    environ: Mapping[str, str] | None = None,
) -> Resources:
    """Every resource for `app_id` in the `.yaml`/`.yml` files of `paths` (directories, sorted,
    or single files). Resources scoped to other apps or set in another namespace are skipped.
    DaprResourceError lists every problem found, each with its file and path; unknown fields
    are only warnings (daprd ignores them), in `Resources.warnings` or the error's."""
    loader = _Loader(app_id, namespace, os.environ if environ is None else environ)
    for path in paths:
        for file in loader.files(Path(path)):
            loader.file(file)
    if loader.problems:
        raise DaprResourceError(loader.problems, loader.warnings)
    found = [resource for _, resource in loader.loaded]
    return Resources(
        components=tuple(r for r in found if isinstance(r, Component)),
        configurations=tuple(r for r in found if isinstance(r, DaprConfiguration)),
        resiliencies=tuple(r for r in found if isinstance(r, Resiliency)),
        subscriptions=tuple(r for r in found if isinstance(r, Subscription)),
        http_endpoints=tuple(r for r in found if isinstance(r, HTTPEndpoint)),
        warnings=tuple(loader.warnings),
        component_files={
            r.name: document.source for document, r in loader.loaded if isinstance(r, Component)
        },
    )


def survey_resources(
    paths: Sequence[str | Path], *, environ: Mapping[str, str] | None = None
) -> dict[str, list[FileReport]]:
    """Every resource in `paths` (files, or directories as `load_resources` reads them),
    whichever app or namespace it is for, reported file by file and keyed by the path as given:
    what `validate` checks. Names must be unique per kind and namespace among resources some
    app would load together. A file named twice (itself, and in its folder) is read once, and
    its report listed under both."""
    loader = _Loader(None, "default", os.environ if environ is None else environ)
    surveyed: dict[str, list[FileReport]] = {}
    seen: dict[Path, FileReport] = {}
    for path in paths:
        reports = surveyed.setdefault(str(path), [])
        before = len(loader.problems)
        files = loader.files(Path(path))
        if len(loader.problems) > before:  # the path itself is missing
            reports.append(FileReport(str(path), (), tuple(loader.problems[before:]), ()))
        for file in files:
            if file.resolve() not in seen:
                marks = len(loader.loaded), len(loader.problems), len(loader.warnings)
                loader.file(file)
                seen[file.resolve()] = FileReport(
                    str(file),
                    tuple(loader.loaded[marks[0] :]),
                    tuple(loader.problems[marks[1] :]),
                    tuple(loader.warnings[marks[2] :]),
                )
            reports.append(seen[file.resolve()])
    return surveyed
