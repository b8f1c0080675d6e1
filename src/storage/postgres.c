/* src/storage/postgres.c - the PostgreSQL grain-state provider: the queries
 * of docs/storage.md run on a gr__pgpool. Keys and state travel as binary
 * parameters (the batches' arrays in PostgreSQL's binary array format, the
 * batch statements prepared); results come back in binary.
 *
 * Writes are group-committed: writes that queue while earlier batches are in
 * flight go out together as ONE statement (unnest of arrays, an UPDATE and an
 * INSERT ... ON CONFLICT in one CTE, or only the UPDATE when every write
 * updates a stored row), so N grains' writes cost one round trip and one
 * commit, and each caller still hears only after that commit.
 * Reads (activations) are batched the same way: one SELECT over an unnest
 * of keys loads many grains in one round trip. */
#include <inttypes.h>
#include <stdio.h>

#include "storage/pg_internal.h"

typedef struct gr__pgs {
    gr_storage_t base;
    gr__pgpool_t *pool;
    char *service;
    gr__wop_t *wq_head, *wq_tail; /* writes waiting for the next batch */
    gr__wop_t *busy;              /* by id: writes in a batch in flight (one per grain) */
    size_t wq_len;
    unsigned batches_in_flight, max_batches;
    struct gr__rop *rq_head, *rq_tail; /* reads waiting for the next read batch */
    size_t rq_len;
    unsigned reads_in_flight, max_read_batches;
    struct gr__rop *relq_head, *relq_tail; /* claim releases waiting for the next release batch */
    size_t relq_len;
    int release_in_flight;  /* one release statement at a time: they are rare and need no hurry */
    gr__pgt_t *transfers;   /* claim transfers (pg_transfer.c) */
    uint64_t last_sweep_ms; /* of expired reply rows (pg_replies.c) */
    int sweep_in_flight;
    void (*close_cb)(void *);
    void *close_ud;
} gr__pgs_t;

/* The provider's prepared statements (numbers of gr__pgpool_query_prepared). */
enum {
    GR__STMT_WRITE = 1,
    GR__STMT_WRITE_REPLIES,
    GR__STMT_READ,
    GR__STMT_CLAIM,
    GR__STMT_RELEASE,
    GR__STMT_UPDATE,
    GR__STMT_TRANSFER /* pg_transfer.c */
};

static void gr__wop_free(gr__wop_t *w) {
    gr__free(w->id);
    gr__free(w->data);
    gr__free(w->adds);
    gr__free(w->dels);
    gr__free(w);
}

static gr__wop_t *gr__wop_new(const char *cls, const void *key, size_t key_len, const void *data, size_t len,
                              uint32_t format, int64_t expected, gr_storage_write_cb cb, void *ud) {
    gr__wop_t *w = gr__calloc(1, sizeof *w);
    if (!w) return NULL;
    size_t cl = strlen(cls);
    w->cb = cb;
    w->ud = ud;
    w->id_len = cl + 1 + key_len;
    w->id = gr__malloc(w->id_len);
    w->data = gr__memdup(data, len);
    if (!w->id || !w->data) {
        gr__wop_free(w);
        return NULL;
    }
    memcpy(w->id, cls, cl + 1);
    if (key_len) memcpy(w->id + cl + 1, key, key_len);
    w->cls = (const char *)w->id;
    w->key = w->id + cl + 1;
    w->key_len = key_len;
    w->len = len;
    w->format = format;
    w->expected = expected;
    return w;
}

/* A clear waiting for its result (clears are rare: one statement each). */
typedef struct gr__pgs_op {
    gr_storage_write_cb cb;
    void *ud;
} gr__pgs_op_t;

static const char GR__SQL_DELETE[] =
    "WITH d AS (DELETE FROM granary_grain_state "
    "WHERE grain_key = $1 AND grain_class = $2 AND service = $3 AND version = $4::bigint "
    "RETURNING 1) SELECT EXISTS (SELECT 1 FROM d)";
static const char GR__SQL_CHECK_ABSENT[] = "SELECT NOT EXISTS (SELECT 1 FROM granary_grain_state "
                                           "WHERE grain_key = $1 AND grain_class = $2 AND service = $3)";

static void gr__pgs_clear_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgs_op_t *op = ud;
    if (status != 0) {
        op->cb(op->ud, status, 0, detail);
    } else {
        /* One boolean row: did the expected row go away (or was it absent). */
        int ok = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 1 && PQgetvalue(res, 0, 0)[0] == 1;
        if (ok)
            op->cb(op->ud, 0, 0, NULL);
        else
            op->cb(op->ud, GR_ECONFLICT, 0, "stored version differs from expected");
    }
    gr__free(op);
}

static int gr__pgs_clear(gr_storage_t *st, const char *cls, const void *key, size_t key_len, int64_t expected,
                         gr_storage_write_cb cb, void *ud) {
    gr__pgs_t *s = (gr__pgs_t *)st;
    gr__pgs_op_t *op = gr__malloc(sizeof *op);
    if (!op) return GR_ENOMEM;
    op->cb = cb;
    op->ud = ud;
    char ver[24];
    snprintf(ver, sizeof ver, "%" PRId64, expected);
    /* $1 key (binary), $2 class, $3 service, $4 expected version. */
    const char *values[4] = {key_len ? (const char *)key : "", cls, s->service, ver};
    int lengths[4] = {(int)key_len, 0, 0, 0};
    int formats[4] = {1, 0, 0, 0};
    int rc = gr__pgpool_query(s->pool, expected == 0 ? GR__SQL_CHECK_ABSENT : GR__SQL_DELETE,
                              expected == 0 ? 3 : 4, values, lengths, formats, 1, gr__pgs_clear_done, op);
    if (rc != 0) gr__free(op);
    return rc;
}

typedef struct gr__rop {
    struct gr__rop *next;
    gr_storage_read_cb cb; /* NULL for a release */
    void *ud;
    char *cls;
    uint8_t *key;
    size_t key_len;
    char *owner; /* a claim or a release: the claiming silo; NULL for a plain read */
    int64_t token;
} gr__rop_t;

static void gr__rop_free(gr__rop_t *r) {
    gr__free(r->cls);
    gr__free(r->key);
    gr__free(r->owner);
    gr__free(r);
}

static gr__rop_t *gr__rop_new(const char *cls, const void *key, size_t key_len, const char *owner,
                              int64_t token, gr_storage_read_cb cb, void *ud) {
    gr__rop_t *r = gr__calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cb = cb;
    r->ud = ud;
    r->cls = gr__strdup(cls);
    r->key = gr__memdup(key, key_len);
    r->key_len = key_len;
    r->owner = owner ? gr__strdup(owner) : NULL;
    r->token = token;
    if (!r->cls || !r->key || (owner && !r->owner)) {
        gr__rop_free(r);
        return NULL;
    }
    return r;
}

static void gr__rop_push(gr__rop_t **head, gr__rop_t **tail, size_t *len, gr__rop_t *r) {
    if (*tail)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
    (*len)++;
}

static void gr__read_flush(gr__pgs_t *s);
static void gr__release_flush(gr__pgs_t *s);

/* Reads and claims share the read queue; a claim rides in the read batches
 * (a batch is all plain reads, or all claims of one owner), so an
 * activation still costs one round trip. owner NULL: a plain read. */
static int gr__pgs_queue_read(gr__pgs_t *s, const char *cls, const void *key, size_t key_len,
                              const char *owner, int64_t token, gr_storage_read_cb cb, void *ud) {
    gr__rop_t *r = gr__rop_new(cls, key, key_len, owner, token, cb, ud);
    if (!r) return GR_ENOMEM;
    gr__rop_push(&s->rq_head, &s->rq_tail, &s->rq_len, r);
    gr__read_flush(s); /* results arrive through the pool: never inside this call */
    return 0;
}

static int gr__pgs_read(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                        gr_storage_read_cb cb, void *ud) {
    return gr__pgs_queue_read((gr__pgs_t *)st, cls, key, key_len, NULL, 0, cb, ud);
}

static int gr__pgs_claim(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                         const char *owner, int64_t token, gr_storage_read_cb cb, void *ud) {
    return gr__pgs_queue_read((gr__pgs_t *)st, cls, key, key_len, owner, token, cb, ud);
}

static int gr__pgs_release(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                           const char *owner, int64_t token) {
    gr__pgs_t *s = (gr__pgs_t *)st;
    gr__rop_t *r = gr__rop_new(cls, key, key_len, owner, token, NULL, NULL);
    if (!r) return GR_ENOMEM;
    gr__rop_push(&s->relq_head, &s->relq_tail, &s->relq_len, r);
    gr__release_flush(s);
    return 0;
}

static int gr__pgs_transfer(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                            const char *from, int64_t from_token, const char *owner, int64_t token,
                            gr__transfer_cb cb, void *ud) {
    return gr__pgt_queue(((gr__pgs_t *)st)->transfers, cls, key, key_len, from, from_token, owner, token, cb,
                         ud);
}

static void gr__batch_flush(gr__pgs_t *s);

/* Queue a write for the next batch. */
static void gr__pgs_enqueue(gr__pgs_t *s, gr__wop_t *w) {
    if (s->wq_tail)
        s->wq_tail->next = w;
    else
        s->wq_head = w;
    s->wq_tail = w;
    s->wq_len++;
    gr__batch_flush(s); /* results arrive through the pool: never inside this call */
}

static int gr__pgs_write(gr_storage_t *st, const char *cls, const void *key, size_t key_len, const void *data,
                         size_t len, uint32_t format, int64_t expected, gr_storage_write_cb cb, void *ud) {
    gr__pgs_t *s = (gr__pgs_t *)st;
    gr__wop_t *w = gr__wop_new(cls, key, key_len, data, len, format, expected, cb, ud);
    if (!w) return GR_ENOMEM;
    gr__pgs_enqueue(s, w);
    return 0;
}

static int gr__pgs_write_replies(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                                 const void *data, size_t len, uint32_t format, int64_t expected,
                                 const uint8_t *adds, size_t adds_len, const uint8_t *dels, size_t dels_len,
                                 uint32_t retention_ms, gr_storage_write_cb cb, void *ud) {
    gr__pgs_t *s = (gr__pgs_t *)st;
    gr__wop_t *w = gr__wop_new(cls, key, key_len, data, len, format, expected, cb, ud);
    if (!w) return GR_ENOMEM;
    w->adds = adds_len ? gr__memdup(adds, adds_len) : NULL;
    w->dels = dels_len ? gr__memdup(dels, dels_len) : NULL;
    if ((adds_len && !w->adds) || (dels_len && !w->dels)) {
        gr__wop_free(w);
        return GR_ENOMEM;
    }
    w->adds_len = adds_len;
    w->dels_len = dels_len;
    w->retention_ms = retention_ms;
    gr__pgs_enqueue(s, w);
    return 0;
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
    while (s->rq_head) { /* never sent */
        gr__rop_t *r = s->rq_head;
        s->rq_head = r->next;
        r->cb(r->ud, GR_ECANCELED, NULL, 0, 0, 0, "storage closed");
        gr__rop_free(r);
    }
    s->rq_tail = NULL;
    s->rq_len = 0;
    while (s->relq_head) { /* never sent: those claims stay with their owner */
        gr__rop_t *r = s->relq_head;
        s->relq_head = r->next;
        gr__rop_free(r);
    }
    s->relq_tail = NULL;
    s->relq_len = 0;
    while (s->wq_head) { /* never sent */
        gr__wop_t *w = s->wq_head;
        s->wq_head = w->next;
        w->cb(w->ud, GR_ECANCELED, 0, "storage closed");
        gr__wop_free(w);
    }
    s->wq_tail = NULL;
    s->wq_len = 0;
    gr__pgt_close(s->transfers);
    gr__pgpool_close(s->pool, gr__pgs_pool_closed, s);
}

static const gr__storage_vtable_t gr__pgs_vt = {gr__pgs_read,         gr__pgs_write, gr__pgs_clear,
                                                gr__pgs_close,        gr__pgs_claim, gr__pgs_release,
                                                gr__pgs_write_replies, gr__pgs_transfer};

void gr_storage_pg_options_init(gr_storage_pg_options_t *o) {
    gr__pgpool_options_t p;
    gr__pgpool_options_init(&p);
    memset(o, 0, sizeof *o);
    o->service = "default";
    o->pool_size = p.pool_size;
    o->op_timeout_ms = p.op_timeout_ms;
    o->reconnect_min_ms = p.reconnect_min_ms;
    o->reconnect_max_ms = p.reconnect_max_ms;
    o->query_timeout_ms = p.query_timeout_ms;
}

int gr_storage_pg_new(uv_loop_t *loop, const gr_storage_pg_options_t *opts, gr_storage_t **out) {
    if (!opts || !opts->service || !opts->service[0] || !out) return GR_EINVAL;
    gr__pgs_t *s = gr__calloc(1, sizeof *s);
    if (!s) return GR_ENOMEM;
    s->service = gr__strdup(opts->service);
    /* Custom plans: see GR__SQL_CONN_SETUP in pgpool.c. */
    gr__pgpool_options_t p = {opts->pool_size,        opts->op_timeout_ms,    opts->reconnect_min_ms,
                              opts->reconnect_max_ms, opts->query_timeout_ms, 1};
    int rc = s->service ? gr__pgpool_new(loop, opts->conninfo, &p, &s->pool) : GR_ENOMEM;
    if (rc == 0 && (rc = gr__pgt_new(s->pool, s->service, GR__STMT_TRANSFER, &s->transfers)) != 0)
        gr__pgpool_close(s->pool, NULL, NULL);
    if (rc != 0) {
        gr__free(s->service);
        gr__free(s);
        return rc;
    }
    s->base.vt = &gr__pgs_vt;
    s->base.loop = loop;
    /* Half the pool writes, the rest stays free for activations' reads. */
    s->max_batches = opts->pool_size > 1 ? opts->pool_size / 2 : 1;
    s->max_read_batches = opts->pool_size > s->max_batches ? opts->pool_size - s->max_batches : 1;
    *out = &s->base;
    return 0;
}

/* ---- group commit ---- */

#define GR__BATCH_MAX 256
/* And at most this much state (a batch always takes one write): a
 * parameter's length is an int, and 256 states at GR_STATE_MAX would pass
 * 2 GiB. */
#define GR__BATCH_MAX_BYTES (64u << 20)


typedef struct gr__batch {
    gr__pgs_t *s;
    gr__wop_t **ops;
    size_t n;
} gr__batch_t;

/* One statement for the whole batch. $1..$4 and $6 are parallel arrays
 * (key, class, state, expected version, state format), $5 the service. Rows
 * that moved on are simply absent from the result: a conflict, not an error
 * that would abort the others. */
static const char GR__SQL_BATCH_WRITE[] = GR__SQL_BATCH_WRITE_CTES
    " "
    "SELECT ord, version FROM upd "
    "UNION ALL SELECT v.ord, ins.version FROM ins JOIN v ON v.k = ins.grain_key AND v.c = ins.grain_class";

/* The batch when every write updates a stored row (the steady state: no
 * new grain, no reply-log change): the same parameters, one UPDATE. It is
 * planned in a fraction of the time of the full statement (no CTEs, no
 * INSERT, no join of the inserted rows back), and every batch is planned. */
static const char GR__SQL_BATCH_UPDATE[] =
    GR__SQL_BATCH_UPDATE_SET "FROM " GR__SQL_BATCH_ROWS " WHERE " GR__SQL_BATCH_UPDATE_MATCH;

static void gr__batch_fail(gr__batch_t *bt, int status, const char *detail) {
    for (size_t i = 0; i < bt->n; i++) {
        HASH_DEL(bt->s->busy, bt->ops[i]);
        bt->ops[i]->cb(bt->ops[i]->ud, status, 0, detail);
        gr__wop_free(bt->ops[i]);
    }
}

static void gr__batch_flush(gr__pgs_t *s);

static void gr__sweep_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__pgs_t *s = ud;
    s->sweep_in_flight = 0;
    if (status != 0) GR__LOG_WARN("sweeping expired replies failed: %s", detail);
}

/* Expired reply rows go in bounded statements, at most one per
 * GR__PGR_SWEEP_MS, sent by providers that write replies. */
static void gr__replies_maybe_sweep(gr__pgs_t *s) {
    uint64_t now = uv_now(s->base.loop);
    if (s->sweep_in_flight || now - s->last_sweep_ms < GR__PGR_SWEEP_MS) return;
    s->last_sweep_ms = now;
    if (gr__pgpool_query(s->pool, gr__sql_replies_sweep, 0, NULL, NULL, NULL, 1, gr__sweep_done, s) == 0)
        s->sweep_in_flight = 1;
}

static void gr__batch_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__batch_t *bt = ud;
    gr__pgs_t *s = bt->s;
    s->batches_in_flight--;
    if (status != 0) {
        GR__LOG_WARN("write batch of %zu failed: %s", bt->n, detail);
        gr__batch_fail(bt, status, detail);
    } else {
        int64_t *ver = gr__calloc(bt->n, sizeof *ver);
        if (!ver) {
            gr__batch_fail(bt, GR_ESTORAGE, "out of memory reading the batch result");
        } else {
            for (int r = 0; r < PQntuples(res); r++) {
                int64_t ord = gr__pg_i64(res, r, 0);
                if (ord >= 1 && (size_t)ord <= bt->n) ver[ord - 1] = gr__pg_i64(res, r, 1);
            }
            for (size_t i = 0; i < bt->n; i++) {
                gr__wop_t *w = bt->ops[i];
                HASH_DEL(s->busy, w);
                if (ver[i] > 0)
                    w->cb(w->ud, 0, ver[i], NULL);
                else
                    w->cb(w->ud, GR_ECONFLICT, 0, "stored version differs from expected");
                gr__wop_free(w);
            }
            gr__free(ver);
        }
    }
    gr__free(bt->ops);
    gr__free(bt);
    if (!s->base.closing) gr__batch_flush(s);
}

/* Send what has queued, if a batch slot is free. A grain has at most one
 * write in flight (`busy`): a later write of it waits for the batch that
 * carries the earlier one, so writes of one grain commit in the order they
 * were made, even with several batches in flight on several connections,
 * and each batch's result maps back unambiguously. */
static void gr__batch_flush(gr__pgs_t *s) {
    while (s->wq_head && s->batches_in_flight < s->max_batches) {
        gr__batch_t *bt = gr__calloc(1, sizeof *bt);
        size_t cap = s->wq_len < GR__BATCH_MAX ? s->wq_len : GR__BATCH_MAX;
        if (bt) bt->ops = gr__calloc(cap, sizeof *bt->ops);
        if (!bt || !bt->ops) {
            gr__free(bt);
            return; /* retried when the next write queues or a batch ends */
        }
        bt->s = s;
        gr__wop_t **pp = &s->wq_head, *last_kept = NULL;
        size_t bytes = 0;
        while (*pp && bt->n < cap && !(bt->n && bytes + (*pp)->len > GR__BATCH_MAX_BYTES)) {
            gr__wop_t *w = *pp, *held = NULL;
            HASH_FIND(hh, s->busy, w->id, w->id_len, held);
            if (!held) {
                HASH_ADD_KEYPTR(hh, s->busy, w->id, w->id_len, w);
                if (gr__hash_oom()) held = w; /* not in the table: it waits, like a repeat */
            }
            if (held) {
                last_kept = w;
                pp = &w->next;
                continue;
            }
            *pp = w->next;
            w->next = NULL;
            bytes += w->len;
            bt->ops[bt->n++] = w;
            s->wq_len--;
        }
        /* Stopped at the cap: the unvisited rest still ends at the old tail.
         * Visited everything: what stays is the writes that must wait.
         * (Resetting the tail to the last repeat when the batch filled up
         * lost every write behind the cap: issue 12, item 1.) */
        if (!*pp) s->wq_tail = last_kept;
        if (bt->n == 0) { /* every queued write waits for one in flight */
            gr__free(bt->ops);
            gr__free(bt);
            return;
        }
        /* Which statement, and the arrays' sizes (each reserved at once: grown
         * by doubling, a batch of large states left a trail of freed blocks). */
        int with_replies = 0, all_updates = 1;
        size_t key_bytes = 20, class_bytes = 20, state_bytes = 20 + 4 * bt->n + bytes;
        for (size_t i = 0; i < bt->n; i++) {
            gr__wop_t *w = bt->ops[i];
            with_replies |= w->adds_len || w->dels_len;
            all_updates &= w->expected > 0;
            key_bytes += 4 + w->key_len;
            class_bytes += 4 + (w->id_len - w->key_len - 1); /* id is class '\0' key */
        }
        gr__buf_t keys, classes, states, vers, fmts, rp[GR__PGR_NPARAMS];
        if (with_replies && gr__pgr_params(bt->ops, bt->n, rp) != 0) {
            for (int i = 0; i < GR__PGR_NPARAMS; i++)
                gr__buf_free(&rp[i]);
            gr__batch_fail(bt, GR_ESTORAGE, "out of memory building the write batch");
            gr__free(bt->ops);
            gr__free(bt);
            return;
        }
        gr__buf_init(&keys);
        gr__buf_init(&classes);
        gr__buf_init(&states);
        gr__buf_init(&vers);
        gr__buf_init(&fmts);
        int rc = gr__buf_reserve(&keys, key_bytes) | gr__buf_reserve(&classes, class_bytes) |
                 gr__buf_reserve(&states, state_bytes) | gr__buf_reserve(&vers, 20 + 12 * bt->n) |
                 gr__buf_reserve(&fmts, 20 + 8 * bt->n);
        rc |= gr__arr_begin(&keys, GR__OID_BYTEA, bt->n) | gr__arr_begin(&classes, GR__OID_TEXT, bt->n) |
              gr__arr_begin(&states, GR__OID_BYTEA, bt->n) | gr__arr_begin(&vers, GR__OID_INT8, bt->n) |
              gr__arr_begin(&fmts, GR__OID_INT4, bt->n);
        for (size_t i = 0; i < bt->n && rc == 0; i++) {
            gr__wop_t *w = bt->ops[i];
            rc |= gr__arr_bytes(&keys, w->key, w->key_len) |
                  gr__arr_bytes(&classes, w->cls, w->id_len - w->key_len - 1) |
                  gr__arr_bytes(&states, w->data, w->len) | gr__arr_i64(&vers, w->expected) |
                  gr__arr_i32(&fmts, (int32_t)w->format);
        }
        if (rc == 0) {
            const char *values[6 + GR__PGR_NPARAMS] = {(const char *)keys.data,
                                                       (const char *)classes.data,
                                                       (const char *)states.data,
                                                       (const char *)vers.data,
                                                       s->service,
                                                       (const char *)fmts.data};
            int lengths[6 + GR__PGR_NPARAMS] = {
                (int)keys.len, (int)classes.len, (int)states.len, (int)vers.len, 0, (int)fmts.len};
            int formats[6 + GR__PGR_NPARAMS] = {1, 1, 1, 1, 0, 1}; /* the reply-log arrays are text */
            for (int i = 0; with_replies && i < GR__PGR_NPARAMS; i++)
                values[6 + i] = (const char *)rp[i].data;
            unsigned stmt = with_replies  ? GR__STMT_WRITE_REPLIES
                            : all_updates ? GR__STMT_UPDATE
                                          : GR__STMT_WRITE;
            const char *sql = with_replies  ? gr__sql_batch_write_replies
                              : all_updates ? GR__SQL_BATCH_UPDATE
                                            : GR__SQL_BATCH_WRITE;
            rc = gr__pgpool_query_prepared(s->pool, stmt, sql, with_replies ? 6 + GR__PGR_NPARAMS : 6, values,
                                           lengths, formats, 1, gr__batch_done, bt);
            if (rc == 0 && with_replies) gr__replies_maybe_sweep(s);
        }
        for (int i = 0; with_replies && i < GR__PGR_NPARAMS; i++)
            gr__buf_free(&rp[i]);
        gr__buf_free(&keys);
        gr__buf_free(&classes);
        gr__buf_free(&states);
        gr__buf_free(&vers);
        gr__buf_free(&fmts);
        if (rc != 0) {
            gr__batch_fail(bt, GR_ESTORAGE, "cannot queue the write batch");
            gr__free(bt->ops);
            gr__free(bt);
            return;
        }
        s->batches_in_flight++;
    }
}

/* ---- batched reads and claims ---- */

static const char GR__SQL_BATCH_READ[] =
    "SELECT v.ord, s.state, s.version, s.state_format, " GR__SQL_REPLIES_COLUMN " "
    "FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS v(k, c, ord) "
    "LEFT JOIN granary_grain_state s ON s.grain_key = v.k AND s.grain_class = v.c AND s.service = $3";

/* Claim and read in one statement (docs/directory.md, "Single activation").
 * $1 keys, $2 classes, $5 tokens (parallel arrays), $3 service (= cluster),
 * $4 owner. The claim is taken when the row is absent, released (''), ours
 * already, or held by a silo whose membership row is dead and silent for its
 * own lease by this database's clock. Only positive evidence frees a claim:
 * the subquery reads the statement's snapshot, in which a silo that joined
 * since is missing, and a missing row must not count as dead (the rows it
 * does see cannot mislead: dead is final and a dead row's heartbeat_at never
 * changes). ON CONFLICT locks the row, so claimants serialise and one wins.
 * A grain twice in one batch is claimed once (DISTINCT ON: ON CONFLICT may
 * not touch a row twice). Columns: ord, state, version, format, granted,
 * holder (looked up for refused claims only; their state is not read), reread (the claim took a
 * released row: the state read here may predate the last holder's writes,
 * so the caller reads it again in a new statement). */
static const char GR__SQL_BATCH_CLAIM[] =
    "WITH v AS (SELECT * FROM unnest($1::bytea[], $2::text[], $5::bigint[]) WITH ORDINALITY AS v(k, c, t, "
    "ord)), "
    "     u AS (SELECT DISTINCT ON (k, c) k, c, t FROM v ORDER BY k, c, ord DESC), "
    "     cl AS (INSERT INTO granary_activation AS a (grain_key, grain_class, service, silo_id, token) "
    "            SELECT k, c, $3, $4, t FROM u "
    "            ON CONFLICT (grain_key, grain_class, service) DO UPDATE "
    "            SET silo_id = excluded.silo_id, token = excluded.token, reread = (a.silo_id = ''), "
    "                claimed_at = now() "
    "            WHERE a.silo_id = '' OR a.silo_id = excluded.silo_id OR EXISTS (SELECT 1 FROM granary_silo "
    "m "
    "                  WHERE m.cluster = $3 AND m.silo_id = a.silo_id AND m.status = 'dead' "
    "                  AND m.heartbeat_at <= now() - m.lease_ms * interval '1 millisecond') "
    "            RETURNING grain_key, grain_class, reread) "
    "SELECT v.ord, s.state, s.version, s.state_format, cl.grain_key IS NOT NULL, "
    "       CASE WHEN cl.grain_key IS NULL THEN (SELECT h.silo_id FROM granary_activation h "
    "        WHERE h.grain_key = v.k AND h.grain_class = v.c AND h.service = $3) END, "
    "       coalesce(cl.reread, false), " GR__SQL_REPLIES_COLUMN " "
    "FROM v LEFT JOIN cl ON cl.grain_key = v.k AND cl.grain_class = v.c "
    "LEFT JOIN granary_grain_state s ON cl.grain_key IS NOT NULL AND s.grain_key = v.k AND s.grain_class = v.c "
    "AND s.service = $3";

/* Only the activation that holds the claim (owner and token) gives it up;
 * the row stays, released (see GR__SQL_BATCH_CLAIM). */
static const char GR__SQL_BATCH_RELEASE[] =
    "UPDATE granary_activation a SET silo_id = '', token = 0 "
    "FROM unnest($1::bytea[], $2::text[], $5::bigint[]) AS v(k, c, t) "
    "WHERE a.grain_key = v.k AND a.grain_class = v.c AND a.service = $3 AND a.silo_id = $4 AND a.token = v.t";

typedef struct gr__rbatch {
    gr__pgs_t *s;
    gr__rop_t **ops;
    size_t n;
    int claim;
} gr__rbatch_t;

static void gr__rbatch_free(gr__rbatch_t *bt) {
    for (size_t i = 0; i < bt->n; i++)
        if (bt->ops[i]) gr__rop_free(bt->ops[i]); /* NULL: moved on to a read */
    gr__free(bt->ops);
    gr__free(bt);
}

static int gr__bool_field(const PGresult *res, int r, int c) {
    return PQgetlength(res, r, c) == 1 && PQgetvalue(res, r, c)[0] == 1;
}

/* One row's answer: the state, or (a claim held elsewhere) GR_ENOTHERE
 * with the holder. A claim that took a released row reads the state again
 * (returns 1: op stays queued, as a plain read, and is answered by it). */
static int gr__rbatch_answer(gr__rbatch_t *bt, PGresult *res, int r, gr__rop_t *op) {
    if (bt->claim && gr__bool_field(res, r, 4) && gr__bool_field(res, r, 6)) return 1;
    if (bt->claim && !gr__bool_field(res, r, 4)) {
        char holder[128] = ""; /* silo ids are at most 100 bytes (silo.c) */
        if (!PQgetisnull(res, r, 5) && PQgetlength(res, r, 5) < (int)sizeof holder)
            memcpy(holder, PQgetvalue(res, r, 5), (size_t)PQgetlength(res, r, 5));
        op->cb(op->ud, GR_ENOTHERE, NULL, 0, 0, 0, holder);
        return 0;
    }
    int lc = bt->claim ? 7 : 4; /* the reply entries' column */
    const uint8_t *log = PQgetisnull(res, r, lc) ? NULL : (const uint8_t *)PQgetvalue(res, r, lc);
    size_t log_len = log ? (size_t)PQgetlength(res, r, lc) : 0;
    if (PQgetisnull(res, r, 2)) {
        gr__pgr_answer(op->cb, op->ud, NULL, 0, 0, 0, log, log_len);
        return 0;
    }
    int64_t v = gr__pg_i64(res, r, 2);
    if (v < 1 || PQgetlength(res, r, 3) != 4)
        op->cb(op->ud, GR_ESTORAGE, NULL, 0, 0, 0, "postgres: malformed version or format column");
    else
        gr__pgr_answer(op->cb, op->ud, (const uint8_t *)PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1),
                       v, gr__get_u32((const uint8_t *)PQgetvalue(res, r, 3)), log, log_len);
    return 0;
}

static void gr__rbatch_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__rbatch_t *bt = ud;
    gr__pgs_t *s = bt->s;
    s->reads_in_flight--;
    if (status == 0) {
        /* One row per requested grain (LEFT JOIN): NULL version = no row yet. */
        int answered = 0;
        for (int r = 0; r < PQntuples(res); r++) {
            int64_t ord = gr__pg_i64(res, r, 0);
            if (ord < 1 || (size_t)ord > bt->n || !bt->ops[ord - 1] || !bt->ops[ord - 1]->cb) continue;
            gr__rop_t *op = bt->ops[ord - 1];
            if (gr__rbatch_answer(bt, res, r, op)) {
                /* Claimed; its state is read again by a plain read queued
                 * now, so its statement starts after this claim committed. */
                bt->ops[ord - 1] = NULL;
                gr__free(op->owner);
                op->owner = NULL;
                gr__rop_push(&s->rq_head, &s->rq_tail, &s->rq_len, op);
            } else {
                op->cb = NULL; /* answered */
            }
            answered++;
        }
        if ((size_t)answered != bt->n) {
            status = GR_ESTORAGE;
            detail = "postgres: the read batch did not answer every grain";
        }
    }
    for (size_t i = 0; i < bt->n; i++)
        if (bt->ops[i] && bt->ops[i]->cb)
            bt->ops[i]->cb(bt->ops[i]->ud, status ? status : GR_ESTORAGE, NULL, 0, 0, 0, detail);
    gr__rbatch_free(bt);
    if (!s->base.closing) gr__read_flush(s);
}

/* Parallel array parameters of a read, claim or release batch, in binary:
 * keys, classes and tokens. */
static int gr__rbatch_params(gr__rop_t **ops, size_t n, gr__buf_t *keys, gr__buf_t *classes,
                             gr__buf_t *tokens) {
    int rc = gr__arr_begin(keys, GR__OID_BYTEA, n) | gr__arr_begin(classes, GR__OID_TEXT, n) |
             gr__arr_begin(tokens, GR__OID_INT8, n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc |= gr__arr_bytes(keys, ops[i]->key, ops[i]->key_len) |
              gr__arr_bytes(classes, ops[i]->cls, strlen(ops[i]->cls)) | gr__arr_i64(tokens, ops[i]->token);
    return rc;
}

/* Send one batch statement: $1 keys, $2 classes, $3 the service, and for
 * claims and releases $4 the owner and $5 tokens (nparams 3 or 5). */
static int gr__rbatch_send(gr__rbatch_t *bt, unsigned stmt, const char *sql, int nparams,
                           gr__pg_result_cb cb) {
    gr__buf_t keys, classes, tokens;
    gr__buf_init(&keys);
    gr__buf_init(&classes);
    gr__buf_init(&tokens);
    int rc = gr__rbatch_params(bt->ops, bt->n, &keys, &classes, &tokens);
    if (rc == 0) {
        const char *values[5] = {(const char *)keys.data, (const char *)classes.data, bt->s->service,
                                 nparams > 3 ? bt->ops[0]->owner : NULL, (const char *)tokens.data};
        const int lengths[5] = {(int)keys.len, (int)classes.len, 0, 0, (int)tokens.len};
        const int formats[5] = {1, 1, 0, 0, 1};
        rc = gr__pgpool_query_prepared(bt->s->pool, stmt, sql, nparams, values, lengths, formats, 1, cb, bt);
    }
    gr__buf_free(&keys);
    gr__buf_free(&classes);
    gr__buf_free(&tokens);
    return rc;
}

/* Take up to `cap` ops from the front of a queue that are of the same kind
 * as the first (plain reads, or claims / releases of one owner). */
static size_t gr__rq_take(gr__rop_t **head, gr__rop_t **tail, size_t *len, gr__rop_t **out, size_t cap) {
    size_t n = 0;
    const char *owner = (*head)->owner;
    while (*head && n < cap &&
           ((!owner && !(*head)->owner) || (owner && (*head)->owner && !strcmp(owner, (*head)->owner)))) {
        gr__rop_t *r = *head;
        *head = r->next;
        r->next = NULL;
        out[n++] = r;
        (*len)--;
    }
    if (!*head) *tail = NULL;
    return n;
}

static void gr__read_flush(gr__pgs_t *s) {
    while (s->rq_head && s->reads_in_flight < s->max_read_batches) {
        gr__rbatch_t *bt = gr__calloc(1, sizeof *bt);
        size_t cap = s->rq_len < GR__BATCH_MAX ? s->rq_len : GR__BATCH_MAX;
        if (bt) bt->ops = gr__calloc(cap, sizeof *bt->ops);
        if (!bt || !bt->ops) {
            gr__free(bt);
            return; /* retried when the next read queues or a batch ends */
        }
        bt->s = s;
        bt->claim = s->rq_head->owner != NULL;
        bt->n = gr__rq_take(&s->rq_head, &s->rq_tail, &s->rq_len, bt->ops, cap);
        int rc = gr__rbatch_send(bt, bt->claim ? GR__STMT_CLAIM : GR__STMT_READ,
                                 bt->claim ? GR__SQL_BATCH_CLAIM : GR__SQL_BATCH_READ, bt->claim ? 5 : 3,
                                 gr__rbatch_done);
        if (rc != 0) {
            for (size_t i = 0; i < bt->n; i++)
                bt->ops[i]->cb(bt->ops[i]->ud, GR_ESTORAGE, NULL, 0, 0, 0, "cannot queue the read batch");
            gr__rbatch_free(bt);
            return;
        }
        s->reads_in_flight++;
    }
}

/* ---- batched claim releases ---- */

#define GR__RELEASE_BATCH_MAX 1024

static void gr__release_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__rbatch_t *bt = ud;
    gr__pgs_t *s = bt->s;
    (void)res;
    s->release_in_flight = 0;
    /* A release that failed leaves the claims with their owner, which can
     * activate those grains again; others are sent to it. */
    if (status != 0 && status != GR_ECANCELED)
        GR__LOG_WARN("releasing %zu activation claims failed: %s", bt->n, detail);
    gr__rbatch_free(bt);
    if (!s->base.closing) gr__release_flush(s);
}

static void gr__release_flush(gr__pgs_t *s) {
    if (!s->relq_head || s->release_in_flight) return;
    gr__rbatch_t *bt = gr__calloc(1, sizeof *bt);
    size_t cap = s->relq_len < GR__RELEASE_BATCH_MAX ? s->relq_len : GR__RELEASE_BATCH_MAX;
    if (bt) bt->ops = gr__calloc(cap, sizeof *bt->ops);
    if (!bt || !bt->ops) {
        gr__free(bt);
        return; /* retried with the next release */
    }
    bt->s = s;
    bt->n = gr__rq_take(&s->relq_head, &s->relq_tail, &s->relq_len, bt->ops, cap);
    int rc = gr__rbatch_send(bt, GR__STMT_RELEASE, GR__SQL_BATCH_RELEASE, 5, gr__release_done);
    if (rc != 0) {
        GR__LOG_WARN("cannot queue a release of %zu activation claims", bt->n);
        gr__rbatch_free(bt);
        return;
    }
    s->release_in_flight = 1;
}
