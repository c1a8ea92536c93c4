"""Authorization: roles, the permissions each holds, role bindings, and `decide`.

Deny by default: a call is allowed only when a binding of the caller (by name) or of one
of its groups, in the call's namespace or globally, holds a role that has the permission.

Roles are cumulative, viewer < editor < approver < admin:

    viewer    models.read         get, list, resolve, download, watch, alias history
    editor    + models.write      create models and versions, push/upload, finalize,
                                  update metadata, archive/restore versions
              + aliases.move      set, delete and roll back (unprotected) aliases
    approver  + aliases.approve   approve or reject a protected alias change
    admin     + models.delete     delete and undelete models
              + namespaces.create
              + access.read       list bindings, explain anyone's access
              + access.admin      grant and revoke roles
              + keys.manage       API keys of other principals
              + policies.manage   protected-alias policies
              + audit.read        the audit log and the denials
              + webhooks.manage   webhook subscriptions (global scope only)
              + server.admin      server statistics (global scope only)

A binding in namespace `ns` applies to calls on `ns`; a global binding (scope "") to
every namespace and to the calls that act on no namespace (those are decided on global
bindings only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import check_id, check_principal
from modelreg.domain.principals import Principal

GLOBAL = ""  # the scope of a global binding


class Role(StrEnum):
    """A role, bound to a principal or a group; each includes the one before it."""

    VIEWER = "viewer"
    EDITOR = "editor"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    """What one RPC needs (api/permissions.py maps every RPC to one)."""

    MODELS_READ = "models.read"
    MODELS_WRITE = "models.write"
    ALIASES_MOVE = "aliases.move"
    ALIASES_APPROVE = "aliases.approve"
    MODELS_DELETE = "models.delete"
    MODELS_IMPORT = "models.import"  # versions with their own numbers and times
    NAMESPACES_CREATE = "namespaces.create"
    ACCESS_READ = "access.read"
    ACCESS_ADMIN = "access.admin"
    KEYS_MANAGE = "keys.manage"
    POLICIES_MANAGE = "policies.manage"
    AUDIT_READ = "audit.read"
    WEBHOOKS_MANAGE = "webhooks.manage"
    SERVER_ADMIN = "server.admin"


_VIEWER = frozenset({Permission.MODELS_READ})
_EDITOR = _VIEWER | {Permission.MODELS_WRITE, Permission.ALIASES_MOVE}
_APPROVER = _EDITOR | {Permission.ALIASES_APPROVE}
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.EDITOR: _EDITOR,
    Role.APPROVER: _APPROVER,
    Role.ADMIN: frozenset(Permission),
}


def least_role(permission: Permission) -> Role:
    """The smallest role that holds `permission` (what a denial tells the caller to ask for)."""
    return next(role for role in Role if permission in ROLE_PERMISSIONS[role])


class SubjectKind(StrEnum):
    """Whom a binding names."""

    PRINCIPAL = "principal"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class BindingKey:
    """What makes a binding unique: the role, whom it names, and where."""

    role: Role
    kind: SubjectKind
    subject: str
    scope: str  # GLOBAL, or a namespace id

    def describe(self) -> str:
        """`editor for group ml-team in namespace ml`, for messages."""
        who = f"group {self.subject}" if self.kind is SubjectKind.GROUP else self.subject
        return f"{self.role} for {who} {_where(self.scope)}"

    def command(self) -> str:
        """The CLI command that makes this binding."""
        group = " --group" if self.kind is SubjectKind.GROUP else ""
        scope = f" --namespace {self.scope}" if self.scope else ""
        return f"modelreg access grant {self.role} {self.subject}{group}{scope}"


@dataclass(frozen=True, slots=True)
class Binding:
    """A role bound to a principal or a group, globally or in one namespace."""

    key: BindingKey
    created_by: str = ""
    create_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The event snapshot (before/after) of this binding."""
        key = self.key
        return {
            "role": key.role.value,
            "subject_kind": key.kind.value,
            "subject": key.subject,
            "scope": key.scope,
            "created_by": self.created_by,
            "create_time": self.create_time.isoformat() if self.create_time else None,
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Binding:
        """The binding an event snapshot describes (ValueError/KeyError if it is not one)."""
        key = BindingKey(
            Role(stored["role"]),
            SubjectKind(stored["subject_kind"]),
            str(stored["subject"]),
            str(stored["scope"]),
        )
        created = stored.get("create_time")
        when = datetime.fromisoformat(created) if isinstance(created, str) else None
        return cls(key, str(stored.get("created_by", "")), when)


def binding_key(*, role: str, subject: str, group: bool, namespace: str) -> BindingKey:
    """A checked binding key; InvalidArgument naming every bad field."""
    violations: list[tuple[str, str]] = []
    parsed_role = None
    try:
        parsed_role = Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        violations.append(("role", f"unknown role {role[:32]!r}; one of {known}"))
    for check, value, name in (
        (check_principal, subject, "subject"),
        (check_id, namespace, "namespace"),
    ):
        if name == "namespace" and not value:
            continue  # "" is the global scope
        try:
            check(value, name)
        except InvalidArgument as exc:
            violations += exc.violations
    if violations or parsed_role is None:
        raise InvalidArgument(violations)
    kind = SubjectKind.GROUP if group else SubjectKind.PRINCIPAL
    return BindingKey(parsed_role, kind, subject, namespace)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may `principal` have `permission` in `namespace`?", and why."""

    allowed: bool
    principal: str
    permission: Permission
    namespace: str  # GLOBAL for a call that acts on no namespace
    binding: BindingKey | None = None  # the binding that allowed it (None: denied)

    @property
    def reason(self) -> str:
        """Why, in a sentence (built only when asked: the hot path never reads it)."""
        where = _where(self.namespace)
        if self.binding is not None:
            return (
                f"{self.principal} may {self.permission} {where}:"
                f" granted by the binding {self.binding.describe()}"
            )
        return f"{self.principal} may not {self.permission} {where}; ask an admin: {self.ask()}"

    def ask(self) -> str:
        """The command that would grant what is missing."""
        role = least_role(self.permission)
        return BindingKey(role, SubjectKind.PRINCIPAL, self.principal, self.namespace).command()


def _where(scope: str) -> str:
    return f"in namespace {scope}" if scope else "globally"


# Effective grants of one caller: scope -> permission -> the binding that grants it.
Effective = dict[str, dict[Permission, BindingKey]]
MAX_CALLERS = 10_000  # callers whose effective grants are kept; past it the memo restarts


@dataclass
class Bindings:
    """Every role binding, in memory, with each caller's effective grants memoized.

    `decide` reads two dicts on a memo hit and allocates one Decision; the memo is
    dropped whenever a binding changes (bindings change rarely, lookups constantly).
    """

    _by_subject: dict[tuple[SubjectKind, str], dict[BindingKey, Binding]] = field(
        default_factory=dict
    )
    _memo: dict[tuple[str, frozenset[str]], Effective] = field(default_factory=dict)

    def replace(self, bindings: Iterable[Binding]) -> None:
        """Hold exactly `bindings`."""
        self._by_subject.clear()
        for binding in bindings:
            self._put(binding)
        self._memo.clear()

    def add(self, binding: Binding) -> None:
        self._put(binding)
        self._memo.clear()

    def remove(self, key: BindingKey) -> None:
        held = self._by_subject.get((key.kind, key.subject))
        if held is not None and held.pop(key, None) is not None:
            if not held:
                del self._by_subject[(key.kind, key.subject)]
            self._memo.clear()

    def all(self) -> list[Binding]:
        return [b for held in self._by_subject.values() for b in held.values()]

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_subject.values())

    def _put(self, binding: Binding) -> None:
        key = binding.key
        self._by_subject.setdefault((key.kind, key.subject), {})[key] = binding

    def decide(self, principal: Principal, permission: Permission, namespace: str) -> Decision:
        """Allowed if a binding of the caller or its groups, in `namespace` or global,
        holds `permission`; denied otherwise (deny by default)."""
        effective = self._effective(principal)
        found = None
        if namespace:
            held = effective.get(namespace)
            if held is not None:
                found = held.get(permission)
        if found is None:
            held = effective.get(GLOBAL)
            if held is not None:
                found = held.get(permission)
        return Decision(found is not None, principal.name, permission, namespace, found)

    def decide_anywhere(self, principal: Principal, permission: Permission) -> Decision:
        """Allowed if any binding of the caller, in any scope, holds `permission`."""
        effective = self._effective(principal)
        held = effective.get(GLOBAL, {}).get(permission)
        if held is None:
            held = next((g[permission] for g in effective.values() if permission in g), None)
        return Decision(held is not None, principal.name, permission, GLOBAL, held)

    def readable(self, principal: Principal) -> frozenset[str] | None:
        """The namespaces `principal` may read; None: every namespace (a global grant)."""
        effective = self._effective(principal)
        if Permission.MODELS_READ in effective.get(GLOBAL, {}):
            return None
        return frozenset(
            scope for scope, held in effective.items() if Permission.MODELS_READ in held
        )

    def _effective(self, principal: Principal) -> Effective:
        memo_key = (principal.name, principal.groups)
        effective = self._memo.get(memo_key)
        if effective is None:
            if len(self._memo) >= MAX_CALLERS:
                self._memo.clear()
            effective = self._memo[memo_key] = self._compute(principal)
        return effective

    def _compute(self, principal: Principal) -> Effective:
        """Per scope, for each permission the binding that grants it: the principal's own
        bindings before its groups', the smallest role first (what ExplainAccess names)."""
        subjects = [(SubjectKind.PRINCIPAL, principal.name)]
        subjects += [(SubjectKind.GROUP, g) for g in sorted(principal.groups)]
        effective: Effective = {}
        for subject in subjects:
            held = self._by_subject.get(subject, {})
            for key in sorted(held, key=lambda k: (list(Role).index(k.role), k.scope)):
                granted = effective.setdefault(key.scope, {})
                for permission in ROLE_PERMISSIONS[key.role]:
                    granted.setdefault(permission, key)
        return effective
