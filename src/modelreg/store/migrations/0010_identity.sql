-- Identity (docs/architecture.md, "Authentication"): principals and their API keys.
--
-- A key is `mrk_{key_id}_{secret}`. key_id is public (it names the key in lists, logs
-- and events, and finds the row); only an HMAC-SHA256 of the secret is kept, keyed with
-- the deployment's `api_keys` secret (server_secrets), so a dump of this table alone
-- gives nothing to log in with.
CREATE TABLE principals (
    name         text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('person', 'service')),
    create_time  timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    -- the order of ListApiKeys (newest first) and its page tokens' position
    seq          bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    principal    text NOT NULL REFERENCES principals (name),
    secret_hash  bytea NOT NULL,
    description  text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expire_time  timestamptz,
    revoke_time  timestamptz
);
-- ListApiKeys of one principal, newest first (all principals': the seq index).
CREATE INDEX api_keys_by_principal ON api_keys (principal, seq);
