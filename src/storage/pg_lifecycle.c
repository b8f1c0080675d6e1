/* src/storage/pg_lifecycle.c - the state lifecycle's statements
 * (storage/lifecycle.h, docs/lifecycle.md).
 *
 * Why the claim row: a grain active anywhere holds its claim in
 * granary_activation (docs/directory.md). Both changes here first lock
 * that row with INSERT .. ON CONFLICT DO UPDATE (inserting it released when
 * the grain was never claimed) and go on only where it is released or its
 * holder is dead past its lease; the row stays released. A claimant that
 * comes meanwhile waits for the lock, then takes a released row and so reads
 * the state again in a new statement (the `reread` of the claim), which
 * sees what this statement did. The state change itself matches the version
 * the page showed, so a write that committed since wins. */
#include <stdio.h>

#include "storage/lifecycle.h"
#include "storage/pg_internal.h"

#define GR__PGL_MAX 10000u

/* The claim rows of v(k) for class $2 in service $1, locked, where nobody
 * live holds them: the keys returned are safe to change in this statement. */
#define GR__SQL_PGL_FREE_CLAIMS                                                                              \
    "cl AS (INSERT INTO granary_activation AS a (grain_key, grain_class, service, silo_id, token) "          \
    "       SELECT k, $2, $1, '', 0 FROM v "                                                                 \
    "       ON CONFLICT (grain_key, grain_class, service) DO UPDATE SET silo_id = '' "                        \
    "       WHERE a.silo_id = '' OR EXISTS (SELECT 1 FROM granary_silo m WHERE m.cluster = $1 "               \
    "             AND m.silo_id = a.silo_id AND m.status = 'dead' "                                          \
    "             AND m.heartbeat_at <= now() - m.lease_ms * interval '1 millisecond') "                      \
    "       RETURNING grain_key) "

static const char GR__SQL_PGL_SCAN[] =
    "SELECT grain_key, version, updated_at <= now() - $4::bigint * interval '1 second' "
    "FROM granary_grain_state WHERE service = $1 AND grain_class = $2 AND ($3::bytea IS NULL OR grain_key > $3) "
    "ORDER BY grain_key LIMIT $5::int";

static const char GR__SQL_PGL_EXPIRE[] =
    "WITH v AS (SELECT DISTINCT ON (k) k, ev FROM unnest($3::bytea[], $4::bigint[]) AS v(k, ev) ORDER BY k), "
    GR__SQL_PGL_FREE_CLAIMS ", "
    "     d AS (DELETE FROM granary_grain_state s USING v, cl "
    "           WHERE cl.grain_key = v.k AND s.grain_key = v.k AND s.grain_class = $2 AND s.service = $1 "
    "           AND s.version = v.ev AND s.updated_at <= now() - $5::bigint * interval '1 second' "
    /* Kept while something acknowledged since is still live: a reminder
     * registered within the TTL, a stored reply within its retention. */
    "           AND NOT EXISTS (SELECT 1 FROM granary_reminder m WHERE m.service = $1 AND m.grain_class = $2 "
    "                 AND m.grain_key = v.k AND m.created_at > now() - $5::bigint * interval '1 second') "
    "           AND NOT EXISTS (SELECT 1 FROM granary_reply y WHERE y.service = $1 AND y.grain_class = $2 "
    "                 AND y.grain_key = v.k AND y.expires_ms > (extract(epoch FROM now()) * 1000)::bigint) "
    "           RETURNING s.grain_key), "
    "     r AS (DELETE FROM granary_reminder m USING d "
    "           WHERE m.service = $1 AND m.grain_class = $2 AND m.grain_key = d.grain_key RETURNING 1), "
    "     p AS (DELETE FROM granary_reply y USING d "
    "           WHERE y.service = $1 AND y.grain_class = $2 AND y.grain_key = d.grain_key RETURNING 1) "
    "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM v) - (SELECT count(*) FROM cl), "
    "       (SELECT count(*) FROM r), (SELECT count(*) FROM p)";

/* A page is also cut at GR__PGL_PAGE_BYTES of state (always one row at
 * least): 500 rows of up to 16 MiB each must not become one result. */
#define GR__PGL_PAGE_BYTES "67108864"
static const char GR__SQL_PGL_PAGE[] =
    "SELECT grain_key, version, state, state_format FROM ("
    "  SELECT grain_key, version, state, state_format, "
    "         sum(octet_length(state)) OVER (ORDER BY grain_key) - octet_length(state) AS before "
    "  FROM (SELECT grain_key, version, state, state_format FROM granary_grain_state "
    "        WHERE service = $1 AND grain_class = $2 AND state_format < $3::int "
    "        AND ($4::bytea IS NULL OR grain_key > $4) ORDER BY grain_key LIMIT $5::int) p) q "
    "WHERE before < " GR__PGL_PAGE_BYTES " ORDER BY grain_key";

static const char GR__SQL_PGL_COUNT[] = "SELECT count(*) FROM granary_grain_state "
                                        "WHERE service = $1 AND grain_class = $2 AND state_format < $3::int";

static const char GR__SQL_PGL_UPGRADE[] =
    "WITH v AS (SELECT DISTINCT ON (k) k, st, ev FROM unnest($3::bytea[], $4::bytea[], $5::bigint[]) "
    "           AS v(k, st, ev) ORDER BY k), "
    GR__SQL_PGL_FREE_CLAIMS ", "
    "     u AS (UPDATE granary_grain_state t SET state = v.st, version = t.version + 1, state_format = $6::int "
    "           FROM v JOIN cl ON cl.grain_key = v.k "
    "           WHERE t.grain_key = v.k AND t.grain_class = $2 AND t.service = $1 AND t.version = v.ev "
    "           RETURNING 1) "
    "SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM v) - (SELECT count(*) FROM cl)";

/* ---- scan ---- */

typedef struct gr__pgl_scan_req {
    gr__pgl_scan_cb cb;
    void *ud;
} gr__pgl_scan_req_t;

static void gr__pgl_scan_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgl_scan_req_t *q = ud;
    if (status != 0) {
        q->cb(q->ud, status, NULL, 0, detail);
        gr__free(q);
        return;
    }
    int n = PQntuples(res);
    gr__pgl_row_t *rows = n ? gr__calloc((size_t)n, sizeof *rows) : NULL;
    if (n && !rows) {
        q->cb(q->ud, GR_ENOMEM, NULL, 0, "out of memory reading a page");
        gr__free(q);
        return;
    }
    for (int i = 0; i < n; i++) {
        /* A row whose columns do not have their binary widths is not
         * trusted: never expired (its key still moves the cursor). */
        int64_t version = gr__pg_i64(res, i, 1);
        int ok = version > 0 && PQgetlength(res, i, 2) == 1;
        rows[i].key = (const uint8_t *)PQgetvalue(res, i, 0);
        rows[i].key_len = (size_t)PQgetlength(res, i, 0);
        rows[i].version = ok ? version : 0;
        rows[i].expired = ok && PQgetvalue(res, i, 2)[0] != 0;
    }
    q->cb(q->ud, 0, rows, (size_t)n, NULL);
    gr__free(rows);
    gr__free(q);
}

int gr__pgl_scan(gr__pgpool_t *pool, const char *service, const char *cls, const uint8_t *after, size_t after_len,
                 uint32_t ttl_s, uint32_t limit, gr__pgl_scan_cb cb, void *ud) {
    if (!pool || !service || !cls || !cb || !ttl_s || !limit || limit > GR__PGL_MAX || after_len > GR_KEY_MAX)
        return GR_EINVAL;
    gr__pgl_scan_req_t *q = gr__malloc(sizeof *q);
    if (!q) return GR_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    char ttl[24], lim[16];
    snprintf(ttl, sizeof ttl, "%u", (unsigned)ttl_s);
    snprintf(lim, sizeof lim, "%u", (unsigned)limit);
    const char *values[5] = {service, cls, after ? (const char *)after : NULL, ttl, lim};
    const int lengths[5] = {0, 0, (int)after_len, 0, 0};
    const int formats[5] = {0, 0, 1, 0, 0};
    int rc = gr__pgpool_query(pool, GR__SQL_PGL_SCAN, 5, values, lengths, formats, 1, gr__pgl_scan_done, q);
    if (rc != 0) gr__free(q);
    return rc;
}

/* ---- expire ---- */

typedef struct gr__pgl_exp_req {
    gr__pgl_expire_cb cb;
    void *ud;
} gr__pgl_exp_req_t;

static void gr__pgl_expire_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgl_exp_req_t *q = ud;
    if (status == 0 && (PQntuples(res) != 1 || gr__pg_i64(res, 0, 0) < 0 || gr__pg_i64(res, 0, 1) < 0 ||
                        gr__pg_i64(res, 0, 2) < 0)) {
        status = GR_ESTORAGE;
        detail = "malformed answer to the expiry";
    }
    if (status != 0)
        q->cb(q->ud, status, 0, 0, 0, detail);
    else
        q->cb(q->ud, 0, (uint64_t)gr__pg_i64(res, 0, 0), (uint64_t)gr__pg_i64(res, 0, 1),
              (uint64_t)gr__pg_i64(res, 0, 2), NULL);
    gr__free(q);
}

int gr__pgl_expire(gr__pgpool_t *pool, const char *service, const char *cls, const gr__pgl_row_t *rows, size_t n,
                   uint32_t ttl_s, gr__pgl_expire_cb cb, void *ud) {
    if (!pool || !service || !cls || !rows || !cb || !ttl_s || n == 0 || n > GR__PGL_MAX) return GR_EINVAL;
    gr__pgl_exp_req_t *q = gr__malloc(sizeof *q);
    if (!q) return GR_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    gr__buf_t keys, versions;
    gr__buf_init(&keys);
    gr__buf_init(&versions);
    int rc = gr__arr_begin(&keys, GR__OID_BYTEA, n) | gr__arr_begin(&versions, GR__OID_INT8, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc |= gr__arr_bytes(&keys, rows[i].key, rows[i].key_len) | gr__arr_i64(&versions, rows[i].version);
    if (rc == 0) {
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%u", (unsigned)ttl_s);
        const char *values[5] = {service, cls, (const char *)keys.data, (const char *)versions.data, ttl};
        const int lengths[5] = {0, 0, (int)keys.len, (int)versions.len, 0};
        const int formats[5] = {0, 0, 1, 1, 0};
        rc = gr__pgpool_query(pool, GR__SQL_PGL_EXPIRE, 5, values, lengths, formats, 1, gr__pgl_expire_done, q);
    } else {
        rc = GR_ENOMEM;
    }
    gr__buf_free(&keys);
    gr__buf_free(&versions);
    if (rc != 0) gr__free(q);
    return rc;
}

/* ---- upgrade (blocking) ---- */

static int gr__pgl_failed(PGresult *res, PGconn *c, char *err, size_t err_size) {
    snprintf(err, err_size, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    size_t l = strlen(err);
    while (l && (err[l - 1] == '\n' || err[l - 1] == ' '))
        err[--l] = 0;
    PQclear(res);
    return GR_ESTORAGE;
}

int gr__pgl_upgrade_count(PGconn *c, const char *service, const char *cls, uint32_t format, uint64_t *count,
                          char *err, size_t err_size) {
    char f[16];
    snprintf(f, sizeof f, "%u", (unsigned)format);
    const char *values[3] = {service, cls, f};
    PGresult *res = PQexecParams(c, GR__SQL_PGL_COUNT, 3, NULL, values, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || gr__pg_i64(res, 0, 0) < 0)
        return gr__pgl_failed(res, c, err, err_size);
    *count = (uint64_t)gr__pg_i64(res, 0, 0);
    PQclear(res);
    return 0;
}

int gr__pgl_upgrade_page(PGconn *c, const char *service, const char *cls, uint32_t format, const uint8_t *after,
                         size_t after_len, uint32_t limit, PGresult **out, gr__pgl_row_t **rows_out, size_t *n_out,
                         char *err, size_t err_size) {
    char f[16], lim[16];
    snprintf(f, sizeof f, "%u", (unsigned)format);
    snprintf(lim, sizeof lim, "%u", (unsigned)limit);
    const char *values[5] = {service, cls, f, after ? (const char *)after : NULL, lim};
    const int lengths[5] = {0, 0, 0, (int)after_len, 0};
    const int formats[5] = {0, 0, 0, 1, 0};
    PGresult *res = PQexecParams(c, GR__SQL_PGL_PAGE, 5, NULL, values, lengths, formats, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) return gr__pgl_failed(res, c, err, err_size);
    int n = PQntuples(res);
    gr__pgl_row_t *rows = n ? gr__calloc((size_t)n, sizeof *rows) : NULL;
    if (n && !rows) {
        PQclear(res);
        return GR_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        if (gr__pg_i64(res, i, 1) <= 0 || PQgetlength(res, i, 3) != 4 || PQgetlength(res, i, 0) > (int)GR_KEY_MAX) {
            gr__free(rows);
            snprintf(err, err_size, "a stored row of %s does not have the columns' binary widths", cls);
            PQclear(res);
            return GR_ESTORAGE;
        }
        rows[i].key = (const uint8_t *)PQgetvalue(res, i, 0);
        rows[i].key_len = (size_t)PQgetlength(res, i, 0);
        rows[i].version = gr__pg_i64(res, i, 1);
        rows[i].state = (const uint8_t *)PQgetvalue(res, i, 2);
        rows[i].state_len = (size_t)PQgetlength(res, i, 2);
        rows[i].format = gr__get_u32((const uint8_t *)PQgetvalue(res, i, 3));
    }
    *out = res;
    *rows_out = rows;
    *n_out = (size_t)n;
    return 0;
}

int gr__pgl_upgrade_write(PGconn *c, const char *service, const char *cls, uint32_t format,
                          const gr__pgl_row_t *rows, const uint8_t *const *states, const size_t *lens, size_t n,
                          uint64_t *written, uint64_t *held, char *err, size_t err_size) {
    *written = *held = 0;
    if (n == 0) return 0;
    gr__buf_t a[3];
    for (int i = 0; i < 3; i++)
        gr__buf_init(&a[i]);
    int rc = gr__arr_begin(&a[0], GR__OID_BYTEA, n) | gr__arr_begin(&a[1], GR__OID_BYTEA, n) |
             gr__arr_begin(&a[2], GR__OID_INT8, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc |= gr__arr_bytes(&a[0], rows[i].key, rows[i].key_len) | gr__arr_bytes(&a[1], states[i], lens[i]) |
              gr__arr_i64(&a[2], rows[i].version);
    if (rc != 0) {
        for (int i = 0; i < 3; i++)
            gr__buf_free(&a[i]);
        return GR_ENOMEM;
    }
    char f[16];
    snprintf(f, sizeof f, "%u", (unsigned)format);
    const char *values[6] = {service, cls, (const char *)a[0].data, (const char *)a[1].data,
                             (const char *)a[2].data, f};
    const int lengths[6] = {0, 0, (int)a[0].len, (int)a[1].len, (int)a[2].len, 0};
    const int formats[6] = {0, 0, 1, 1, 1, 0};
    PGresult *res = PQexecParams(c, GR__SQL_PGL_UPGRADE, 6, NULL, values, lengths, formats, 1);
    for (int i = 0; i < 3; i++)
        gr__buf_free(&a[i]);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || gr__pg_i64(res, 0, 0) < 0 ||
        gr__pg_i64(res, 0, 1) < 0)
        return gr__pgl_failed(res, c, err, err_size);
    *written = (uint64_t)gr__pg_i64(res, 0, 0);
    *held = (uint64_t)gr__pg_i64(res, 0, 1);
    PQclear(res);
    return 0;
}

/* ---- progress of an upgrade ---- */

static const char GR__SQL_PGL_PROGRESS_LOAD[] =
    "SELECT to_format, upgraded, skipped, failed, remaining, finished_at IS NOT NULL, cursor_key "
    "FROM granary_state_upgrade WHERE service = $1 AND grain_class = $2";
static const char GR__SQL_PGL_PROGRESS_SAVE[] =
    "INSERT INTO granary_state_upgrade AS u (service, grain_class, to_format, cursor_key, upgraded, skipped, "
    "failed, remaining, finished_at) VALUES ($1, $2, $3::int, $4, $5::bigint, $6::bigint, $7::bigint, "
    "$8::bigint, CASE WHEN $9::bool THEN now() END) "
    "ON CONFLICT (service, grain_class) DO UPDATE SET to_format = excluded.to_format, "
    "cursor_key = excluded.cursor_key, upgraded = excluded.upgraded, skipped = excluded.skipped, "
    "failed = excluded.failed, remaining = excluded.remaining, finished_at = excluded.finished_at, "
    "updated_at = now(), started_at = CASE WHEN u.finished_at IS NOT NULL OR u.to_format <> excluded.to_format "
    "THEN now() ELSE u.started_at END";
static const char GR__SQL_PGL_PROGRESS_ALL[] =
    "SELECT grain_class, to_format, upgraded, skipped, failed, remaining, finished_at IS NOT NULL "
    "FROM granary_state_upgrade WHERE service = $1 ORDER BY grain_class LIMIT 256";

/* Columns first..first+5 of a progress row (binary): to_format, the four
 * counters, finished. 0, or -1 when a width is wrong. */
static int gr__pgl_progress_cols(const PGresult *res, int row, int first, gr__pgl_progress_t *p) {
    if (PQgetlength(res, row, first) != 4 || PQgetlength(res, row, first + 5) != 1) return -1;
    int64_t v[4];
    for (int i = 0; i < 4; i++)
        if ((v[i] = gr__pg_i64(res, row, first + 1 + i)) < 0) return -1;
    p->to_format = gr__get_u32((const uint8_t *)PQgetvalue(res, row, first));
    p->upgraded = (uint64_t)v[0];
    p->skipped = (uint64_t)v[1];
    p->failed = (uint64_t)v[2];
    p->remaining = (uint64_t)v[3];
    p->finished = PQgetvalue(res, row, first + 5)[0] != 0;
    return 0;
}

int gr__pgl_progress_load(PGconn *c, const char *service, const char *cls, gr__pgl_progress_t *p, int *found,
                          char *err, size_t err_size) {
    const char *values[2] = {service, cls};
    PGresult *res = PQexecParams(c, GR__SQL_PGL_PROGRESS_LOAD, 2, NULL, values, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) return gr__pgl_failed(res, c, err, err_size);
    *found = 0;
    if (PQntuples(res) == 1) {
        gr__pgl_progress_t q;
        memset(&q, 0, sizeof q);
        if (gr__pgl_progress_cols(res, 0, 0, &q) != 0 || PQgetlength(res, 0, 6) > (int)GR_KEY_MAX) {
            snprintf(err, err_size, "the progress row of %s is malformed", cls);
            PQclear(res);
            return GR_ESTORAGE;
        }
        q.has_cursor = !PQgetisnull(res, 0, 6);
        q.cursor_len = q.has_cursor ? (size_t)PQgetlength(res, 0, 6) : 0;
        if (q.cursor_len) memcpy(q.cursor, PQgetvalue(res, 0, 6), q.cursor_len);
        *p = q;
        *found = 1;
    }
    PQclear(res);
    return 0;
}

int gr__pgl_progress_save(PGconn *c, const char *service, const char *cls, const gr__pgl_progress_t *p,
                          char *err, size_t err_size) {
    char f[16], n[4][24];
    snprintf(f, sizeof f, "%u", (unsigned)p->to_format);
    const uint64_t counts[4] = {p->upgraded, p->skipped, p->failed, p->remaining};
    for (int i = 0; i < 4; i++)
        snprintf(n[i], sizeof n[i], "%llu", (unsigned long long)counts[i]);
    const char *values[9] = {service, cls, f, p->has_cursor ? (const char *)p->cursor : NULL,
                             n[0],    n[1], n[2], n[3], p->finished ? "true" : "false"};
    /* An empty cursor key is a key (the empty one), not NULL. */
    const int lengths[9] = {0, 0, 0, (int)p->cursor_len, 0, 0, 0, 0, 0};
    const int formats[9] = {0, 0, 0, 1, 0, 0, 0, 0, 0};
    if (p->has_cursor && p->cursor_len == 0) values[3] = "";
    PGresult *res = PQexecParams(c, GR__SQL_PGL_PROGRESS_SAVE, 9, NULL, values, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) return gr__pgl_failed(res, c, err, err_size);
    PQclear(res);
    return 0;
}

typedef struct gr__pgl_prog_req {
    gr__pgl_progress_cb cb;
    void *ud;
} gr__pgl_prog_req_t;

static void gr__pgl_progress_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgl_prog_req_t *q = ud;
    (void)detail;
    if (status != 0) {
        q->cb(q->ud, status, NULL, NULL, 0);
        gr__free(q);
        return;
    }
    int n = PQntuples(res);
    gr__pgl_progress_t *rows = n ? gr__calloc((size_t)n, sizeof *rows) : NULL;
    const char **names = n ? gr__calloc((size_t)n, sizeof *names) : NULL;
    size_t m = 0;
    if (n && (!rows || !names)) {
        status = GR_ENOMEM;
    } else {
        for (int i = 0; i < n; i++) {
            if (gr__pgl_progress_cols(res, i, 1, &rows[m]) != 0) continue; /* not trusted: left out */
            names[m++] = PQgetvalue(res, i, 0);
        }
    }
    q->cb(q->ud, status, names, rows, m);
    gr__free(rows);
    gr__free(names);
    gr__free(q);
}

int gr__pgl_progress_read(gr__pgpool_t *pool, const char *service, gr__pgl_progress_cb cb, void *ud) {
    if (!pool || !service || !cb) return GR_EINVAL;
    gr__pgl_prog_req_t *q = gr__malloc(sizeof *q);
    if (!q) return GR_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    const char *values[1] = {service};
    int rc = gr__pgpool_query(pool, GR__SQL_PGL_PROGRESS_ALL, 1, values, NULL, NULL, 1, gr__pgl_progress_done, q);
    if (rc != 0) gr__free(q);
    return rc;
}
