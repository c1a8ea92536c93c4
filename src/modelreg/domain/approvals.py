"""Protected aliases: a policy (per model, or a namespace default) names the aliases that
move only through a change request approved by someone other than its requester.

A change request binds the target version's number AND digest, and records the alias
target when it was made. The approval that reaches the needed count applies the move in
its own transaction, compare-and-set against that target and that digest; a request
overtaken by another move (or whose version changed) is ABORTED and moves nothing.

Decisions (docs/architecture.md, "Protected aliases"):
- The requester's own approve is PERMISSION_DENIED (`REQUESTER_CANNOT_APPROVE`): it is
  about who calls, not the request's state, and changes nothing.
- An overtaken request answers ABORTED (`REQUEST_OVERTAKEN`), and its ABORTED state and
  event are committed: the request cannot be applied any more, and a later approver must
  not find it PENDING. The alias and every other table stay unchanged.
- Expiry is written at the first touch after `expire_time` (approve or reject), with its
  event, and answered FAILED_PRECONDITION `REQUEST_EXPIRED`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from modelreg.domain import events
from modelreg.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from modelreg.domain.events import EventKind
from modelreg.domain.models import ensure_active
from modelreg.domain.names import (
    AliasKey,
    ModelKey,
    NamespaceKey,
    VersionKey,
    check_alias,
    check_number,
    parse_alias_name,
)
from modelreg.domain.ports import EventLog, ModelWrites, Transactions, VersionWrites
from modelreg.domain.types import Alias, VersionState

COLLECTION = "changeRequests"
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
MAX_APPROVALS = 10
PENDING, APPLIED, REJECTED, EXPIRED, ABORTED = (
    "PENDING",
    "APPLIED",
    "REJECTED",
    "EXPIRED",
    "ABORTED",
)


@dataclass(frozen=True, slots=True)
class AliasPolicy:
    """Which aliases of a model (model "" = the namespace default) are protected."""

    namespace: str
    model: str
    aliases: tuple[str, ...]
    approvals: int = 1
    updater: str = ""

    def needed(self, alias: str) -> int:
        """Approvals a move of `alias` needs (0: it is not protected)."""
        return self.approvals if alias in self.aliases else 0


@dataclass(frozen=True, slots=True)
class Approval:
    """One approver's approval of a change request."""

    approver: str
    time: datetime
    comment: str


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """A requested move of a protected alias."""

    request_id: str
    alias: AliasKey
    number: int
    digest: str
    expected_number: int  # the alias target when requested (0: it did not exist)
    reason: str
    requester: str
    approvals_needed: int
    state: str
    create_time: datetime
    expire_time: datetime
    decide_time: datetime | None = None
    decider: str = ""
    decision: str = ""
    approvals: tuple[Approval, ...] = ()

    @property
    def name(self) -> str:
        return request_name(self.alias, self.request_id)


def request_name(alias: AliasKey, request_id: str) -> str:
    return f"{alias.name}/{COLLECTION}/{request_id}"


def parse_request_name(name: str, field: str = "name") -> tuple[AliasKey, str]:
    """`namespaces/{ns}/models/{m}/aliases/{a}/changeRequests/{id}`."""
    head, sep, request_id = name.rpartition(f"/{COLLECTION}/")
    if not sep or not request_id or not request_id.isalnum() or len(request_id) > 64:
        raise InvalidArgument.field(
            field, f"must be {{alias}}/{COLLECTION}/{{id}}, got {name[:100]!r}"
        )
    return parse_alias_name(head, field), request_id


class ApprovalWrites(Protocol):
    """Policies, requests and approvals in a transaction."""

    async def alias_policy(self, *, namespace: str, model: str) -> AliasPolicy | None:
        """The policy stored for the model (model "" = the namespace default), or None."""

    async def save_alias_policy(self, *, policy: AliasPolicy) -> AliasPolicy:
        """Insert or replace a policy."""

    async def insert_change_request(self, *, request: ChangeRequest) -> ChangeRequest:
        """Insert a new request (its times are the database's)."""

    async def lock_change_request(self, *, request_id: str) -> tuple[ChangeRequest, datetime]:
        """The request under an exclusive row lock, and the database's now; NotFound."""

    async def add_approval(self, *, request_id: str, approver: str, comment: str) -> bool:
        """Record one approval; False if this approver already approved."""

    async def decide_change_request(
        self, *, request_id: str, state: str, decider: str, decision: str
    ) -> ChangeRequest:
        """Move a request out of PENDING."""

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        """The alias under lock (None if absent)."""

    async def save_alias(self, *, alias: Alias) -> Alias:
        """Insert or move an alias."""


class ApprovalReads(Protocol):
    """Reads of policies and requests."""

    async def get_change_request(self, *, request_id: str) -> ChangeRequest:
        """One request with its approvals; NotFound."""

    async def list_change_requests(
        self,
        *,
        namespace: str,
        model: str,
        alias: str,
        state: str,
        before: str | None,
        limit: int,
    ) -> list[ChangeRequest]:
        """Requests, newest id first ('' = any model/alias/state)."""


class ApprovalTransaction(ApprovalWrites, EventLog, ModelWrites, VersionWrites, Protocol):
    """A transaction as the approval aggregate uses it."""


class ApprovalStore(ApprovalReads, Transactions[ApprovalTransaction], Protocol):
    """The store as the approval aggregate uses it."""


async def approvals_needed(tx: ApprovalWrites, key: AliasKey) -> int:
    """How many approvals a move of `key` needs (0: unprotected): the model's policy,
    else the namespace default."""
    ns, model = key.model.namespace, key.model.model
    policy = await tx.alias_policy(namespace=ns, model=model)
    if policy is None:
        policy = await tx.alias_policy(namespace=ns, model="")
    return 0 if policy is None else policy.needed(key.alias)


def approval_required(key: AliasKey, needed: int) -> FailedPrecondition:
    """The refusal of a direct move of a protected alias."""
    return FailedPrecondition(
        f"{key.name} is protected: moving it needs {needed} approval(s) of a change request"
        f" ({key.name}/{COLLECTION}); run `modelreg alias request"
        f" {key.model.namespace}/{key.model.model}@{key.alias} VERSION --reason ...`",
        reason="APPROVAL_REQUIRED",
        metadata={
            "resource": key.name,
            "alias": key.name,
            "change_requests": f"{key.name}/{COLLECTION}",
            "approvals_needed": str(needed),
        },
    )


class _Refusal(Exception):
    """A refusal decided inside a transaction whose writes must still commit."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Approvals:
    """The approval aggregate."""

    def __init__(self, store: ApprovalStore, *, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._store = store
        self._ttl = ttl_seconds

    async def set_policy(
        self, *, namespace: str, model: str, aliases: list[str], approvals: int, actor: str
    ) -> AliasPolicy:
        """Protect `aliases` of a model (model "" = the namespace default)."""
        for i, alias in enumerate(aliases):
            check_alias(alias, f"policy.aliases[{i}]")
        approvals = approvals or 1
        if not 1 <= approvals <= MAX_APPROVALS:
            raise InvalidArgument.field("policy.approvals", f"must be 1 to {MAX_APPROVALS}")
        policy = AliasPolicy(namespace, model, tuple(sorted(set(aliases))), approvals, actor)
        async with self._store.transaction() as tx:
            if model:
                ensure_active(await tx.lock_model(key=ModelKey(namespace, model)))
            saved = await tx.save_alias_policy(policy=policy)
            kind, subject = (
                (EventKind.ALIAS_POLICY_SET, ModelKey(namespace, model))
                if model
                else (EventKind.NAMESPACE_ALIAS_POLICY_SET, NamespaceKey(namespace))
            )
            await tx.append_event(
                event=events.change(kind, subject, actor, after=saved, latest_moved=False)
            )
        return saved

    async def get_policy(self, *, namespace: str, model: str) -> AliasPolicy:
        async with self._store.transaction() as tx:
            policy = await tx.alias_policy(namespace=namespace, model=model)
        return policy or AliasPolicy(namespace, model, (), 1)

    async def create(
        self, *, key: AliasKey, number: int, reason: str, actor: str, ttl_seconds: int = 0
    ) -> ChangeRequest:
        """Request a move of protected alias `key` to READY version `number`."""
        check_number(number, "version_number")
        if not reason.strip():
            raise InvalidArgument.field("reason", "say why the alias should move")
        ttl = ttl_seconds or self._ttl
        async with self._store.transaction() as tx:
            needed = await approvals_needed(tx, key)
            if not needed:
                raise FailedPrecondition(
                    f"{key.name} is not protected; move it with SetAlias",
                    reason="ALIAS_NOT_PROTECTED",
                    metadata={"resource": key.name},
                )
            ensure_active(await tx.lock_model(key=key.model))
            version = await tx.lock_version(key=VersionKey(key.model, number), shared=True)
            _check_ready(version.key, version.state)
            current = await tx.lock_alias(key=key)
            request = ChangeRequest(
                request_id=secrets.token_hex(8),
                alias=key,
                number=number,
                digest=version.digest,
                expected_number=0 if current is None else current.number,
                reason=reason,
                requester=actor,
                approvals_needed=needed,
                state=PENDING,
                create_time=datetime.min,
                expire_time=datetime.min + timedelta(seconds=ttl),  # store: now() + ttl
            )
            saved = await tx.insert_change_request(request=request)
            await _event(tx, EventKind.CHANGE_REQUEST_CREATED, saved, actor)
        return saved

    async def get(self, *, key: AliasKey, request_id: str) -> ChangeRequest:
        found = await self._store.get_change_request(request_id=request_id)
        if found.alias != key:
            raise NotFound(request_name(key, request_id))
        return found

    async def list(
        self, *, namespace: str, model: str, alias: str, state: str, size: int, token: str
    ) -> tuple[list[ChangeRequest], str]:
        limit = min(size or 50, 1000)
        if token and (not token.isalnum() or len(token) > 64):
            raise InvalidArgument.field("page_token", "is not a token this server gave")
        found = await self._store.list_change_requests(
            namespace=namespace,
            model=model,
            alias=alias,
            state=state,
            before=token or None,
            limit=limit + 1,
        )
        more = len(found) > limit
        items = found[:limit]
        return items, items[-1].request_id if more else ""

    async def approve(
        self, *, key: AliasKey, request_id: str, actor: str, comment: str
    ) -> ChangeRequest:
        """Approve; the approval that reaches the count applies the move (or aborts)."""
        refusal: _Refusal | None = None
        async with self._store.transaction() as tx:
            try:
                request = await self._pending(tx, key, request_id, actor)
                if request.requester == actor:
                    raise PermissionDenied(
                        f"{actor} requested {request.name} and cannot approve it (two-person rule)",
                        reason="REQUESTER_CANNOT_APPROVE",
                        metadata={"resource": request.name},
                    )
                if not await tx.add_approval(
                    request_id=request_id, approver=actor, comment=comment
                ):
                    raise AlreadyExists(f"{request.name}/approvals/{actor}")
                approvers = (*(a.approver for a in request.approvals), actor)
                await _event(tx, EventKind.CHANGE_REQUEST_APPROVED, request, actor, comment)
                if len(approvers) < request.approvals_needed:
                    return await _reread(tx, request_id)
                return await self._apply(tx, request, approvers, actor)
            except _Refusal as refused:  # its writes (an ABORTED or EXPIRED state) commit
                refusal = refused
        assert refusal is not None
        raise refusal.error

    async def reject(
        self, *, key: AliasKey, request_id: str, actor: str, reason: str
    ) -> ChangeRequest:
        if not reason.strip():
            raise InvalidArgument.field("reason", "say why the request is rejected")
        refusal: _Refusal | None = None
        async with self._store.transaction() as tx:
            try:
                request = await self._pending(tx, key, request_id, actor)
                if request.requester == actor:
                    raise PermissionDenied(
                        f"{actor} requested {request.name}; withdraw it by letting it"
                        " expire, or ask another approver to reject it",
                        reason="REQUESTER_CANNOT_DECIDE",
                        metadata={"resource": request.name},
                    )
                decided = await tx.decide_change_request(
                    request_id=request_id, state=REJECTED, decider=actor, decision=reason
                )
                await _event(tx, EventKind.CHANGE_REQUEST_REJECTED, decided, actor, reason)
                return decided
            except _Refusal as refused:  # its writes (an ABORTED or EXPIRED state) commit
                refusal = refused
        assert refusal is not None
        raise refusal.error

    async def _pending(
        self, tx: ApprovalTransaction, key: AliasKey, request_id: str, actor: str
    ) -> ChangeRequest:
        request, now = await tx.lock_change_request(request_id=request_id)
        if request.alias != key:
            raise NotFound(request_name(key, request_id))
        if request.state == PENDING and now >= request.expire_time:
            expired = await tx.decide_change_request(
                request_id=request_id, state=EXPIRED, decider="", decision="expired"
            )
            await _event(tx, EventKind.CHANGE_REQUEST_EXPIRED, expired, actor)
            raise _Refusal(_not_pending(expired, reason="REQUEST_EXPIRED"))
        if request.state != PENDING:
            reason = "REQUEST_EXPIRED" if request.state == EXPIRED else "REQUEST_DECIDED"
            raise _not_pending(request, reason=reason)
        return request

    async def _apply(
        self,
        tx: ApprovalTransaction,
        request: ChangeRequest,
        approvers: tuple[str, ...],
        actor: str,
    ) -> ChangeRequest:
        key = request.alias
        ensure_active(await tx.lock_model(key=key.model))
        current = await tx.lock_alias(key=key)
        target = 0 if current is None else current.number
        version = await tx.lock_version(key=VersionKey(key.model, request.number), shared=True)
        why = ""
        if target != request.expected_number:
            why = f"{key.name} moved to version {target} since the request was made"
        elif version.state != VersionState.READY:
            why = f"{version.key.name} is {version.state.name} now"
        elif version.digest != request.digest:
            why = f"{version.key.name} has digest {version.digest}, not {request.digest}"
        if why:
            aborted = await tx.decide_change_request(
                request_id=request.request_id, state=ABORTED, decider=actor, decision=why
            )
            await _event(tx, EventKind.CHANGE_REQUEST_ABORTED, aborted, actor, why)
            raise _Refusal(
                Aborted(
                    f"{request.name} was not applied: {why}",
                    reason="REQUEST_OVERTAKEN",
                    metadata={"resource": request.name, "version_number": str(target)},
                )
            )
        revision = current.revision + 1 if current else 1
        await tx.save_alias(
            alias=Alias(key, request.number, revision=revision, updater=request.requester)
        )
        await tx.append_event(
            event=events.Event(
                EventKind.ALIAS_SET,
                key,
                request.requester,
                before={"version_number": target} if target else None,
                after={
                    "version_number": request.number,
                    "change_request": request.name,
                    "digest": request.digest,
                    "approvers": list(approvers),
                },
                latest_moved=False,
            )
        )
        applied = await tx.decide_change_request(
            request_id=request.request_id, state=APPLIED, decider=actor, decision=""
        )
        return await _reread(tx, applied.request_id)


def _check_ready(key: VersionKey, state: VersionState) -> None:
    if state != VersionState.READY:
        raise FailedPrecondition(
            f"{key.name} is {state.name}; aliases point only at READY versions",
            reason="VERSION_NOT_READY",
            metadata={"resource": key.name, "state": state.name},
        )


def _not_pending(request: ChangeRequest, *, reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{request.name} is {request.state}, not PENDING",
        reason=reason,
        metadata={"resource": request.name, "state": request.state},
    )


async def _reread(tx: ApprovalTransaction, request_id: str) -> ChangeRequest:
    request, _ = await tx.lock_change_request(request_id=request_id)
    return request


async def _event(
    tx: EventLog, kind: EventKind, request: ChangeRequest, actor: str, note: str = ""
) -> None:
    after = {
        "change_request": request.name,
        "version_number": request.number,
        "digest": request.digest,
        "state": request.state,
    }
    if note:
        after["note"] = note
    await tx.append_event(
        event=events.Event(kind, request.alias, actor, after=after, latest_moved=False)
    )
