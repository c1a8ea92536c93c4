-- Which stream owns an upload right now (domain/uploads.py): the server process that
-- streams it holds a lease, renewed as it goes, so a resume that reaches another
-- worker or replica while the first stream is still alive waits instead of writing
-- the same staged bytes at the same time. A lease of a process that died runs out.
ALTER TABLE upload_sessions
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_until timestamptz;
