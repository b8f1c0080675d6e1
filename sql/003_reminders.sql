-- 003_reminders: durable reminders. See docs/reminders.md.
-- One row per (cluster, grain, reminder name). due_us is the next due time
-- in microseconds since the epoch by the DATABASE clock, so silos' clocks
-- need not agree; period_ms 0 is a one-shot reminder. The silo that owns a
-- grain's hash-ring range fires its due reminders and then advances due_us
-- conditionally (WHERE due_us = the value it read), so one due time is
-- advanced once even when two silos race during a view change.
CREATE TABLE IF NOT EXISTS granary_reminder (
    service     text        NOT NULL,
    grain_class text        NOT NULL,
    grain_key   bytea       NOT NULL,
    name        text        NOT NULL,
    due_us      bigint      NOT NULL,
    period_ms   bigint      NOT NULL CHECK (period_ms >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, grain_class, grain_key, name)
);
CREATE INDEX IF NOT EXISTS granary_reminder_due ON granary_reminder (service, due_us);
