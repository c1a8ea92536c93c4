-- Role bindings (docs/architecture.md, "Access"): a role bound to a principal or a group,
-- globally (scope '') or in one namespace. Every server process holds them all in memory
-- and follows the change log (access.granted / access.revoked events) to keep them so.
CREATE TABLE role_bindings (
    role          text NOT NULL CHECK (role IN ('viewer', 'editor', 'approver', 'admin')),
    subject_kind  text NOT NULL CHECK (subject_kind IN ('principal', 'group')),
    subject       text NOT NULL,
    scope         text NOT NULL,  -- '' = global, else a namespace id
    created_by    text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, subject_kind, subject, scope)
);
-- ListRoleBindings pages in (scope, subject_kind, subject, role) order, filtered by either.
CREATE UNIQUE INDEX role_bindings_listing ON role_bindings (scope, subject_kind, subject, role);
CREATE INDEX role_bindings_subject ON role_bindings (subject_kind, subject);

-- A webhook delivers only what the principal that created it may read, at delivery time.
ALTER TABLE webhooks ADD COLUMN created_by text NOT NULL DEFAULT '';
ALTER TABLE webhooks ADD COLUMN created_groups text[] NOT NULL DEFAULT '{}';
