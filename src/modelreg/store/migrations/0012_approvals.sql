-- Protected aliases (docs/architecture.md, "Protected aliases"): a policy per model (or a
-- namespace default, model = '') lists the aliases that move only through a change
-- request, and how many approvals a move needs. A change request names the alias, the
-- target version AND its digest, and the alias target when it was made (the
-- compare-and-set expectation, 0 = the alias did not exist). When the last needed
-- approval lands the move is applied in the same transaction, or the request is ABORTED.

CREATE TABLE alias_policies (
    ns           text NOT NULL,
    model        text NOT NULL,           -- '' = the namespace's default
    aliases      text[] NOT NULL,         -- the protected aliases
    approvals    integer NOT NULL DEFAULT 1 CHECK (approvals BETWEEN 1 AND 10),
    updater      text NOT NULL,
    update_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ns, model)
);

CREATE TABLE change_requests (
    request_id       text PRIMARY KEY,
    ns               text NOT NULL,
    model            text NOT NULL,
    alias            text NOT NULL,
    number           bigint NOT NULL,      -- the target version
    digest           text NOT NULL,        -- that version's digest when the request was made
    expected_number  bigint NOT NULL,      -- the alias target then (0: it did not exist)
    reason           text NOT NULL,
    requester        text NOT NULL,
    approvals_needed integer NOT NULL,
    state            text NOT NULL DEFAULT 'PENDING'
                     CHECK (state IN ('PENDING', 'APPLIED', 'REJECTED', 'EXPIRED', 'ABORTED')),
    create_time      timestamptz NOT NULL DEFAULT now(),
    expire_time      timestamptz NOT NULL,
    decide_time      timestamptz,
    decider          text NOT NULL DEFAULT '',
    decision         text NOT NULL DEFAULT ''  -- the rejection's reason, or why it was aborted
);
CREATE INDEX change_requests_alias ON change_requests (ns, model, alias, create_time DESC);
CREATE INDEX change_requests_pending ON change_requests (expire_time) WHERE state = 'PENDING';

CREATE TABLE change_request_approvals (
    request_id  text NOT NULL REFERENCES change_requests ON DELETE CASCADE,
    approver    text NOT NULL,
    time        timestamptz NOT NULL DEFAULT now(),
    comment     text NOT NULL DEFAULT '',
    PRIMARY KEY (request_id, approver)      -- one approval per approver
);
