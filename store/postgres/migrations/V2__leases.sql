-- retrace store, schema version 2: run leases for many `retrace serve` workers.
-- A run is driven only by the worker holding its unexpired lease; `epoch` grows with every
-- new holder, so a worker's appends name the lease they were made under.

CREATE TABLE retrace_leases (
    run        bytea       PRIMARY KEY REFERENCES retrace_runs (id),
    worker     text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX retrace_leases_expiry ON retrace_leases (expires_at);

-- signals for a run whose lease another worker holds; its holder appends them
CREATE TABLE retrace_inbox (
    id      bigserial PRIMARY KEY,
    run     bytea     NOT NULL REFERENCES retrace_runs (id),
    name    text      NOT NULL,
    payload bytea     NOT NULL CHECK (length(payload) = 32)
);
CREATE INDEX retrace_inbox_run ON retrace_inbox (run, id);
