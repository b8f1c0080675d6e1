-- 002_membership: who is in the cluster. See docs/membership.md.
-- One row per silo incarnation: a restarted process is a new silo_id (new
-- generation); its predecessor's row is marked dead. Heartbeats use the
-- database clock (now()), so pods' clocks need not agree.
CREATE TABLE IF NOT EXISTS granary_silo (
    cluster      text        NOT NULL,
    silo_id      text        NOT NULL,
    address      text        NOT NULL,
    port         integer     NOT NULL,
    generation   bigint      NOT NULL,
    status       text        NOT NULL CHECK (status IN ('joining', 'active', 'shutting_down', 'dead')),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, silo_id)
);
CREATE INDEX IF NOT EXISTS granary_silo_live ON granary_silo (cluster) WHERE status <> 'dead';
-- Bumped on every status change, so silos notice a new view with one cheap read.
CREATE TABLE IF NOT EXISTS granary_membership_version (
    cluster text   PRIMARY KEY,
    version bigint NOT NULL
);
