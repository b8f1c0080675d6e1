-- 005_replies: the reply log of keyed calls (docs/exactly-once.md). One row
-- per idempotency key a grain answered: its status and reply, written by the
-- same statement that commits the state the call changed (the batched
-- write's CTE inserts these rows only for the grain writes that committed),
-- so a reply is stored exactly when its state is. An activation loads its
-- grain's live rows with its state; a repeat of a call is answered from
-- them without running. Each grain's rows are bounded by its class's key
-- count (the write that evicts a key deletes its row) and by age: rows past
-- expires_ms are ignored at once and deleted by each silo's periodic,
-- bounded sweep over the expires_ms index (never a scan of the table).
-- at_ms and expires_ms are the silo's wall clock in ms.
CREATE TABLE IF NOT EXISTS granary_reply (
    grain_key   bytea   NOT NULL,
    grain_class text    NOT NULL,
    service     text    NOT NULL,
    idem_key    bytea   NOT NULL,
    status      integer NOT NULL,
    reply       bytea   NOT NULL,
    at_ms       bigint  NOT NULL,
    expires_ms  bigint  NOT NULL,
    PRIMARY KEY (grain_key, grain_class, service, idem_key)
);
-- BRIN, not btree: rows arrive in expiry order, so block-range summaries
-- find the expired ones for the sweep, and an insert costs next to nothing
-- (a btree here was a third of a keyed write's cost: BENCHMARKS.md).
CREATE INDEX IF NOT EXISTS granary_reply_expires ON granary_reply USING brin (expires_ms);
