"""Dapr's invocation ACL decision: defaults, identity matching, operation patterns, precedence."""

from __future__ import annotations

import pytest
import yaml

from config.dapr.access_control import AccessControl, AppPolicy, Operation, parse_access_control
from config.dapr.fields import Fields
from filters.access_control.policy import CallerIdentity, Decision, decide, normalize_path

SPEC = """
accessControl:
  defaultAction: deny
  trustDomain: public
  policies:
  - appId: app1
    defaultAction: allow
    trustDomain: public
    namespace: ns1
    operations:
    - {name: /op1, httpVerb: [POST, get], action: allow}
    - {name: /op2, httpVerb: ['*'], action: deny}
    - {name: /admin/**, httpVerb: ['*'], action: deny}
    - {name: /files/*/meta, httpVerb: [GET], action: deny}
  - appId: app1
    defaultAction: deny
    trustDomain: public
    namespace: ns4
  - appId: app2
    defaultAction: deny
    trustDomain: domain1
    namespace: ns2
    operations:
    - {name: /op3/a/*, httpVerb: [PUT, GET], action: allow}
    - {name: op4, httpVerb: [POST], action: allow}
    - {name: /v1/orders/**, httpVerb: [GET], action: allow}
    - {name: /op7/a/b*, httpVerb: ['*'], action: allow}
    - {name: /split, httpVerb: [GET], action: allow}
    - {name: /split, httpVerb: [DELETE], action: allow}
  - appId: app3
    trustDomain: domain1
    namespace: ns1
    operations:
    - {name: /op5, httpVerb: [POST], action: allow}
  - appId: app4
    defaultAction: deny
    trustDomain: domain1
    namespace: ns2
    operations:
    - {name: /op6, action: allow}
    - {name: /pkg.Orders/Create, action: allow}
"""


def _parse(text: str) -> AccessControl:
    fields = Fields()
    acl = parse_access_control(yaml.safe_load(text), fields)
    assert fields.problems == []
    assert acl is not None
    return acl


ACL = _parse(SPEC)
APP1 = CallerIdentity("app1", "ns1", "public")
APP1_NS4 = CallerIdentity("app1", "ns4", "public")
APP2 = CallerIdentity("app2", "ns2", "domain1")
APP3 = CallerIdentity("app3", "ns1", "domain1")
APP4 = CallerIdentity("app4", "ns2", "domain1")
ALLOW_ALL = AccessControl("allow", "public", ())


@pytest.mark.parametrize(
    ("acl", "caller", "verb", "path", "allowed", "level"),
    [
        # no ACL at all, and the global default for callers that match no policy
        (None, None, "GET", "/anything", True, "none"),
        (ALLOW_ALL, None, "GET", "/anything", True, "global"),
        (ACL, None, "POST", "/op1", False, "global"),
        (ACL, CallerIdentity("", "ns1", "public"), "POST", "/op1", False, "global"),
        (ACL, CallerIdentity("appX", "ns1", "public"), "POST", "/op1", False, "global"),
        (ACL, CallerIdentity("app1", "ns1", "private"), "POST", "/op1", False, "global"),
        (ACL, CallerIdentity("app1", "elsewhere", "public"), "POST", "/op1", False, "global"),
        # operation rules, verbs and the app default
        (ACL, APP1, "POST", "/op1", True, "operation"),
        (ACL, APP1, "get", "op1", True, "operation"),
        (ACL, APP1, "POST", "/op1/", True, "operation"),
        (ACL, APP1, "PUT", "/op1", True, "app"),
        (ACL, APP1, "DELETE", "/op2", False, "operation"),
        (ACL, APP1, "GET", "/OP2", False, "operation"),
        (ACL, APP1, "GET", "/opX", True, "app"),
        (ACL, APP1_NS4, "GET", "/opX", False, "app"),
        (ACL, APP2, "PUT", "/op4", False, "app"),
        (ACL, APP2, "POST", "/op4", True, "operation"),
        (ACL, APP3, "POST", "/op5", True, "operation"),
        (ACL, APP3, "PUT", "/op5", False, "global"),
        (ACL, APP3, "GET", "/other", False, "global"),
        # patterns: * is one segment (or part of one), ** any number
        (ACL, APP2, "PUT", "/op3/a/b", True, "operation"),
        (ACL, APP2, "PUT", "/op3/a/b/c", False, "app"),
        (ACL, APP2, "PUT", "/op3/b/b", False, "app"),
        (ACL, APP2, "GET", "/v1/orders", True, "operation"),
        (ACL, APP2, "GET", "/v1/orders/1/items/2", True, "operation"),
        (ACL, APP2, "GET", "/op7/a/bc", True, "operation"),
        (ACL, APP2, "GET", "/op7/a/c", False, "app"),
        (ACL, APP2, "DELETE", "/split", True, "operation"),
        (ACL, APP2, "POST", "/split", False, "app"),
        (ACL, APP1, "GET", "/files/report/meta", False, "operation"),
        (ACL, APP1, "GET", "/files/a/b/meta", True, "app"),
        # normalisation: slashes, dot segments, escapes and the query cannot dodge a rule
        (ACL, APP1, "GET", "/admin", False, "operation"),
        (ACL, APP1, "GET", "/admin/users/1", False, "operation"),
        (ACL, APP1, "GET", "//admin///users", False, "operation"),
        (ACL, APP1, "GET", "/public/../admin/users", False, "operation"),
        (ACL, APP1, "GET", "/../../admin", False, "operation"),
        (ACL, APP1, "GET", "/./admin/./x", False, "operation"),
        (ACL, APP1, "GET", "/%61dmin/x", False, "operation"),
        (ACL, APP1, "GET", "/admin?debug=1", False, "operation"),
        (ACL, APP1, "GET", "/admin/../op2", False, "operation"),
        # gRPC calls (no verb): the operation's action, names matched exactly
        (ACL, APP4, "", "/op6", True, "operation"),
        (ACL, APP4, "", "op6", True, "operation"),
        (ACL, APP4, "", "/OP6", False, "app"),
        (ACL, APP4, "", "/pkg.Orders/Create", True, "operation"),
        (ACL, APP4, "", "/pkg.Orders/Delete", False, "app"),
    ],
)
def test_decisions(
    acl: AccessControl | None,
    caller: CallerIdentity | None,
    verb: str,
    path: str,
    allowed: bool,
    level: str,
) -> None:
    decision = decide(acl, caller, verb, path)
    assert (decision.allowed, decision.level) == (allowed, level), decision.reason


def test_reasons_say_which_rule_decided() -> None:
    assert decide(ACL, APP1, "DELETE", "/op2") == Decision(
        False, "operation '/op2' denies DELETE /op2 for app 'app1' (namespace 'ns1')", "operation"
    )
    assert (
        "trust domain 'private'"
        in decide(ACL, CallerIdentity("app1", "ns1", "private"), "GET", "/").reason
    )
    assert "no verified identity" in decide(ACL, None, "GET", "/").reason
    assert "policy default action" in decide(ACL, APP1, "GET", "/x").reason


def test_acl_defaults_from_configuration() -> None:
    # Policies without a global default: deny. An empty section: no ACL at all.
    acl = _parse(
        "accessControl:\n  policies:\n  - {appId: a, trustDomain: public, namespace: default}\n"
    )
    assert acl.default_action == "deny"
    assert decide(acl, CallerIdentity("b", "default", "public"), "GET", "/").allowed is False
    assert parse_access_control({"accessControl": {}}, Fields()) is None


def test_a_policy_needs_its_identity_fields() -> None:
    fields = Fields()
    parse_access_control(
        yaml.safe_load(
            "accessControl:\n  policies:\n  - {operations: [{name: x, action: maybe}]}\n"
        ),
        fields,
    )
    assert [(p.path, p.message) for p in fields.problems] == [
        ("$.spec.accessControl.policies[0].operations[0].action",
         "must be one of allow, deny, got 'maybe'"),
        ("$.spec.accessControl.policies[0].appId", "missing required field 'appId'"),
        ("$.spec.accessControl.policies[0].trustDomain", "missing required field 'trustDomain'"),
        ("$.spec.accessControl.policies[0].namespace", "missing required field 'namespace'"),
    ]  # fmt: skip


def test_operations_keep_their_declared_shape() -> None:
    policy = ACL.policy_for("app2", "ns2")
    assert isinstance(policy, AppPolicy)
    assert policy.operations[1] == Operation("/op4", ("POST",), "allow")
    assert ACL.policy_for("app2", "ns1") is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("", "/"),
        ("path", "/path"),
        ("///path", "/path"),
        ("/a//b/", "/a/b"),
        ("../path", "/path"),
        ("/a/b/../../../c", "/c"),
        ("/a/./b", "/a/b"),
        ("path%72", "/pathr"),
        ("/a%2fb", "/a%2Fb"),
        ("/a%2e%2e/b", "/a../b"),
        ("/%2e%2e/admin", "/admin"),
        ("/q?x=/../y#frag", "/q"),
        ("/Mixed/Case", "/Mixed/Case"),
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal
