/* src/storage/pg_transfer.c - activation claims handed from one silo to
 * another (live migration, docs/migration.md). A transfer moves a claim
 * only from the exact activation that holds it (source silo and token) to
 * the receiving silo's new activation, so a late or repeated transfer, or
 * one racing a release, a leave or a takeover from a dead holder, changes
 * nothing. Transfers queue and go out together as one statement, one at a
 * time (like releases: a drain hands over thousands of grains at once). */
#include <stdio.h>

#include "storage/pg_internal.h"

#define GR__TRANSFER_BATCH_MAX 1024

typedef struct gr__top {
    struct gr__top *next;
    gr__transfer_cb cb;
    void *ud;
    char *cls, *from;
    uint8_t *key;
    size_t key_len;
    int64_t from_token, token;
} gr__top_t;

struct gr__pgt {
    gr__pgpool_t *pool;
    const char *service; /* the provider's, borrowed */
    unsigned stmt;
    char *owner; /* the receiving silo: every transfer of one provider names the same */
    gr__top_t *head, *tail;
    size_t len;
    int in_flight, closing;
};

typedef struct gr__tbatch {
    gr__pgt_t *t;
    gr__top_t **ops;
    size_t n;
} gr__tbatch_t;

static void gr__top_free(gr__top_t *op) {
    gr__free(op->cls);
    gr__free(op->from);
    gr__free(op->key);
    gr__free(op);
}

/* $1 keys, $2 classes, $3 service, $4 the receiving silo, $5 its tokens,
 * $6 the source silos, $7 their tokens. READ COMMITTED re-checks the WHERE
 * on the row version it locks: a release or takeover that committed first
 * makes the transfer match nothing. */
static const char GR__SQL_TRANSFER[] =
    "UPDATE granary_activation a SET silo_id = $4, token = v.t, reread = false, claimed_at = now() "
    "FROM unnest($1::bytea[], $2::text[], $5::bigint[], $6::text[], $7::bigint[]) WITH ORDINALITY "
    "AS v(k, c, t, fs, ft, ord) "
    "WHERE a.grain_key = v.k AND a.grain_class = v.c AND a.service = $3 AND a.silo_id = v.fs "
    "AND a.token = v.ft RETURNING v.ord";

int gr__pgt_new(gr__pgpool_t *pool, const char *service, unsigned stmt, gr__pgt_t **out) {
    gr__pgt_t *t = gr__calloc(1, sizeof *t);
    if (!t) return GR_ENOMEM;
    t->pool = pool;
    t->service = service;
    t->stmt = stmt;
    *out = t;
    return 0;
}

static void gr__pgt_flush(gr__pgt_t *t);

static void gr__pgt_free(gr__pgt_t *t) {
    gr__free(t->owner);
    gr__free(t);
}

static void gr__tbatch_free(gr__tbatch_t *bt) {
    for (size_t i = 0; i < bt->n; i++)
        if (bt->ops[i]) gr__top_free(bt->ops[i]);
    gr__free(bt->ops);
    gr__free(bt);
}

static void gr__tbatch_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__tbatch_t *bt = ud;
    gr__pgt_t *t = bt->t;
    t->in_flight = 0;
    if (status == 0) {
        for (int r = 0; r < PQntuples(res); r++) {
            if (PQgetlength(res, r, 0) != 8) continue;
            uint64_t ord = gr__get_u64((const uint8_t *)PQgetvalue(res, r, 0));
            if (ord < 1 || ord > bt->n || !bt->ops[ord - 1]) continue;
            gr__top_t *op = bt->ops[ord - 1];
            bt->ops[ord - 1] = NULL;
            op->cb(op->ud, 0, NULL);
            gr__top_free(op);
        }
    }
    /* Not returned: the claim was not the source's (status 0), or the
     * outcome is unknown (the statement failed; it may have committed). */
    for (size_t i = 0; i < bt->n; i++)
        if (bt->ops[i])
            bt->ops[i]->cb(bt->ops[i]->ud, status == 0 ? GR_ENOTHERE : GR_ESTORAGE,
                           status == 0 ? "the claim is no longer the source activation's" : detail);
    gr__tbatch_free(bt);
    if (t->closing)
        gr__pgt_free(t);
    else
        gr__pgt_flush(t);
}

static void gr__pgt_flush(gr__pgt_t *t) {
    if (!t->head || t->in_flight) return;
    gr__tbatch_t *bt = gr__calloc(1, sizeof *bt);
    size_t cap = t->len < GR__TRANSFER_BATCH_MAX ? t->len : GR__TRANSFER_BATCH_MAX;
    if (bt) bt->ops = gr__calloc(cap, sizeof *bt->ops);
    if (!bt || !bt->ops) {
        /* Nothing was sent: every waiting transfer fails as never made (no
         * claim moved), rather than waiting for a next one that may not come. */
        if (bt) gr__free(bt);
        /* Detached first: a callback may queue a new transfer. */
        gr__top_t *op = t->head;
        t->head = t->tail = NULL;
        t->len = 0;
        while (op) {
            gr__top_t *next = op->next;
            op->cb(op->ud, GR_ECANCELED, "out of memory queueing the claim transfer");
            gr__top_free(op);
            op = next;
        }
        return;
    }
    bt->t = t;
    while (t->head && bt->n < cap) {
        gr__top_t *op = t->head;
        t->head = op->next;
        op->next = NULL;
        bt->ops[bt->n++] = op;
        t->len--;
    }
    if (!t->head) t->tail = NULL;
    gr__buf_t a[6]; /* keys, classes, tokens, sources, source tokens */
    for (int i = 0; i < 6; i++)
        gr__buf_init(&a[i]);
    int rc = gr__arr_begin(&a[0], GR__OID_BYTEA, bt->n) | gr__arr_begin(&a[1], GR__OID_TEXT, bt->n) |
             gr__arr_begin(&a[2], GR__OID_INT8, bt->n) | gr__arr_begin(&a[3], GR__OID_TEXT, bt->n) |
             gr__arr_begin(&a[4], GR__OID_INT8, bt->n);
    for (size_t i = 0; i < bt->n && rc == 0; i++) {
        gr__top_t *op = bt->ops[i];
        rc |= gr__arr_bytes(&a[0], op->key, op->key_len) | gr__arr_bytes(&a[1], op->cls, strlen(op->cls)) |
              gr__arr_i64(&a[2], op->token) | gr__arr_bytes(&a[3], op->from, strlen(op->from)) |
              gr__arr_i64(&a[4], op->from_token);
    }
    if (rc == 0) {
        const char *values[7] = {(const char *)a[0].data, (const char *)a[1].data, t->service, t->owner,
                                 (const char *)a[2].data, (const char *)a[3].data, (const char *)a[4].data};
        const int lengths[7] = {(int)a[0].len, (int)a[1].len, 0, 0, (int)a[2].len, (int)a[3].len, (int)a[4].len};
        const int formats[7] = {1, 1, 0, 0, 1, 1, 1};
        /* Set before: the pool may complete the statement inside the call
         * (a connection that fails at once), and the completion clears it. */
        t->in_flight = 1;
        rc = gr__pgpool_query_prepared(t->pool, t->stmt, GR__SQL_TRANSFER, 7, values, lengths, formats, 1,
                                       gr__tbatch_done, bt);
    }
    for (int i = 0; i < 6; i++)
        gr__buf_free(&a[i]);
    if (rc != 0) {
        /* Never sent: no claim moved. */
        t->in_flight = 0;
        for (size_t i = 0; i < bt->n; i++)
            bt->ops[i]->cb(bt->ops[i]->ud, GR_ECANCELED, "cannot queue the claim transfer");
        gr__tbatch_free(bt);
    }
}

int gr__pgt_queue(gr__pgt_t *t, const char *cls, const void *key, size_t key_len, const char *from,
                  int64_t from_token, const char *owner, int64_t token, gr__transfer_cb cb, void *ud) {
    if (t->owner && strcmp(t->owner, owner) != 0) return GR_EINVAL; /* one receiving silo per provider */
    if (!t->owner && !(t->owner = gr__strdup(owner))) return GR_ENOMEM;
    gr__top_t *op = gr__calloc(1, sizeof *op);
    if (!op) return GR_ENOMEM;
    op->cb = cb;
    op->ud = ud;
    op->cls = gr__strdup(cls);
    op->from = gr__strdup(from);
    op->key = gr__malloc(key_len + 1); /* + 1: a key may be empty */
    if (op->key && key_len) memcpy(op->key, key, key_len);
    op->key_len = key_len;
    op->from_token = from_token;
    op->token = token;
    if (!op->cls || !op->from || !op->key) {
        gr__top_free(op);
        return GR_ENOMEM;
    }
    if (t->tail)
        t->tail->next = op;
    else
        t->head = op;
    t->tail = op;
    t->len++;
    /* A result may arrive inside this call (a statement that cannot be
     * sent fails at once), after the op is queued: callers count on it. */
    gr__pgt_flush(t);
    return 0;
}

void gr__pgt_close(gr__pgt_t *t) {
    t->closing = 1;
    while (t->head) { /* never sent: no claim moved */
        gr__top_t *op = t->head;
        t->head = op->next;
        op->cb(op->ud, GR_ECANCELED, "storage closed");
        gr__top_free(op);
    }
    t->tail = NULL;
    if (!t->in_flight) gr__pgt_free(t); /* else when its statement completes (cancelled) */
}
