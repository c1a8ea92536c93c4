"""Roles, bindings and decide(): deny by default, roles cumulative, scopes, groups; and
the grant cache applying access events in any order without undoing a later one."""

from __future__ import annotations

import itertools

import pytest

from modelreg.domain.access import (
    GLOBAL,
    ROLE_PERMISSIONS,
    Binding,
    BindingKey,
    Bindings,
    Permission,
    Role,
    SubjectKind,
    binding_key,
    least_role,
)
from modelreg.domain.changelog import Change
from modelreg.domain.errors import InvalidArgument, Unavailable
from modelreg.domain.events import Event, EventKind
from modelreg.domain.grants import GrantCache
from modelreg.domain.names import NamespaceKey, RegistryKey
from modelreg.domain.principals import Principal, Proof

ALICE = Principal("alice", Proof.API_KEY)
BOB = Principal("bob", Proof.JWT, frozenset({"ml-team"}))
P = Permission


def bound(role: Role, subject: str, scope: str = "ml", *, group: bool = False) -> Binding:
    kind = SubjectKind.GROUP if group else SubjectKind.PRINCIPAL
    return Binding(BindingKey(role, kind, subject, scope), "root")


def test_nothing_is_allowed_without_a_binding() -> None:
    bindings = Bindings()
    for permission in Permission:
        decision = bindings.decide(ALICE, permission, "ml")
        assert not decision.allowed
        assert decision.binding is None


def test_roles_are_cumulative() -> None:
    order = list(Role)
    for lower, higher in itertools.pairwise(order):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher]
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {P.MODELS_READ}),
        (Role.EDITOR, {P.MODELS_READ, P.MODELS_WRITE, P.ALIASES_MOVE}),
        (Role.APPROVER, {P.MODELS_READ, P.MODELS_WRITE, P.ALIASES_MOVE, P.ALIASES_APPROVE}),
        (Role.ADMIN, set(Permission)),
    ],
)
def test_each_role_holds_exactly_its_permissions(role: Role, allowed: set[Permission]) -> None:
    bindings = Bindings()
    bindings.add(bound(role, "alice"))
    got = {p for p in Permission if bindings.decide(ALICE, p, "ml").allowed}
    assert got == allowed


def test_a_namespace_binding_holds_in_that_namespace_only() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.EDITOR, "alice", "ml"))
    assert bindings.decide(ALICE, P.MODELS_WRITE, "ml").allowed
    assert not bindings.decide(ALICE, P.MODELS_WRITE, "vision").allowed
    assert not bindings.decide(ALICE, P.MODELS_READ, GLOBAL).allowed  # global calls need global


def test_a_global_binding_holds_everywhere() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.VIEWER, "alice", GLOBAL))
    assert bindings.decide(ALICE, P.MODELS_READ, "anything").allowed
    assert bindings.decide(ALICE, P.MODELS_READ, GLOBAL).allowed
    assert not bindings.decide(ALICE, P.MODELS_WRITE, "anything").allowed


def test_a_group_binding_holds_for_its_members() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.EDITOR, "ml-team", group=True))
    decision = bindings.decide(BOB, P.MODELS_WRITE, "ml")
    assert decision.allowed
    assert decision.binding == BindingKey(Role.EDITOR, SubjectKind.GROUP, "ml-team", "ml")
    assert not bindings.decide(ALICE, P.MODELS_READ, "ml").allowed
    # a principal named like the group is not in it
    assert not bindings.decide(Principal("ml-team", Proof.API_KEY), P.MODELS_READ, "ml").allowed


def test_the_deciding_binding_is_the_narrowest() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.ADMIN, "alice", GLOBAL))
    bindings.add(bound(Role.VIEWER, "alice", "ml"))
    decision = bindings.decide(ALICE, P.MODELS_READ, "ml")
    assert decision.binding == BindingKey(Role.VIEWER, SubjectKind.PRINCIPAL, "alice", "ml")
    assert "viewer for alice in namespace ml" in decision.reason


def test_a_denial_says_what_is_missing_and_what_to_ask_for() -> None:
    decision = Bindings().decide(ALICE, P.MODELS_WRITE, "ml")
    assert decision.reason == (
        "alice may not models.write in namespace ml; ask an admin:"
        " modelreg access grant editor alice --namespace ml"
    )
    assert least_role(P.ALIASES_APPROVE) is Role.APPROVER


def test_removing_a_binding_takes_effect_at_once() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.VIEWER, "alice"))
    assert bindings.decide(ALICE, P.MODELS_READ, "ml").allowed  # memoized now
    bindings.remove(BindingKey(Role.VIEWER, SubjectKind.PRINCIPAL, "alice", "ml"))
    assert not bindings.decide(ALICE, P.MODELS_READ, "ml").allowed


def test_readable_namespaces() -> None:
    bindings = Bindings()
    bindings.add(bound(Role.VIEWER, "alice", "ml"))
    bindings.add(bound(Role.EDITOR, "ml-team", "vision", group=True))
    assert bindings.readable(ALICE) == frozenset({"ml"})
    assert bindings.readable(BOB) == frozenset({"vision"})
    bindings.add(bound(Role.VIEWER, "bob", GLOBAL))
    assert bindings.readable(BOB) is None  # every namespace


def test_binding_key_checks_every_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        binding_key(role="owner", subject="a b", group=False, namespace="ML")
    assert {f for f, _ in caught.value.violations} == {"role", "subject", "namespace"}
    key = binding_key(role="viewer", subject="spiffe://c/ns/ml/sa/t", group=False, namespace="")
    assert key.scope == GLOBAL
    assert key.command() == "modelreg access grant viewer spiffe://c/ns/ml/sa/t"


def _granted(binding: Binding) -> Event:
    scope = NamespaceKey(binding.key.scope) if binding.key.scope else RegistryKey()
    return Event(
        EventKind.ACCESS_GRANTED, scope, "root", after=binding.to_json(), latest_moved=False
    )


def _revoked(binding: Binding) -> Event:
    scope = NamespaceKey(binding.key.scope) if binding.key.scope else RegistryKey()
    return Event(
        EventKind.ACCESS_REVOKED, scope, "root", before=binding.to_json(), latest_moved=False
    )


async def test_the_cache_follows_grants_and_revocations() -> None:
    cache = GrantCache()
    viewer = bound(Role.VIEWER, "alice")
    await cache([Change(1, (_granted(viewer),)), Change(2, (_revoked(viewer),)), Change(3, ())])
    assert not cache.decide(ALICE, P.MODELS_READ, "ml").allowed
    assert cache.revision == 3
    await cache([Change(4, (_granted(viewer),))])
    assert cache.decide(ALICE, P.MODELS_READ, "ml").allowed


async def test_an_older_event_never_undoes_a_change_applied_early() -> None:
    cache = GrantCache()
    viewer = bound(Role.VIEWER, "alice")
    cache.applied(_revoked(viewer), 11)  # the writer applies its revocation at once
    await cache([Change(10, (_granted(viewer),)), Change(11, (_revoked(viewer),))])
    assert not cache.decide(ALICE, P.MODELS_READ, "ml").allowed
    await cache([Change(10, (_granted(viewer),))])  # a batch applied twice changes nothing
    assert not cache.decide(ALICE, P.MODELS_READ, "ml").allowed


async def test_waiting_for_a_revision_the_cache_has_not_reached_is_unavailable() -> None:
    cache = GrantCache()
    await cache([Change(5, ())])
    await cache.reached(5, wait_seconds=0)
    with pytest.raises(Unavailable):
        await cache.reached(6, wait_seconds=0)  # zero wait: refuses at once, no timing
