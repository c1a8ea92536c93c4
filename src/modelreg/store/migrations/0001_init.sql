-- The registry's schema. Every table below the namespace carries model_id, the
-- distribution key for a future Citus split (DESIGN.md §8); no foreign key
-- crosses models.

CREATE TABLE namespaces (
    ns           text COLLATE "C" PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    revision     bigint NOT NULL DEFAULT 1,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE models (
    model_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ns             text COLLATE "C" NOT NULL REFERENCES namespaces (ns),
    name           text COLLATE "C" NOT NULL,
    description    text NOT NULL DEFAULT '',
    tags           text[] NOT NULL DEFAULT '{}',
    labels         jsonb NOT NULL DEFAULT '{}',
    -- highest number allocated; bumped under the row lock in the insert's transaction
    last_version   bigint NOT NULL DEFAULT 0,
    revision       bigint NOT NULL DEFAULT 1,
    create_time    timestamptz NOT NULL DEFAULT now(),
    update_time    timestamptz NOT NULL DEFAULT now(),
    delete_time    timestamptz,
    UNIQUE (ns, name)
);
CREATE INDEX models_ns_create_time ON models (ns, create_time, name);
CREATE INDEX models_tags ON models USING gin (tags);

CREATE TABLE model_versions (
    model_id           bigint NOT NULL,
    number             bigint NOT NULL,
    state              smallint NOT NULL,
    description        text NOT NULL DEFAULT '',
    tags               text[] NOT NULL DEFAULT '{}',
    labels             jsonb NOT NULL DEFAULT '{}',
    metrics            jsonb NOT NULL DEFAULT '{}',
    params             jsonb NOT NULL DEFAULT '{}',
    run_id             text NOT NULL DEFAULT '',
    code_commit        text NOT NULL DEFAULT '',
    framework          text NOT NULL DEFAULT '',
    framework_version  text NOT NULL DEFAULT '',
    digest             text NOT NULL DEFAULT '',
    total_size         bigint NOT NULL DEFAULT 0,
    creator            text NOT NULL DEFAULT '',
    revision           bigint NOT NULL DEFAULT 1,
    create_time        timestamptz NOT NULL DEFAULT now(),
    update_time        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, number)
);
-- `latest` = the newest READY version: one backward step on this partial index.
CREATE INDEX model_versions_ready ON model_versions (model_id, number DESC) WHERE state = 2;

CREATE TABLE aliases (
    model_id     bigint NOT NULL,
    alias        text COLLATE "C" NOT NULL,
    number       bigint NOT NULL,
    revision     bigint NOT NULL DEFAULT 1,
    updater      text NOT NULL DEFAULT '',
    update_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias)
);
CREATE INDEX aliases_target ON aliases (model_id, number);

-- The outbox: one row per mutation, in the mutation's transaction. Audit log,
-- alias history, Watch and cache invalidation all read it.
CREATE TABLE events (
    event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id     bigint,
    ns           text NOT NULL,
    resource     text NOT NULL,
    kind         text NOT NULL,
    actor        text NOT NULL,
    time         timestamptz NOT NULL DEFAULT now(),
    before       jsonb,
    after        jsonb
);
CREATE INDEX events_resource ON events (resource, event_id);

-- Idempotency keys of creates: a retry with the same request_id finds the first result.
CREATE TABLE request_ids (
    request_id   text PRIMARY KEY,
    method       text NOT NULL,
    fingerprint  text NOT NULL,
    resource     text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO namespaces (ns, description) VALUES ('default', 'The namespace of references that name none.');
