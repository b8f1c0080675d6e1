/* src/storage/lifecycle.h - the statements of the state lifecycle
 * (docs/lifecycle.md): pages of a class's stored rows, the deletion of
 * expired ones (state_ttl_s) and the rewrite of upgraded ones (`silo
 * migrate-state`), on PostgreSQL. Both changes take the grain's activation
 * claim row first and act only where it is released (or its holder dead for
 * its lease), in the same statement, so they never touch the state of a
 * grain that is active anywhere, and only at the version the page showed.
 * The policy (which rows, when, by whom) is src/lifecycle/'s. */
#ifndef GR_PERSISTENCE_LIFECYCLE_H
#define GR_PERSISTENCE_LIFECYCLE_H

#include <libpq-fe.h>
#include <stdint.h>

#include "granary/common.h"

#include "storage/pgpool.h"

/* One row of a page; key borrowed from the result (until the callback
 * returns, or until the caller's next call for the blocking functions). */
typedef struct gr__pgl_row {
    const uint8_t *key;
    size_t key_len;
    int64_t version;
    int expired;           /* scan: not written for ttl_s seconds (by the database clock) */
    const uint8_t *state;  /* upgrade page: the stored bytes */
    size_t state_len;
    uint32_t format;       /* upgrade page: their format */
} gr__pgl_row_t;

/* ---- the TTL sweep (asynchronous, on a pool) ---- */

/* The next page of class `cls`: up to `limit` rows (1..10000) with a key
 * after `after` (after_len 0 and after NULL: from the first), in key order,
 * each marked expired or not. cb gets status 0 and the rows (n < limit: the
 * last page; a row with version 0 had malformed columns and is never
 * expired), or GR_ESTORAGE / GR_ECANCELED with detail. Returns 0 (cb runs
 * once, later), GR_EINVAL or GR_ENOMEM. */
typedef void (*gr__pgl_scan_cb)(void *ud, int status, const gr__pgl_row_t *rows, size_t n, const char *detail);
int gr__pgl_scan(gr__pgpool_t *pool, const char *service, const char *cls, const uint8_t *after, size_t after_len,
                 uint32_t ttl_s, uint32_t limit, gr__pgl_scan_cb cb, void *ud);

/* Delete the state rows[0..n) (key and version; n 1..10000) of `cls` that
 * are still at that version and still expired, and whose claim row is
 * released or held by a dead silo past its lease, with their reminders and
 * stored replies. cb: status 0 with the rows deleted, the rows skipped
 * because their grain was active (the claim held), and the reminders
 * deleted; or GR_ESTORAGE / GR_ECANCELED (nothing known). Returns 0,
 * GR_EINVAL or GR_ENOMEM (cb never runs). */
typedef void (*gr__pgl_expire_cb)(void *ud, int status, uint64_t deleted, uint64_t held, uint64_t reminders,
                                  const char *detail);
int gr__pgl_expire(gr__pgpool_t *pool, const char *service, const char *cls, const gr__pgl_row_t *rows, size_t n,
                   uint32_t ttl_s, gr__pgl_expire_cb cb, void *ud);

/* ---- the upgrade (blocking, on one connection) ---- */

/* The next page of rows of `cls` stored with a format older than `format`,
 * key after `after` (NULL: from the first), at most `limit`. *res is the
 * result, which the caller PQclear()s; rows point into it. Returns 0 with
 * *n rows, GR_ENOMEM, or GR_ESTORAGE with the server's reason in err. */
int gr__pgl_upgrade_page(PGconn *c, const char *service, const char *cls, uint32_t format, const uint8_t *after,
                         size_t after_len, uint32_t limit, PGresult **res, gr__pgl_row_t **rows, size_t *n,
                         char *err, size_t err_size);

/* Rows of `cls` stored with a format older than `format`: 0 with *count,
 * or GR_ESTORAGE with err. */
int gr__pgl_upgrade_count(PGconn *c, const char *service, const char *cls, uint32_t format, uint64_t *count,
                          char *err, size_t err_size);

/* Store the upgraded bytes states[i] (lens[i]) of rows[i] (key, version)
 * with `format` and version + 1 (updated_at unchanged: an upgrade is not a
 * write of the grain's), where the row is still at that version and the
 * claim is released (or its holder dead past its lease). 0 with
 * *written and *held (skipped because the grain was active; the others not
 * written had moved on meanwhile), GR_ENOMEM, or GR_ESTORAGE with err
 * (nothing known of this batch). */
int gr__pgl_upgrade_write(PGconn *c, const char *service, const char *cls, uint32_t format,
                          const gr__pgl_row_t *rows, const uint8_t *const *states, const size_t *lens, size_t n,
                          uint64_t *written, uint64_t *held, char *err, size_t err_size);

/* The progress row of `silo migrate-state` for (service, class)
 * (granary_state_upgrade, sql/006_lifecycle.sql). */
typedef struct gr__pgl_progress {
    uint32_t to_format;
    uint64_t upgraded, skipped, failed, remaining;
    int finished;
    int has_cursor; /* else from the first key */
    size_t cursor_len;
    uint8_t cursor[GR_KEY_MAX];
} gr__pgl_progress_t;

/* Load it: 0 with *found (0: no row, *p untouched), or GR_ESTORAGE. */
int gr__pgl_progress_load(PGconn *c, const char *service, const char *cls, gr__pgl_progress_t *p, int *found,
                          char *err, size_t err_size);
/* Store it (insert or replace; finished sets finished_at): 0 or GR_ESTORAGE. */
int gr__pgl_progress_save(PGconn *c, const char *service, const char *cls, const gr__pgl_progress_t *p,
                          char *err, size_t err_size);

/* Every class's progress row of `service`, for /metrics: cb gets status 0
 * and rows[0..n) with classes[i] their class names (cursor not filled), or
 * GR_ESTORAGE / GR_ECANCELED. Returns 0, GR_EINVAL or GR_ENOMEM. */
typedef void (*gr__pgl_progress_cb)(void *ud, int status, const char *const *classes,
                                    const gr__pgl_progress_t *rows, size_t n);
int gr__pgl_progress_read(gr__pgpool_t *pool, const char *service, gr__pgl_progress_cb cb, void *ud);

#endif
