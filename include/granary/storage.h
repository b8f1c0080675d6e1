/* granary/storage.h - where grain state lives: bytes plus a version.
 *
 * A provider stores one row per (service, class, key): the state bytes and a
 * version that starts at 1 on the first write and grows by one on each write.
 * A write names the version it expects; if the row moved on, the write fails
 * with GR_ECONFLICT. All operations are asynchronous on the provider's loop.
 */
#ifndef GRANARY_STORAGE_H
#define GRANARY_STORAGE_H

#include <stdio.h>
#include <uv.h>

#include "granary/error.h"

typedef struct gr_storage gr_storage_t;

/** Completion of a read. status 0 with the state (version 0, len 0 and
 * format 0 when no row exists), GR_ESTORAGE with `detail` set, or
 * GR_ECANCELED (the provider was closed first). `format` is
 * the state format (the class's state version) the row was written with.
 * `data` and `detail` are borrowed until the callback returns. */
typedef void (*gr_storage_read_cb)(void *ud, int status, const uint8_t *data, size_t len, int64_t version,
                                   uint32_t format, const char *detail);

/** Completion of a write or clear. status 0 with the new version (0 after a
 * clear), GR_ECONFLICT, GR_ESTORAGE with `detail` (borrowed), or
 * GR_ECANCELED (the provider was closed first). */
typedef void (*gr_storage_write_cb)(void *ud, int status, int64_t new_version, const char *detail);

/** Options of the PostgreSQL provider; gr_storage_pg_options_init() first. */
typedef struct gr_storage_pg_options {
    const char *conninfo;      /* libpq URL or key=value string; required; copied */
    const char *service;       /* service (cluster) name, part of every row key; default "default" */
    unsigned pool_size;        /* connections (default 4) */
    uint32_t op_timeout_ms;    /* an operation waiting longer for a connection fails (default 5000) */
    uint32_t reconnect_min_ms; /* first reconnect delay, doubled up to the max (default 100) */
    uint32_t reconnect_max_ms; /* (default 5000) */
    uint32_t query_timeout_ms; /* a query without a reply this long fails with GR_ESTORAGE, outcome
                                  unknown, and its connection is replaced (default 30000, 0 never) */
} gr_storage_pg_options_t;

/** Fill `opts` with the documented defaults (conninfo NULL). */
GR_EXTERN void gr_storage_pg_options_init(gr_storage_pg_options_t *opts);

/** Create a PostgreSQL provider on `loop`. Connections start at once in
 * non-blocking mode and reconnect with backoff; nothing blocks the loop.
 * The schema must exist (`silo migrate`). *out is owned by the caller and
 * closed with gr_storage_close(). Returns 0, GR_EINVAL (NULL loop, opts or
 * out, no conninfo or service, pool_size 0 or over 64, a zero op_timeout_ms
 * or reconnect_min_ms, reconnect_max_ms under reconnect_min_ms) or
 * GR_ENOMEM. */
GR_EXTERN int gr_storage_pg_new(uv_loop_t *loop, const gr_storage_pg_options_t *opts, gr_storage_t **out);

/** Bring the database at `conninfo` (a libpq URL or key=value string) to the
 * schema of this library: every numbered migration of sql/ not yet recorded
 * in granary_schema_version, each in its own transaction under an advisory
 * lock (concurrent migrators wait for each other); re-running is a no-op.
 * Blocking (libpq's synchronous API): for tools like `silo migrate` and
 * start-up scripts, never on a running loop. Progress lines go to
 * `progress` (may be NULL). Returns 0, GR_EINVAL (NULL conninfo), or
 * GR_ESTORAGE with the server's or libpq's message in err. */
GR_EXTERN int gr_storage_pg_migrate(const char *conninfo, FILE *progress, char *err, size_t err_size);

/** Progress of gr_storage_pg_upgrade_state(), after every batch and at the end. */
typedef struct gr_state_upgrade_progress {
    const char *class_name;
    uint32_t to_format;  /* the class's state_version */
    uint64_t upgraded;   /* rows rewritten at to_format (since the run began, resumed runs included) */
    uint64_t skipped;    /* rows passed over because their grain was active (tried again) */
    uint64_t failed;     /* rows whose upgrade_state returned non-zero (left as they were) */
    uint64_t remaining;  /* rows at an older format, at the last count */
    double rows_per_s;   /* rows upgraded per second by this call */
    int resumed;         /* this call continued an earlier, unfinished run */
    int finished;        /* the last report: nothing more will be tried */
} gr_state_upgrade_progress_t;

typedef struct gr_state_upgrade_options {
    const char *cluster; /* the service rows are scoped by (default "default") */
    uint32_t batch;      /* rows per statement, 1..10000 (default 500) */
    /* How long to keep trying rows whose grain is active (their silo holds
     * the state in memory and writes it upgraded at its next write), in ms
     * (default 60000; 0: one pass). */
    uint32_t wait_ms;
    void (*progress)(void *ud, const gr_state_upgrade_progress_t *p); /* may be NULL */
    void *progress_ud;
} gr_state_upgrade_options_t;

GR_EXTERN void gr_state_upgrade_options_init(gr_state_upgrade_options_t *o);

/** Upgrade every stored row of class `cls` whose format is older than its
 * state_version through its upgrade_state, online (docs/lifecycle.md): in
 * key order, `batch` rows per statement, each rewritten only at the version
 * it was read at and only while no silo holds the grain's activation claim
 * (a live grain is passed over and tried again, until `wait_ms`). The
 * cursor and counters are kept in granary_state_upgrade after every batch,
 * so a call after an interrupted one resumes (and every silo shows them on
 * /metrics). Blocking (libpq's synchronous API), for `silo migrate-state`.
 * Returns 0 (every row is at the new format), GR_EINVAL (NULL arguments, a
 * class without upgrade_state or state_version, a worker class, batch out
 * of range), GR_EACTIVATE (upgrade_state refused some rows: `failed`; the
 * others were done), GR_ETIMEDOUT (rows still active after wait_ms are
 * left: `remaining`; run it again), GR_ENOMEM, or GR_ESTORAGE with the
 * server's or libpq's message in err. `out` (may be NULL) gets the last
 * progress. */
struct gr_class; /* granary/grain.h */
GR_EXTERN int gr_storage_pg_upgrade_state(const char *conninfo, const struct gr_class *cls,
                                          const gr_state_upgrade_options_t *opts, gr_state_upgrade_progress_t *out,
                                          char *err, size_t err_size);

/** The schema version this library's migrations reach (the highest
 * granary_schema_version a database migrated by it records). */
GR_EXTERN int gr_storage_pg_schema_version(void);

/** Create an in-memory provider with the same version semantics (for tests
 * and a database-free dev mode). State is lost when it is closed. Returns 0,
 * GR_EINVAL (NULL loop or out) or GR_ENOMEM. */
GR_EXTERN int gr_storage_memory_new(uv_loop_t *loop, gr_storage_t **out);

/** Read a grain's state. Returns 0 (cb runs once, later) or, with cb never
 * run: GR_EINVAL (NULL st or cb, an empty class name or one with bytes other
 * than printable ASCII without '/', key_len > 0 with NULL key), GR_ETOOBIG
 * (a class name over GR_CLASS_NAME_MAX or a key over GR_KEY_MAX bytes),
 * GR_ESHUTDOWN (the provider is closing) or GR_ENOMEM.
 * Strings and key are copied. */
GR_EXTERN int gr_storage_read(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                              gr_storage_read_cb cb, void *ud);

/** Write a grain's state, tagged with its `format` (the class's state
 * version), if its stored version is `expected_version` (0: only if no row
 * exists). Data is copied. Same return contract as read, plus GR_EINVAL for
 * a negative expected_version, len > 0 with NULL data, or a format over
 * INT32_MAX or with bit 30 set (reserved: it marks a stored reply log), and
 * GR_ETOOBIG for len over GR_STATE_MAX. */
GR_EXTERN int gr_storage_write(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                               const void *data, size_t len, uint32_t format, int64_t expected_version,
                               gr_storage_write_cb cb, void *ud);

/** Delete a grain's row if its stored version is `expected_version`
 * (deleting a missing row with expected 0 succeeds). Same return contract as
 * read, plus GR_EINVAL for a negative expected_version. */
GR_EXTERN int gr_storage_clear(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                               int64_t expected_version, gr_storage_write_cb cb, void *ud);

/** Close the provider: queued operations complete with GR_ECANCELED, then
 * `cb` runs on a later loop iteration and the memory is gone. */
GR_EXTERN void gr_storage_close(gr_storage_t *st, gr_close_cb cb, void *ud);

#endif
