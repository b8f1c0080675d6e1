/* persistence/postgres.c - the PostgreSQL grain-state provider: the queries
 * of docs/storage.md run on a gr__pgpool. Keys and state travel as binary
 * parameters; results come back in binary. */
#include <inttypes.h>
#include <stdio.h>

#include "persistence/pgpool.h"
#include "persistence/provider.h"

typedef struct gr__pgs {
    gr_storage_t base;
    gr__pgpool_t *pool;
    char *service;
    void (*close_cb)(void *);
    void *close_ud;
} gr__pgs_t;

typedef enum { GR__PGS_READ, GR__PGS_WRITE, GR__PGS_CLEAR } gr__pgs_kind_t;

typedef struct gr__pgs_op {
    gr__pgs_kind_t kind;
    void *cb;
    void *ud;
} gr__pgs_op_t;

static const char GR__SQL_READ[] =
    "SELECT state, version FROM granary_grain_state "
    "WHERE grain_key = $1 AND grain_class = $2 AND service = $3";
static const char GR__SQL_INSERT[] =
    "INSERT INTO granary_grain_state (grain_key, grain_class, service, state, version, updated_at) "
    "VALUES ($1, $2, $3, $4, 1, now()) ON CONFLICT DO NOTHING RETURNING version";
static const char GR__SQL_UPDATE[] =
    "UPDATE granary_grain_state SET state = $4, version = version + 1, updated_at = now() "
    "WHERE grain_key = $1 AND grain_class = $2 AND service = $3 AND version = $5::bigint "
    "RETURNING version";
static const char GR__SQL_DELETE[] =
    "WITH d AS (DELETE FROM granary_grain_state "
    "WHERE grain_key = $1 AND grain_class = $2 AND service = $3 AND version = $4::bigint "
    "RETURNING 1) SELECT EXISTS (SELECT 1 FROM d)";
static const char GR__SQL_CHECK_ABSENT[] =
    "SELECT NOT EXISTS (SELECT 1 FROM granary_grain_state "
    "WHERE grain_key = $1 AND grain_class = $2 AND service = $3)";

static int64_t gr__be64_field(const PGresult *res, int row, int col) {
    if (PQgetlength(res, row, col) != 8) return -1;
    return (int64_t)gr__get_u64((const uint8_t *)PQgetvalue(res, row, col));
}

static void gr__pgs_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgs_op_t *op = ud;
    if (status != 0) {
        if (op->kind == GR__PGS_READ)
            ((gr_storage_read_cb)op->cb)(op->ud, status, NULL, 0, 0, detail);
        else
            ((gr_storage_write_cb)op->cb)(op->ud, status, 0, detail);
        gr__free(op);
        return;
    }
    int rows = PQntuples(res);
    if (op->kind == GR__PGS_READ) {
        gr_storage_read_cb cb = (gr_storage_read_cb)op->cb;
        int64_t v = rows ? gr__be64_field(res, 0, 1) : 0;
        if (rows == 0)
            cb(op->ud, 0, NULL, 0, 0, NULL);
        else if (v < 1)
            cb(op->ud, GR_ESTORAGE, NULL, 0, 0, "postgres: malformed version column");
        else
            cb(op->ud, 0, (const uint8_t *)PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0), v, NULL);
    } else if (op->kind == GR__PGS_WRITE) {
        gr_storage_write_cb cb = (gr_storage_write_cb)op->cb;
        if (rows == 0)
            cb(op->ud, GR_ECONFLICT, 0, "stored version differs from expected");
        else
            cb(op->ud, 0, gr__be64_field(res, 0, 0), NULL);
    } else {
        gr_storage_write_cb cb = (gr_storage_write_cb)op->cb;
        /* One boolean row: did the expected row go away (or was it absent). */
        int ok = rows == 1 && PQgetlength(res, 0, 0) == 1 && PQgetvalue(res, 0, 0)[0] == 1;
        if (ok)
            cb(op->ud, 0, 0, NULL);
        else
            cb(op->ud, GR_ECONFLICT, 0, "stored version differs from expected");
    }
    gr__free(op);
}

static int gr__pgs_run(gr__pgs_t *s, gr__pgs_kind_t kind, const char *sql, int n, const char *cls,
                       const void *key, size_t key_len, const void *data, size_t len, int64_t expected,
                       void *cb, void *ud) {
    gr__pgs_op_t *op = gr__malloc(sizeof *op);
    if (!op) return GR_ENOMEM;
    op->kind = kind;
    op->cb = cb;
    op->ud = ud;
    char ver[24];
    snprintf(ver, sizeof ver, "%" PRId64, expected);
    /* $1 key (binary), $2 class, $3 service, then $4 state (binary) or version. */
    const char *values[5] = {key_len ? (const char *)key : "", cls, s->service,
                             kind == GR__PGS_WRITE ? (data ? (const char *)data : "") : ver, ver};
    int lengths[5] = {(int)key_len, 0, 0, (int)len, 0};
    int formats[5] = {1, 0, 0, kind == GR__PGS_WRITE, 0};
    int rc = gr__pgpool_query(s->pool, sql, n, values, lengths, formats, 1, gr__pgs_done, op);
    if (rc != 0) gr__free(op);
    return rc;
}

static int gr__pgs_read(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                        gr_storage_read_cb cb, void *ud) {
    return gr__pgs_run((gr__pgs_t *)st, GR__PGS_READ, GR__SQL_READ, 3, cls, key, key_len, NULL, 0, 0,
                       (void *)cb, ud);
}

static int gr__pgs_write(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                         const void *data, size_t len, int64_t expected, gr_storage_write_cb cb,
                         void *ud) {
    return gr__pgs_run((gr__pgs_t *)st, GR__PGS_WRITE, expected == 0 ? GR__SQL_INSERT : GR__SQL_UPDATE,
                       expected == 0 ? 4 : 5, cls, key, key_len, data, len, expected, (void *)cb, ud);
}

static int gr__pgs_clear(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                         int64_t expected, gr_storage_write_cb cb, void *ud) {
    return gr__pgs_run((gr__pgs_t *)st, GR__PGS_CLEAR, expected == 0 ? GR__SQL_CHECK_ABSENT : GR__SQL_DELETE,
                       expected == 0 ? 3 : 4, cls, key, key_len, NULL, 0, expected, (void *)cb, ud);
}

static void gr__pgs_pool_closed(void *ud) {
    gr__pgs_t *s = ud;
    void (*cb)(void *) = s->close_cb;
    void *cud = s->close_ud;
    gr__free(s->service);
    gr__free(s);
    if (cb) cb(cud);
}

static void gr__pgs_close(gr_storage_t *st, void (*cb)(void *), void *ud) {
    gr__pgs_t *s = (gr__pgs_t *)st;
    s->close_cb = cb;
    s->close_ud = ud;
    gr__pgpool_close(s->pool, gr__pgs_pool_closed, s);
}

static const gr__storage_vtable_t gr__pgs_vt = {gr__pgs_read, gr__pgs_write, gr__pgs_clear, gr__pgs_close};

void gr_storage_pg_options_init(gr_storage_pg_options_t *o) {
    gr__pgpool_options_t p;
    gr__pgpool_options_init(&p);
    memset(o, 0, sizeof *o);
    o->service = "default";
    o->pool_size = p.pool_size;
    o->op_timeout_ms = p.op_timeout_ms;
    o->reconnect_min_ms = p.reconnect_min_ms;
    o->reconnect_max_ms = p.reconnect_max_ms;
}

int gr_storage_pg_new(uv_loop_t *loop, const gr_storage_pg_options_t *opts, gr_storage_t **out) {
    if (!opts || !opts->service || !opts->service[0] || !out) return GR_EINVAL;
    gr__pgs_t *s = gr__calloc(1, sizeof *s);
    if (!s) return GR_ENOMEM;
    s->service = gr__strdup(opts->service);
    gr__pgpool_options_t p = {opts->pool_size, opts->op_timeout_ms, opts->reconnect_min_ms,
                              opts->reconnect_max_ms};
    int rc = s->service ? gr__pgpool_new(loop, opts->conninfo, &p, &s->pool) : GR_ENOMEM;
    if (rc != 0) {
        gr__free(s->service);
        gr__free(s);
        return rc;
    }
    s->base.vt = &gr__pgs_vt;
    s->base.loop = loop;
    *out = &s->base;
    return 0;
}
