-- Secrets every process of a deployment must share, made once by the first server that
-- starts (store/secrets.py). `page_token` signs page tokens (domain/paging.py), so a
-- token issued by one worker or replica is read by any other, and survives restarts.
CREATE TABLE server_secrets (
    name          text PRIMARY KEY,
    value         bytea NOT NULL CHECK (octet_length(value) >= 32),
    create_time   timestamptz NOT NULL DEFAULT now()
);
