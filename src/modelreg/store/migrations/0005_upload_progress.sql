-- The upload fence (domain/uploads.py). A claim of an upload's lease takes the next
-- lease_token, and every write of its progress is an UPDATE guarded on that token, so a
-- stream that lost its lease (a process that hung past it) changes nothing. The progress
-- is all a resume needs, in any process: where the blob store holds the committed prefix
-- (`staging`: the stream's staging file on the filesystem, the multipart upload id on S3),
-- the SHA-256 state at its end (blobs/sha256.py, 40 bytes) and, on S3, the parts
-- [number, size, ETag, ChecksumSHA256] that a completion may use. It replaces the S3
-- checkpoint objects and the shared staging file; uploads paused before it start again.
ALTER TABLE upload_sessions
    ADD COLUMN lease_token bigint NOT NULL DEFAULT 0,
    ADD COLUMN staging text NOT NULL DEFAULT '',
    ADD COLUMN hash_state bytea,
    ADD COLUMN parts jsonb NOT NULL DEFAULT '[]';
UPDATE upload_sessions SET committed_size = 0 WHERE NOT complete;
-- The token identifies the holder now; a released lease has no lease_until.
DROP INDEX upload_sessions_leased_blob;
ALTER TABLE upload_sessions DROP COLUMN lease_owner;
CREATE INDEX upload_sessions_leased_blob ON upload_sessions (sha256)
    WHERE lease_until IS NOT NULL;
