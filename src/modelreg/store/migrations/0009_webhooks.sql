-- Webhooks (docs/architecture.md, "Webhooks"): subscriptions that follow the change log,
-- each with its own durable cursor, a lease so one server process delivers it at a time,
-- a queue of single redeliveries, and a bounded log of delivery attempts.

-- Fencing tokens for leases: every claim takes the next value, so a token is never held
-- twice, not even across a delete and a create of a subscription with the same id (a
-- holder of the deleted one must be refused every write on the new one).
CREATE SEQUENCE webhook_lease_tokens;

CREATE TABLE webhooks (
    webhook_id          text PRIMARY KEY,
    url                 text NOT NULL,
    filter              jsonb NOT NULL,   -- {"namespaces": [...], "models": [...], ...}
    description         text NOT NULL DEFAULT '',
    -- The signing secret sealed with AES-256-GCM under the deployment's webhook key
    -- (server_secrets 'webhook_secrets'): 12-byte nonce, then ciphertext and tag; the
    -- webhook id is the associated data, so a sealed secret cannot be moved to another row.
    secret              bytea NOT NULL,
    state               text NOT NULL DEFAULT 'ACTIVE',
    create_time         timestamptz NOT NULL DEFAULT now(),
    -- The cursor: every matching event at or below it was answered 2xx.
    delivered_revision  bigint NOT NULL,
    -- How many times RedeliverWebhook moved the cursor back: the holder's advance is
    -- conditioned on the count it knows, so a rewind is never overwritten.
    rewinds             bigint NOT NULL DEFAULT 0,
    -- The lease: who delivers it now, until when (the database's clock), and the fencing
    -- token every write of the holder is conditioned on (webhook_lease_tokens' next
    -- value at each claim; 0, which no claim ever gets, until the first).
    lease_owner         text,
    lease_until         timestamptz,
    lease_token         bigint NOT NULL DEFAULT 0
);

-- Single events to send again, asked for by RedeliverWebhook (delivery = ...); the lease
-- holder sends them before going on along the log, and deletes each after a 2xx.
CREATE TABLE webhook_redeliveries (
    redelivery_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id     text NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    revision       bigint NOT NULL,
    event_index    integer NOT NULL
);
CREATE INDEX webhook_redeliveries_webhook ON webhook_redeliveries (webhook_id, redelivery_id);

-- One row per attempt. Bounded: the lease holder keeps the newest
-- MODELREG_WEBHOOKS_LOG_KEEP attempts of its subscription and deletes older ones (after
-- each batch, and every 100 attempts while one event blocks).
CREATE TABLE webhook_deliveries (
    delivery_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       text NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    revision         bigint NOT NULL,
    event_index      integer NOT NULL,   -- the event's position in its transaction
    message_id       text NOT NULL,
    kind             text NOT NULL,
    attempt          integer NOT NULL,
    http_status      integer NOT NULL DEFAULT 0,
    error            text NOT NULL DEFAULT '',
    latency_seconds  double precision NOT NULL,
    attempt_time     timestamptz NOT NULL DEFAULT now(),
    next_attempt_time timestamptz,
    succeeded        boolean NOT NULL,
    owner            text NOT NULL       -- the process that made the attempt
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, delivery_id);
