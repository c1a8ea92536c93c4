-- Artifacts (issue 5): the files of versions, uploads in progress, and the blobs each
-- model stores or links. Every table carries model_id (DESIGN.md §8); blobs are shared
-- across models by content, so a blob is orphaned when no live version of any model
-- holds it.

-- The manifest of a version: written while PENDING, frozen once READY.
CREATE TABLE version_files (
    model_id     bigint NOT NULL,
    number       bigint NOT NULL,
    path         text COLLATE "C" NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, number, path)
);
CREATE INDEX version_files_blob ON version_files (sha256);

-- Uploads by client-chosen id: the file they are for and how far they got. Deleted when
-- the version is finalized or marked FAILED.
CREATE TABLE upload_sessions (
    model_id        bigint NOT NULL,
    number          bigint NOT NULL,
    upload_id       text COLLATE "C" NOT NULL,
    path            text COLLATE "C" NOT NULL,
    size            bigint NOT NULL,
    sha256          text NOT NULL,
    committed_size  bigint NOT NULL DEFAULT 0,
    complete        boolean NOT NULL DEFAULT false,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, number, upload_id)
);

-- Which models store or link which blob, and when they last did: recorded before the
-- bytes are published, so a blob is never in the store without a row here. Garbage
-- collection takes blobs unused for a grace period that no live version holds.
CREATE TABLE blobs (
    model_id   bigint NOT NULL,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    last_used  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, sha256)
);
CREATE INDEX blobs_sha256 ON blobs (sha256);
