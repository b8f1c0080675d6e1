/* persistence/memory.c - the in-memory provider: same version semantics as
 * PostgreSQL, for unit tests and a database-free dev mode. Completions are
 * deferred to an idle handle so no callback runs inside the call. */
#include <assert.h>

#include "persistence/provider.h"

typedef struct gr__mem_row {
    UT_hash_handle hh;
    uint8_t *state;
    size_t len;
    int64_t version;
    uint32_t format;
    size_t id_len;
    uint8_t id[]; /* class '\0' key: the table key */
} gr__mem_row_t;

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
    size_t id_len;
    uint8_t id[];
} gr__mem_op_t;

typedef struct gr__mem {
    gr_storage_t base;
    uv_idle_t idle;
    gr__mem_row_t *rows;
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

static void gr__mem_exec(gr__mem_t *m, gr__mem_op_t *op) {
    gr__mem_row_t *row = NULL;
    HASH_FIND(hh, m->rows, op->id, op->id_len, row);
    if (op->kind == GR__MEM_READ) {
        gr_storage_read_cb cb = (gr_storage_read_cb)op->cb;
        if (row)
            cb(op->ud, 0, row->state, row->len, row->version, row->format, NULL);
        else
            cb(op->ud, 0, NULL, 0, 0, 0, NULL);
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
        gr__free(op);
        op = next;
    }
    m->close_cb = cb;
    m->close_ud = ud;
    uv_close((uv_handle_t *)&m->idle, gr__mem_closed);
}

static const gr__storage_vtable_t gr__mem_vt = {gr__mem_read, gr__mem_write, gr__mem_clear, gr__mem_close,
                                                NULL,         NULL}; /* one process: every claim is granted */

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
