/* src/storage/memory.c - the in-memory provider: same version semantics as
 * PostgreSQL, for unit tests and a database-free dev mode. Completions are
 * deferred to an idle handle so no callback runs inside the call. */
#include <assert.h>

#include "storage/provider.h"
#include "storage/replies.h"

typedef struct gr__mem_row {
    UT_hash_handle hh;
    uint8_t *state;
    size_t len;
    int64_t version;
    uint32_t format;
    size_t id_len;
    uint8_t id[]; /* class '\0' key: the table key */
} gr__mem_row_t;

/* A grain's reply log, kept apart from its row as granary_reply is (a
 * clear leaves it): entries as in storage/replies.h, each after its
 * u64 expiry. */
typedef struct gr__mem_replies {
    UT_hash_handle hh;
    gr__buf_t entries;
    size_t id_len;
    uint8_t id[];
} gr__mem_replies_t;

typedef enum { GR__MEM_READ, GR__MEM_WRITE, GR__MEM_CLEAR } gr__mem_kind_t;

typedef struct gr__mem_op {
    struct gr__mem_op *next;
    gr__mem_kind_t kind;
    void *cb;
    void *ud;
    uint8_t *data;
    size_t len;
    int64_t expected;
    uint32_t format;
    uint8_t *adds, *dels; /* a write with reply-log changes */
    size_t adds_len, dels_len;
    uint32_t retention_ms;
    size_t id_len;
    uint8_t id[];
} gr__mem_op_t;

typedef struct gr__mem {
    gr_storage_t base;
    uv_idle_t idle;
    gr__mem_row_t *rows;
    gr__mem_replies_t *replies;
    gr__mem_op_t *head, *tail;
    void (*close_cb)(void *);
    void *close_ud;
} gr__mem_t;

static void gr__mem_run(uv_idle_t *h);

static int gr__mem_push(gr__mem_t *m, gr__mem_kind_t kind, const char *cls, const void *key, size_t key_len,
                        const void *data, size_t len, uint32_t format, int64_t expected, void *cb, void *ud) {
    size_t cl = strlen(cls) + 1;
    gr__mem_op_t *op = gr__malloc(sizeof *op + cl + key_len);
    if (!op) return GR_ENOMEM;
    op->next = NULL;
    op->kind = kind;
    op->cb = cb;
    op->ud = ud;
    op->data = NULL;
    op->len = len;
    op->expected = expected;
    op->format = format;
    op->adds = op->dels = NULL;
    op->adds_len = op->dels_len = 0;
    op->retention_ms = 0;
    if (len) {
        op->data = gr__memdup(data, len);
        if (!op->data) {
            gr__free(op);
            return GR_ENOMEM;
        }
    }
    memcpy(op->id, cls, cl);
    if (key_len) memcpy(op->id + cl, key, key_len);
    op->id_len = cl + key_len;
    if (m->tail)
        m->tail->next = op;
    else
        m->head = op;
    m->tail = op;
    uv_idle_start(&m->idle, gr__mem_run);
    return 0;
}

/* A read: the row's state, then the grain's live log entries (replies.h). */
static void gr__mem_answer_read(gr__mem_t *m, gr__mem_op_t *op, const gr__mem_row_t *row) {
    gr_storage_read_cb cb = (gr_storage_read_cb)op->cb;
    gr__mem_replies_t *rp = NULL;
    HASH_FIND(hh, m->replies, op->id, op->id_len, rp);
    gr__buf_t out;
    gr__buf_init(&out);
    size_t n = 0;
    uint64_t now = gr__wall_ms();
    int oom = 0;
    for (size_t off = 0; rp && off < rp->entries.len && !oom;) {
        uint64_t expires = gr__get_u64(rp->entries.data + off);
        size_t k = gr__replies_entry_size(rp->entries.data + off + 8, rp->entries.len - off - 8);
        if (expires > now) {
            if (!n && row && row->len && gr__buf_append(&out, row->state, row->len) != 0) oom = 1;
            if (!oom && gr__buf_append(&out, rp->entries.data + off + 8, k) != 0) oom = 1;
            n += k;
        }
        off += 8 + k;
    }
    if (n || oom) {
        /* Never a read without replies it has: the activation would run
         * those calls again. */
        uint8_t t[GR__REPLIES_TRAILER];
        gr__put_u32(t, (uint32_t)n);
        gr__put_u32(t + 4, GR__REPLIES_MAGIC);
        if (oom || gr__buf_append(&out, t, sizeof t) != 0) {
            gr__buf_free(&out);
            cb(op->ud, GR_ESTORAGE, NULL, 0, 0, 0, "out of memory");
            return;
        }
        cb(op->ud, 0, out.data, out.len, row ? row->version : 0, (row ? row->format : 0) | GR__REPLIES_FLAG,
           NULL);
    } else if (row) {
        cb(op->ud, 0, row->state, row->len, row->version, row->format, NULL);
    } else {
        cb(op->ud, 0, NULL, 0, 0, 0, NULL);
    }
    gr__buf_free(&out);
}

/* After a committed write: drop `dels` and expired entries, add `adds`. */
static int gr__mem_apply_replies(gr__mem_t *m, gr__mem_op_t *op) {
    gr__mem_replies_t *rp = NULL;
    HASH_FIND(hh, m->replies, op->id, op->id_len, rp);
    if (!rp) {
        if (!op->adds_len) return 0;
        rp = gr__calloc(1, sizeof *rp + op->id_len);
        if (!rp) return GR_ENOMEM;
        memcpy(rp->id, op->id, op->id_len);
        rp->id_len = op->id_len;
        HASH_ADD(hh, m->replies, id[0], rp->id_len, rp);
        if (gr__hash_oom()) {
            gr__free(rp);
            return GR_ENOMEM;
        }
    }
    gr__buf_t keep;
    gr__buf_init(&keep);
    uint64_t now = gr__wall_ms();
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < rp->entries.len;) {
        const uint8_t *e = rp->entries.data + off + 8;
        size_t k = gr__replies_entry_size(e, rp->entries.len - off - 8);
        int drop = gr__get_u64(rp->entries.data + off) <= now;
        for (size_t d = 0; !drop && d < op->dels_len; d += 1u + op->dels[d])
            drop = op->dels[d] == e[0] && !memcmp(op->dels + d + 1, e + 1, e[0]);
        /* An added key replaces its old entry (PostgreSQL upserts it). */
        for (size_t a = 0; !drop && a < op->adds_len;
             a += gr__replies_entry_size(op->adds + a, op->adds_len - a))
            drop = op->adds[a] == e[0] && !memcmp(op->adds + a + 1, e + 1, e[0]);
        if (!drop) rc = gr__buf_append(&keep, rp->entries.data + off, 8 + k);
        off += 8 + k;
    }
    for (size_t off = 0; rc == 0 && off < op->adds_len;) {
        const uint8_t *e = op->adds + off;
        size_t k = gr__replies_entry_size(e, op->adds_len - off);
        uint8_t exp[8];
        gr__put_u64(exp, gr__get_u64(e + 1 + e[0]) + op->retention_ms);
        rc = gr__buf_append(&keep, exp, 8);
        if (rc == 0) rc = gr__buf_append(&keep, e, k);
        off += k;
    }
    if (rc != 0) {
        gr__buf_free(&keep);
        return rc;
    }
    gr__buf_free(&rp->entries);
    rp->entries = keep;
    return 0;
}

static void gr__mem_exec(gr__mem_t *m, gr__mem_op_t *op) {
    gr__mem_row_t *row = NULL;
    HASH_FIND(hh, m->rows, op->id, op->id_len, row);
    if (op->kind == GR__MEM_READ) {
        gr__mem_answer_read(m, op, row);
        return;
    }
    gr_storage_write_cb cb = (gr_storage_write_cb)op->cb;
    int64_t current = row ? row->version : 0;
    if (current != op->expected) {
        cb(op->ud, GR_ECONFLICT, current, "stored version differs from expected");
        return;
    }
    if (op->kind == GR__MEM_CLEAR) {
        if (row) {
            HASH_DEL(m->rows, row);
            gr__free(row->state);
            gr__free(row);
        }
        cb(op->ud, 0, 0, NULL);
        return;
    }
    if (!row) {
        row = gr__calloc(1, sizeof *row + op->id_len);
        if (!row) {
            cb(op->ud, GR_ESTORAGE, 0, "out of memory");
            return;
        }
        memcpy(row->id, op->id, op->id_len);
        row->id_len = op->id_len;
        HASH_ADD(hh, m->rows, id[0], row->id_len, row);
        if (gr__hash_oom()) {
            gr__free(row);
            cb(op->ud, GR_ESTORAGE, 0, "out of memory");
            return;
        }
    }
    /* The log's changes first: they are the part that can fail, and the
     * write must then leave everything as it was. */
    if ((op->adds_len || op->dels_len) && gr__mem_apply_replies(m, op) != 0) {
        cb(op->ud, GR_ESTORAGE, 0, "out of memory");
        return;
    }
    gr__free(row->state);
    row->state = op->data; /* ownership moves to the row */
    row->len = op->len;
    row->format = op->format;
    op->data = NULL;
    row->version++;
    cb(op->ud, 0, row->version, NULL);
}

static void gr__mem_run(uv_idle_t *h) {
    gr__mem_t *m = GR__CONTAINER_OF(h, gr__mem_t, idle);
    /* Detach the batch first: callbacks may queue more work for the next round. */
    gr__mem_op_t *op = m->head;
    m->head = m->tail = NULL;
    while (op) {
        gr__mem_op_t *next = op->next;
        gr__mem_exec(m, op);
        gr__free(op->data);
        gr__free(op->adds);
        gr__free(op->dels);
        gr__free(op);
        op = next;
    }
    if (!m->head) uv_idle_stop(&m->idle);
}

static int gr__mem_read(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                        gr_storage_read_cb cb, void *ud) {
    return gr__mem_push((gr__mem_t *)st, GR__MEM_READ, cls, key, key_len, NULL, 0, 0, 0, (void *)cb, ud);
}

static int gr__mem_write(gr_storage_t *st, const char *cls, const void *key, size_t key_len, const void *data,
                         size_t len, uint32_t format, int64_t expected, gr_storage_write_cb cb, void *ud) {
    return gr__mem_push((gr__mem_t *)st, GR__MEM_WRITE, cls, key, key_len, data, len, format, expected,
                        (void *)cb, ud);
}

static int gr__mem_write_replies(gr_storage_t *st, const char *cls, const void *key, size_t key_len,
                                 const void *data, size_t len, uint32_t format, int64_t expected,
                                 const uint8_t *adds, size_t adds_len, const uint8_t *dels, size_t dels_len,
                                 uint32_t retention_ms, gr_storage_write_cb cb, void *ud) {
    gr__mem_t *m = (gr__mem_t *)st;
    uint8_t *a = adds_len ? gr__memdup(adds, adds_len) : NULL;
    uint8_t *d = dels_len ? gr__memdup(dels, dels_len) : NULL;
    if ((adds_len && !a) || (dels_len && !d)) {
        gr__free(a);
        gr__free(d);
        return GR_ENOMEM;
    }
    int rc = gr__mem_push(m, GR__MEM_WRITE, cls, key, key_len, data, len, format, expected, (void *)cb, ud);
    if (rc != 0) {
        gr__free(a);
        gr__free(d);
        return rc;
    }
    m->tail->adds = a;
    m->tail->adds_len = adds_len;
    m->tail->dels = d;
    m->tail->dels_len = dels_len;
    m->tail->retention_ms = retention_ms;
    return 0;
}

static int gr__mem_clear(gr_storage_t *st, const char *cls, const void *key, size_t key_len, int64_t expected,
                         gr_storage_write_cb cb, void *ud) {
    return gr__mem_push((gr__mem_t *)st, GR__MEM_CLEAR, cls, key, key_len, NULL, 0, 0, expected, (void *)cb,
                        ud);
}

static void gr__mem_closed(uv_handle_t *h) {
    gr__mem_t *m = GR__CONTAINER_OF((uv_idle_t *)h, gr__mem_t, idle);
    gr__mem_row_t *row, *tmp;
    HASH_ITER(hh, m->rows, row, tmp) {
        HASH_DEL(m->rows, row);
        gr__free(row->state);
        gr__free(row);
    }
    gr__mem_replies_t *rp, *rtmp;
    HASH_ITER(hh, m->replies, rp, rtmp) {
        HASH_DEL(m->replies, rp);
        gr__buf_free(&rp->entries);
        gr__free(rp);
    }
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    gr__free(m);
    if (cb) cb(ud);
}

static void gr__mem_close(gr_storage_t *st, void (*cb)(void *), void *ud) {
    gr__mem_t *m = (gr__mem_t *)st;
    gr__mem_op_t *op = m->head;
    m->head = m->tail = NULL;
    while (op) {
        gr__mem_op_t *next = op->next;
        if (op->kind == GR__MEM_READ)
            ((gr_storage_read_cb)op->cb)(op->ud, GR_ECANCELED, NULL, 0, 0, 0, "storage closed");
        else
            ((gr_storage_write_cb)op->cb)(op->ud, GR_ECANCELED, 0, "storage closed");
        gr__free(op->data);
        gr__free(op->adds);
        gr__free(op->dels);
        gr__free(op);
        op = next;
    }
    m->close_cb = cb;
    m->close_ud = ud;
    uv_close((uv_handle_t *)&m->idle, gr__mem_closed);
}

/* One process: every claim is granted. */
static const gr__storage_vtable_t gr__mem_vt = {
    gr__mem_read, gr__mem_write, gr__mem_clear, gr__mem_close, NULL, NULL, gr__mem_write_replies, NULL};

int gr_storage_memory_new(uv_loop_t *loop, gr_storage_t **out) {
    if (!loop || !out) return GR_EINVAL;
    gr__mem_t *m = gr__calloc(1, sizeof *m);
    if (!m) return GR_ENOMEM;
    m->base.vt = &gr__mem_vt;
    m->base.loop = loop;
    uv_idle_init(loop, &m->idle);
    *out = &m->base;
    return 0;
}
