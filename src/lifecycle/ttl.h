/* src/lifecycle/ttl.h - the silo's side of the state lifecycle
 * (docs/lifecycle.md): the sweep that deletes the stored state of grains
 * of classes with a state_ttl_s that nobody wrote for that long (each silo
 * deletes only grains of its own ring range, a page at a time), and the
 * progress of `silo migrate-state` runs, read from the database for
 * /metrics. Its own one-connection pool, opened on first use. */
#ifndef GR_LIFECYCLE_TTL_H
#define GR_LIFECYCLE_TTL_H

#include <uv.h>

#include "base/base.h"
#include "runtime/runtime.h"

typedef struct gr__ttl gr__ttl_t;

typedef struct gr__ttl_opts {
    const char *service; /* the cluster name: part of every row */
    uint32_t tick_ms;    /* one page per tick (default 1000) */
    uint32_t page_rows;  /* rows looked at per page (default 1000; 0: no sweep) */
    uint32_t progress_ms; /* how often migrate-state progress is read (default 5000) */
} gr__ttl_opts_t;

void gr__ttl_opts_init(gr__ttl_opts_t *o);

/* Which silo owns a grain's range now (NULL: nobody yet); borrowed. */
typedef const char *(*gr__ttl_owner_fn)(void *ud, const char *cls, const uint8_t *key, size_t key_len);

/* 0, GR_EINVAL or GR_ENOMEM. Sweeps only while set_active(1). Strings copied. */
int gr__ttl_new(uv_loop_t *loop, const char *conninfo, gr_runtime_t *rt, const char *self_id,
                const gr__ttl_opts_t *opts, gr__ttl_owner_fn owner, void *owner_ud, gr__ttl_t **out);

/* Sweep (1: a joined, healthy silo that is not leaving) or not (0). */
void gr__ttl_set_active(gr__ttl_t *t, int on);

typedef struct gr__ttl_stats {
    uint64_t scanned;  /* rows looked at, of every class with a TTL */
    uint64_t expired;  /* of them not written for their TTL and in this silo's range */
    uint64_t deleted;  /* grains deleted (state, reminders, stored replies) */
    uint64_t held;     /* expired but active somewhere: kept */
    uint64_t reminders; /* reminders deleted with them */
    uint64_t passes;   /* sweeps that reached a class's last key */
    uint64_t errors;   /* statements that failed */
} gr__ttl_stats_t;
void gr__ttl_get_stats(const gr__ttl_t *t, gr__ttl_stats_t *out);

/* Append the TTL counters and every class's migrate-state progress (as last
 * read) in Prometheus text format. 0 or GR_ENOMEM. */
int gr__ttl_write_metrics(const gr__ttl_t *t, gr__buf_t *b);

/* Stop, cancel what is in flight, free; cb runs once, later. */
void gr__ttl_close(gr__ttl_t *t, void (*cb)(void *), void *ud);

#endif
