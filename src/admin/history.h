/* src/admin/history.h - the last five minutes of this silo, one sample per
 * second: calls, errors and latency buckets per class and method, and
 * storage operations. What the dashboard's charts are drawn from; the
 * Prometheus counters stay the place for long-term history. */
#ifndef GR_SILO_HISTORY_H
#define GR_SILO_HISTORY_H

#include <uv.h>

#include "base/base.h"
#include "runtime/runtime.h"

#define GR__HISTORY_SECONDS 300

typedef struct gr__history gr__history_t;

/* Start sampling `rt` (borrowed; it must outlive the history) every second. */
int gr__history_new(uv_loop_t *loop, gr_runtime_t *rt, gr__history_t **out);

/* Append `"series":[...],"storage":[...]` (no braces) with the samples of
 * seconds after `since` (unix seconds; 0: all kept), oldest first. Only the
 * newest seconds that fit in about max_bytes are written: an app with so
 * many busy methods that five minutes would not fit in a reply frame gets
 * a shorter history instead of an error.
 * docs/dashboard.md has the layout. */
int gr__history_write_json(const gr__history_t *h, int64_t since, size_t max_bytes, gr__buf_t *b);

/* CPU time this process used over the last sample, as a share of one core. */
double gr__history_cpu(const gr__history_t *h);

void gr__history_close(gr__history_t *h, void (*cb)(void *), void *ud);

#endif
