-- The change log (docs/architecture.md, "The change log"): every committed transaction
-- gets a revision in commit order, shared by all its events, and tells every listening
-- process about it.
--
-- Revisions come from their own sequence, taken only under a transaction-scoped
-- advisory lock right before commit (modelreg_stamp_revision below). The lock is
-- released after the commit is visible, so revision order is commit order and a reader
-- that sees revision r sees every committed revision below r; a transaction that rolls
-- back after its stamp leaves a hole, never a late arrival. CACHE 1 (the default) is
-- required: with a per-session cache, values would not follow the lock order.
CREATE SEQUENCE event_revisions AS bigint CACHE 1;

-- Nullable, no default: adding them rewrites nothing. A row is NULL only inside its own
-- transaction, until the stamp (and for rows an older release writes during a rolling
-- upgrade; those are never followed).
ALTER TABLE events ADD COLUMN revision bigint;
-- Whether the event may have moved the model's `latest` (domain/events.py), stored so a
-- follower in another process rebuilds the exact Event.
ALTER TABLE events ADD COLUMN latest_moved boolean;

-- Rows written before this migration: one revision each, in id order (their transaction
-- boundaries are not recorded). latest_moved is re-derived from the snapshots by the
-- rule of domain/versions.py: moves_latest (a version entered or left READY), and every
-- deletion or restore of a model. A backfill in the migration's transaction locks the
-- table while it runs; fine for the sizes deployed so far (an expand-style batched
-- backfill would be the way for a very large, hot table).
UPDATE events SET
    revision = event_id,
    latest_moved = CASE
        WHEN kind IN ('model.deleted', 'model.undeleted') THEN true
        WHEN kind LIKE 'version.%' THEN
            (coalesce(before ->> 'state', '') = 'READY') <> (coalesce(after ->> 'state', '') = 'READY')
        ELSE false
    END;
SELECT setval('event_revisions', max(event_id)) FROM events HAVING max(event_id) IS NOT NULL;

-- Followers read by keyset: revision > cursor, in revision then event order.
CREATE INDEX events_revision ON events (revision, event_id) WHERE revision IS NOT NULL;
-- The stamp finds its transaction's rows among the few not stamped yet.
CREATE INDEX events_unstamped ON events (event_id) WHERE revision IS NULL;

-- Stamp the calling transaction's events: one revision for all of them, and each its
-- latest_moved (`moved`, in the order the events were appended, which is event_id order
-- within one session). Notifies `modelreg_changes` with the revision: the notification is
-- delivered only if and when the transaction commits. Call it last, right before COMMIT:
-- the lock it takes serializes commits from here until the commit is visible.
CREATE FUNCTION modelreg_stamp_revision(moved boolean[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    stamped bigint;
    rev bigint;
BEGIN
    -- the change log's lock ("modellog"); migrations use another key
    PERFORM pg_advisory_xact_lock(7885631859322548071);
    rev := nextval('event_revisions');
    WITH mine AS (
        SELECT event_id, row_number() OVER (ORDER BY event_id) AS position
        FROM events
        WHERE revision IS NULL AND xmin = pg_current_xact_id()::xid
    )
    UPDATE events e SET revision = rev, latest_moved = moved[mine.position]
    FROM mine WHERE e.event_id = mine.event_id;
    GET DIAGNOSTICS stamped = ROW_COUNT;
    IF stamped <> coalesce(cardinality(moved), 0) THEN
        RAISE EXCEPTION 'stamped % events of this transaction, expected %',
            stamped, coalesce(cardinality(moved), 0);
    END IF;
    PERFORM pg_notify('modelreg_changes', rev::text);
    RETURN rev;
END
$$;
