-- 004_activations: activation claims, the truth behind single activation.
-- See docs/directory.md ("Single activation"). One row per grain that has,
-- or recently had, an activation: the silo incarnation that claimed it and
-- the claim's token (that activation's number on its silo). A silo loads a
-- grain's state in the same statement that claims it; the claim moves to
-- another silo only when its holder released it (by token) or the holder's
-- membership row says it is dead AND its last heartbeat is older than its
-- lease, by the database clock -- by then the holder has stopped answering
-- (it stops a tenth of a lease early). Only that positive evidence frees a
-- claim: a holder whose row a claim's snapshot cannot see keeps it. Same primary key order as the grain state, for
-- a sharded PostgreSQL.
--
-- A release does not delete the row: it empties silo_id (''), and the next
-- claim of a released row reads the state again in a statement of its own.
-- One statement sees one snapshot, taken when it starts; a claim that waited
-- for a row lock while the previous holder wrote, deactivated and released
-- would otherwise load state older than that holder's acknowledged writes.
-- (A claim of a row that never existed has no previous holder; one taken
-- from a dead holder comes a lease after that holder's last answer.)
CREATE TABLE IF NOT EXISTS granary_activation (
    grain_key   bytea       NOT NULL,
    grain_class text        NOT NULL,
    service     text        NOT NULL,
    silo_id     text        NOT NULL,  -- '' when released
    token       bigint      NOT NULL,
    reread      boolean     NOT NULL DEFAULT false, -- this claim took a released row
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grain_key, grain_class, service)
);
-- No index on silo_id: it would make every claim pay an index insert (and
-- re-claims non-HOT updates) for the one statement that uses it, a graceful
-- leave's "delete all my claims", which may scan instead.
-- Each silo's lease, so a claim is taken over only after the holder's own
-- lease ran out. Rows written before this migration get a long one.
ALTER TABLE granary_silo ADD COLUMN IF NOT EXISTS lease_ms integer NOT NULL DEFAULT 60000;
