-- Collection asks whether a stream is uploading a blob (store/artifacts.py: _LIVE):
-- by digest, among the sessions that hold a lease.
CREATE INDEX upload_sessions_leased_blob ON upload_sessions (sha256)
    WHERE lease_owner IS NOT NULL;
