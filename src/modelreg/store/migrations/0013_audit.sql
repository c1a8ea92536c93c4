-- The audit log (docs/architecture.md, "Audit log"): events are hash-chained in change-log
-- order and append-only in the database itself; refused calls are kept in `denials`.

-- The chain. Each stamped event carries prev_hash (the hash of the event before it in
-- change-log order: revision, then event_id within a revision; 32 zero bytes for the
-- first) and hash = sha256(prev_hash || modelreg_event_digest(row)). Nullable like
-- revision: NULL only until the stamp.
ALTER TABLE events ADD COLUMN prev_hash bytea;
ALTER TABLE events ADD COLUMN hash bytea;

-- The one definition of what an event's hash covers, used by the stamp and by the
-- verifier (store/audit.py): a JSON array of the row's columns, as jsonb text. jsonb's
-- text form is canonical (object keys sorted and deduplicated, one spelling per number),
-- so the digest does not depend on how a snapshot was written. The time goes in as
-- integer microseconds since the epoch: a timestamptz turned into JSON would follow the
-- session's TimeZone.
CREATE FUNCTION modelreg_event_digest(e events) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN sha256(convert_to(jsonb_build_array(
    e.event_id, e.revision, e.ns, e.resource, e.kind, e.actor,
    (extract(epoch FROM e.time) * 1000000)::bigint, e.before, e.after, e.latest_moved
)::text, 'UTF8'));

CREATE FUNCTION modelreg_event_hash(previous bytea, e events) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN sha256(previous || modelreg_event_digest(e));

-- The hash before the first event.
CREATE FUNCTION modelreg_chain_genesis() RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;

-- Rows written before this migration: chained in change-log order, one by one. Like the
-- backfill of 0007 this locks the table for its run; fine for the sizes deployed so far
-- (a very large log would be chained in batches before the stamp takes over).
DO $$
DECLARE
    previous bytea := modelreg_chain_genesis();
    r events;
BEGIN
    FOR r IN SELECT * FROM events WHERE revision IS NOT NULL ORDER BY revision, event_id LOOP
        UPDATE events SET prev_hash = previous, hash = modelreg_event_hash(previous, r)
        WHERE event_id = r.event_id
        RETURNING hash INTO previous;
    END LOOP;
END
$$;

-- The stamp of 0007, now also chaining the transaction's events. It runs under the
-- change log's advisory lock, so the previous event is the last one committed: the chain
-- follows commit order with no lock of its own. The previous hash is one backward step on
-- events_revision (measured against a one-row head table: see benchmarks/audit_chain.py).
--
-- SECURITY DEFINER: it runs as its owner, the role that applied the migrations, so a
-- runtime role (modelreg_grant_runtime below) needs no UPDATE on events at all. A fixed
-- search_path (set below to the schema migrated into) keeps a caller from substituting
-- objects.
CREATE OR REPLACE FUNCTION modelreg_stamp_revision(moved boolean[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    stamped bigint := 0;
    rev bigint;
    previous bytea;
    r events;
BEGIN
    -- the change log's lock ("modellog"); migrations use another key
    PERFORM pg_advisory_xact_lock(7885631859322548071);
    rev := nextval('event_revisions');
    previous := coalesce(
        (SELECT hash FROM events WHERE revision IS NOT NULL
         ORDER BY revision DESC, event_id DESC LIMIT 1),
        modelreg_chain_genesis());
    -- this transaction's events, in the order they were appended (event_id order)
    FOR r IN
        SELECT * FROM events WHERE revision IS NULL AND xmin = pg_current_xact_id()::xid
        ORDER BY event_id
    LOOP
        stamped := stamped + 1;
        r.revision := rev;
        r.latest_moved := moved[stamped];
        UPDATE events
        SET revision = rev, latest_moved = r.latest_moved, prev_hash = previous,
            hash = modelreg_event_hash(previous, r)
        WHERE event_id = r.event_id
        RETURNING hash INTO previous;
    END LOOP;
    IF stamped <> coalesce(cardinality(moved), 0) THEN
        RAISE EXCEPTION 'stamped % events of this transaction, expected %',
            stamped, coalesce(cardinality(moved), 0);
    END IF;
    PERFORM pg_notify('modelreg_changes', rev::text);
    RETURN rev;
END
$$;
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION modelreg_stamp_revision(boolean[]) SET search_path = pg_catalog, %I, pg_temp',
        current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION modelreg_stamp_revision(boolean[]) FROM PUBLIC;

-- Append-only. UPDATE is refused except the stamp's one-time stamping of a row: its
-- revision was NULL, and nothing but revision, latest_moved, prev_hash and hash changes
-- (compared over the whole row as jsonb, so a column added later is covered too).
-- DELETE and TRUNCATE are refused outright. Triggers do not fire under
-- session_replication_role = replica, which only a superuser may set: the test fixtures
-- use it to empty the tables, and the tamper tests to edit the log behind the server.
CREATE FUNCTION modelreg_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.revision IS NULL AND NEW.revision IS NOT NULL
        AND NEW.hash IS NOT NULL
        AND to_jsonb(NEW) - '{revision,latest_moved,prev_hash,hash}'::text[]
            = to_jsonb(OLD) - '{revision,latest_moved,prev_hash,hash}'::text[]
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'the audit log is never edited (docs/architecture.md, "Audit log")';
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION modelreg_events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION modelreg_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION modelreg_events_append_only();

-- ListEvents' filters, each in change-log order. Built in the migration's transaction
-- (a lock for the build; fine for the sizes deployed so far, CONCURRENTLY would need its
-- own migration step outside a transaction).
CREATE INDEX events_ns_revision ON events (ns, revision, event_id) WHERE revision IS NOT NULL;
CREATE INDEX events_model_revision ON events (model_id, revision, event_id)
    WHERE revision IS NOT NULL;
CREATE INDEX events_actor_revision ON events (actor, revision, event_id)
    WHERE revision IS NOT NULL;

-- Refused calls by known callers (domain/principals.py Denial). Outside the chain on
-- purpose: a refusal changes no revision. Bounded: each server process deletes rows
-- older than MODELREG_DENIALS_KEEP_DAYS now and then.
CREATE TABLE denials (
    denial_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    method      text NOT NULL,
    resource    text NOT NULL,
    permission  text NOT NULL,
    reason      text NOT NULL
);
CREATE INDEX denials_time ON denials (time);
CREATE INDEX denials_actor ON denials (actor, denial_id);

-- Two database roles: the migrating role owns the schema; the server may run as a
-- runtime role given everything it needs but UPDATE, DELETE and TRUNCATE on events (and
-- any write to schema_migrations, or setval on a sequence). Run as the owner after every
-- `modelreg migrate` (new tables need their grants):
--     SELECT modelreg_grant_runtime('modelreg_app');
CREATE FUNCTION modelreg_grant_runtime(runtime regrole) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    here text := quote_ident(current_schema());
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %s TO %s', here, runtime);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s',
                   here, runtime);
    EXECUTE format('REVOKE ALL ON %s.events, %s.schema_migrations FROM %s', here, here, runtime);
    EXECUTE format('GRANT SELECT ON %s.events, %s.schema_migrations TO %s', here, here, runtime);
    -- only the columns a mutation writes: revision, time and the hashes are the stamp's
    EXECUTE format('GRANT INSERT (model_id, ns, resource, kind, actor, before, after)'
                   ' ON %s.events TO %s', here, runtime);
    -- USAGE allows nextval, never setval (which needs UPDATE); revisions are the stamp's
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %s TO %s', here, runtime);
    EXECUTE format('REVOKE ALL ON SEQUENCE %s.event_revisions FROM %s', here, runtime);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s.modelreg_stamp_revision(boolean[]) TO %s',
                   here, runtime);
END
$$;
