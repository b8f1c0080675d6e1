-- 001_init: grain state.
-- One row per grain. The primary key starts with grain_key, the column a
-- sharded PostgreSQL (Citus) would distribute on; service (the cluster name)
-- and grain_class complete it. version is a 64-bit counter starting at 1:
-- writes are "UPDATE ... WHERE version = expected", inserts use ON CONFLICT,
-- so two first writers cannot both win. See docs/storage.md.
CREATE TABLE IF NOT EXISTS granary_grain_state (
    grain_key    bytea       NOT NULL,
    grain_class  text        NOT NULL,
    service      text        NOT NULL,
    state        bytea       NOT NULL,
    version      bigint      NOT NULL CHECK (version > 0),
    state_format integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grain_key, grain_class, service)
);
