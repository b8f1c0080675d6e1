/* src/reminders/reminders.h - durable reminders: rows in PostgreSQL, fired by the
 * silo that owns the grain's hash-ring range, at least once. The grain API
 * (gr_reminder_register & co.) reaches it through the runtime's reminder
 * hook; the `granary reminder` CLI through the `$silo` control class.
 * Semantics and timing: docs/reminders.md. */
#ifndef GR_SILO_REMINDERS_H
#define GR_SILO_REMINDERS_H

#include <uv.h>

#include "runtime/runtime.h"

typedef struct gr__reminders gr__reminders_t;

typedef struct gr__reminders_opts {
    const char *service;      /* the cluster name: part of every row */
    uint32_t poll_ms;         /* how often due reminders are looked for (default 1000) */
    uint32_t min_period_ms;   /* shortest period a reminder may have (default 1000) */
    uint32_t fire_timeout_ms; /* the grain's on_reminder must answer within (default 5000) */
} gr__reminders_opts_t;

void gr__reminders_opts_init(gr__reminders_opts_t *o);

/* Which silo owns a grain's range now (NULL: nobody yet); borrowed. */
typedef const char *(*gr__owner_fn)(void *ud, const char *cls, const uint8_t *key, size_t key_len);

/* Create the service with its own small connection pool and hook it into
 * `rt` (gr_reminder_* work from then on). Firing starts with
 * gr__reminders_set_firing(r, 1). */
int gr__reminders_new(uv_loop_t *loop, const char *conninfo, gr_runtime_t *rt, const char *self_id,
                      const gr__reminders_opts_t *opts, gr__owner_fn owner, void *owner_ud,
                      gr__reminders_t **out);

/* Fire due reminders (1) or not (0: before joining, while fenced or draining). */
void gr__reminders_set_firing(gr__reminders_t *r, int on);

/* The `$silo` control methods reminder_add ("NAME DUE_MS PERIOD_MS"),
 * reminder_remove ("NAME") and reminder_list, for grain "CLASS/KEY". Returns
 * 0 if `method` is one of them (done runs, later), else GR_ENOMETHOD. */
int gr__reminders_control(gr__reminders_t *r, const char *method, const uint8_t *grain, size_t grain_len,
                          const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud);

typedef struct gr__reminders_stats {
    uint64_t fired, fire_failures, polls;
    uint64_t in_flight; /* firings not answered yet */
    int firing, polling;
} gr__reminders_stats_t;
void gr__reminders_get_stats(const gr__reminders_t *r, gr__reminders_stats_t *out);

/* Unhook from the runtime, cancel what is in flight, free. */
void gr__reminders_close(gr__reminders_t *r, void (*cb)(void *), void *ud);

#endif
