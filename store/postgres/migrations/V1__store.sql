-- retrace store, schema version 1: run refs, each run's own events, blobs, snapshots.
-- Ids are raw bytes (run 16, event and blob 32); seqs and times are bigint (u64 as i64).

CREATE TABLE retrace_runs (
    id         bytea  PRIMARY KEY CHECK (length(id) = 16),
    -- the newest event; both NULL for a run with no events yet
    head_seq   bigint,
    head_id    bytea  CHECK (length(head_id) = 32),
    -- for a fork: the last shared event of another run
    origin_run bytea  REFERENCES retrace_runs (id),
    origin_seq bigint,
    origin_id  bytea  CHECK (length(origin_id) = 32),
    created_at bigint NOT NULL,
    meta       jsonb  NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((head_seq IS NULL) = (head_id IS NULL)),
    CHECK ((origin_run IS NULL) = (origin_seq IS NULL) AND (origin_seq IS NULL) = (origin_id IS NULL))
);

-- the events a run wrote itself (a fork's shared prefix stays in its origin's rows)
CREATE TABLE retrace_events (
    run   bytea  NOT NULL REFERENCES retrace_runs (id),
    seq   bigint NOT NULL,
    id    bytea  NOT NULL CHECK (length(id) = 32),
    bytes bytea  NOT NULL,
    PRIMARY KEY (run, seq)
);

-- content-addressed: id = blake3(original bytes); codec 0 = as is, 1 = zstd
CREATE TABLE retrace_blobs (
    id    bytea    PRIMARY KEY CHECK (length(id) = 32),
    codec smallint NOT NULL,
    len   bigint   NOT NULL,
    bytes bytea    NOT NULL
);
-- compressed by retrace where it pays: keep PostgreSQL from compressing again
ALTER TABLE retrace_blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- a cache of folded states, keyed by the event they follow
CREATE TABLE retrace_snapshots (
    at    bytea PRIMARY KEY CHECK (length(at) = 32),
    bytes bytea NOT NULL
);
ALTER TABLE retrace_snapshots ALTER COLUMN bytes SET STORAGE EXTERNAL;
