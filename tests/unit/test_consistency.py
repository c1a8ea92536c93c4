"""The consistency-token rules against fakes of our own ports: which tiers a lookup with
`min_revision` may use, OUT_OF_RANGE above the head, the token a mutation answers, and
the SDK's tracking of the highest revision seen."""

from __future__ import annotations

import asyncio
import threading

import pytest

from modelreg.client.settings import Tokens
from modelreg.domain import consistency
from modelreg.domain.consistency import ANY, Consistency, Plan, receipt
from modelreg.domain.errors import InvalidArgument, OutOfRange
from modelreg.v1 import registry_service_pb2 as rs


class FakeHeads:
    def __init__(self, head: int) -> None:
        self.value = head
        self.asked = 0

    async def head(self) -> int:
        self.asked += 1
        return self.value


class FakeFollower:
    """A follower whose cursor the test moves."""

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self._moved = asyncio.Condition()
        self.waiting = asyncio.Event()

    async def reached(self, revision: int) -> None:
        async with self._moved:
            self.waiting.set()
            await self._moved.wait_for(lambda: self.revision >= revision)

    async def move(self, revision: int) -> None:
        async with self._moved:
            self.revision = revision
            self._moved.notify_all()


class FakeReplica:
    def __init__(self, replayed: int) -> None:
        self.replayed = replayed

    async def reached(self, *, revision: int) -> bool:
        return revision <= self.replayed


def _rules(
    *,
    head: int = 100,
    followed: int | None = 100,
    replayed: int | None = None,
    wait: float = 0.05,
) -> tuple[Consistency, FakeHeads, FakeFollower | None]:
    heads = FakeHeads(head)
    follower = FakeFollower(followed) if followed is not None else None
    replica = FakeReplica(replayed) if replayed is not None else None
    return (
        Consistency(heads=heads, follower=follower, replica=replica, wait_seconds=wait),
        heads,
        follower,
    )


async def test_no_token_may_use_every_tier_without_asking_the_database() -> None:
    rules, heads, _ = _rules()
    assert await rules.plan(min_revision=0) is ANY
    assert heads.asked == 0


async def test_a_token_the_follower_has_applied_uses_l1_without_asking_the_database() -> None:
    rules, heads, _ = _rules(followed=50)
    assert await rules.plan(min_revision=50) == Plan(50, local=True, primary=False)
    assert heads.asked == 0


async def test_a_token_the_follower_reaches_while_waiting_uses_l1() -> None:
    rules, heads, follower = _rules(followed=10, wait=30.0)
    assert follower is not None

    async def push() -> None:
        await follower.waiting.wait()  # the lookup is waiting for the follower
        await follower.move(12)

    plan, _ = await asyncio.gather(rules.plan(min_revision=12), push())
    assert plan.local
    assert heads.asked == 0


async def test_a_follower_that_lags_past_the_wait_bypasses_l1() -> None:
    # wait_seconds is the (deliberately short) bound being waited out here
    rules, heads, _ = _rules(head=20, followed=10, wait=0.01)
    plan = await rules.plan(min_revision=20)
    assert plan == Plan(20, local=False, primary=False)
    assert heads.asked == 1


async def test_the_wait_never_exceeds_the_calls_deadline() -> None:
    rules, _, _ = _rules(head=20, followed=10, wait=3600.0)
    # An hour's wait setting, a call with no time left: it must not wait (a hang fails).
    plan = await asyncio.wait_for(rules.plan(min_revision=20, deadline=0.0), 60)
    assert not plan.local


async def test_without_a_follower_the_caches_are_bypassed() -> None:
    rules, heads, _ = _rules(followed=None)
    assert not (await rules.plan(min_revision=5)).local
    assert heads.asked == 1
    assert not (await rules.plan(min_revision=5)).local
    assert heads.asked == 1  # a head seen once is known to be committed


async def test_a_token_above_the_head_is_out_of_range_naming_it() -> None:
    rules, _, _ = _rules(head=20, followed=20, wait=0.0)
    with pytest.raises(OutOfRange) as caught:
        await rules.plan(min_revision=21)
    assert caught.value.reason == "REVISION_AHEAD"
    assert caught.value.metadata == {"min_revision": "21", "head": "20"}
    assert "head 20" in caught.value.message


async def test_a_negative_token_is_invalid() -> None:
    rules, _, _ = _rules()
    with pytest.raises(InvalidArgument):
        await rules.plan(min_revision=-1)


async def test_a_replica_behind_the_token_sends_reads_to_the_primary() -> None:
    rules, _, _ = _rules(replayed=40)
    assert (await rules.plan(min_revision=40)).primary is False
    assert (await rules.plan(min_revision=41)).primary is True


async def test_a_mutation_answers_its_highest_commit_or_else_the_head() -> None:
    rules, heads, _ = _rules(head=77)
    with receipt() as collected:
        consistency.committed(5)
        consistency.committed(9)
        consistency.committed(7)
    assert await rules.token(collected) == 9
    with receipt() as nothing:
        pass
    assert await rules.token(nothing) == 77  # a replayed request: the head covers it
    consistency.committed(1000)  # outside any receipt: nobody is collecting
    assert heads.asked == 1


def test_the_sdk_sends_the_highest_revision_seen_unless_turned_off() -> None:
    tokens = Tokens()
    first = rs.ResolveReferenceRequest(reference="m")
    tokens.stamp(first)
    assert first.min_revision == 0  # nothing seen yet
    tokens.read(rs.SetAliasResponse(revision=12))
    tokens.read(rs.SetAliasResponse(revision=8))  # an older answer never moves it back
    tokens.read(rs.ListAliasesResponse())  # a reply without a token
    assert tokens.revision == 12
    lookup = rs.ResolveReferenceRequest(reference="m")
    tokens.stamp(lookup)
    assert lookup.min_revision == 12
    own = rs.ResolveReferenceRequest(reference="m", min_revision=3)
    tokens.stamp(own)
    assert own.min_revision == 12  # a caller's lower token never gives up its writes
    higher = rs.ResolveReferenceRequest(reference="m", min_revision=30)
    tokens.stamp(higher)
    assert higher.min_revision == 30  # a higher one is kept
    mutation = rs.SetAliasRequest(name="x")
    tokens.stamp(mutation)  # a request without the field is left alone
    off = Tokens(enabled=False)
    off.saw(12)
    unstamped = rs.ResolveReferenceRequest(reference="m")
    off.stamp(unstamped)
    assert unstamped.min_revision == 0
    assert off.revision == 12


def test_the_sdk_token_is_the_maximum_across_threads() -> None:
    tokens = Tokens()
    barrier = threading.Barrier(8)

    def see(start: int) -> None:
        barrier.wait()
        for revision in range(start, 80_000, 8):
            tokens.saw(revision)

    threads = [threading.Thread(target=see, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens.revision == 79_999
