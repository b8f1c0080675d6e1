-- 006_lifecycle: the progress of `silo migrate-state CLASS` (docs/lifecycle.md),
-- one row per cluster and class. The command keeps its cursor (the last key it
-- went past, in key order) and counters here after every batch, so a run that
-- stops for any reason resumes where it was, and every silo publishes the
-- counters on /metrics. A row is started again when the class's target format
-- changes or after it finished.
CREATE TABLE IF NOT EXISTS granary_state_upgrade (
    service     text        NOT NULL,
    grain_class text        NOT NULL,
    to_format   integer     NOT NULL,
    cursor_key  bytea,                 -- NULL: from the first key
    upgraded    bigint      NOT NULL DEFAULT 0,
    skipped     bigint      NOT NULL DEFAULT 0, -- active while their batch ran (tried again)
    failed      bigint      NOT NULL DEFAULT 0, -- upgrade_state refused them
    remaining   bigint      NOT NULL DEFAULT 0, -- at an older format, at the last count
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (service, grain_class)
);

-- The TTL sweep and migrate-state page through one class's rows in key order.
-- The primary key leads with grain_key, so a page of a small class walked the
-- index entries of every class; this one never changes for a row (it does not
-- stop HOT updates) and costs an insert per new grain.
CREATE INDEX IF NOT EXISTS granary_grain_state_class_key ON granary_grain_state (service, grain_class, grain_key);
