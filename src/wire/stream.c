/* src/wire/stream.c - reading, writing and flushing for every framed
 * connection (wire/stream.h). */
#include "wire/stream.h"

void gr__stream_alloc(gr__tls_t *tls, gr__buf_t *raw, gr__buf_t *in, size_t chunk, uv_buf_t *out) {
    gr__buf_t *into = tls ? raw : in;
    if (gr__buf_reserve(into, chunk) != 0) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init((char *)into->data + into->len, (unsigned)(into->cap - into->len));
}

int gr__stream_received(gr__tls_t *tls, gr__buf_t *raw, gr__buf_t *in, size_t n) {
    if (!tls) {
        in->len += n;
        return 0;
    }
    raw->len += n;
    int rc = gr__tls_feed(tls, raw->data, raw->len, in);
    raw->len = 0;
    return rc;
}

typedef struct gr__swrite {
    uv_write_t req;
    uint8_t *data;
    gr__stream_written_cb cb;
    void *ud;
} gr__swrite_t;

static void gr__stream_write_done(uv_write_t *req, int status) {
    gr__swrite_t *w = (gr__swrite_t *)req;
    gr__stream_written_cb cb = w->cb;
    void *ud = w->ud;
    gr__free(w->data);
    gr__free(w);
    if (cb) cb(ud, status);
}

int gr__stream_write(uv_stream_t *tcp, gr__tls_t *tls, gr__buf_t *plain, gr__stream_written_cb cb, void *ud) {
    gr__buf_t batch = *plain;
    if (tls) {
        /* The plaintext becomes records; its buffer is kept for the next batch. */
        if (plain->len && gr__tls_write(tls, plain->data, plain->len) != 0) return GR_ECONN;
        plain->len = 0;
        gr__buf_init(&batch);
        if (gr__tls_take(tls, &batch) != 0) {
            gr__buf_free(&batch);
            return GR_ENOMEM;
        }
    } else {
        gr__buf_init(plain); /* the write owns the batch; the owner starts a new one */
    }
    if (batch.len == 0) {
        gr__buf_free(&batch);
        return 0;
    }
    gr__swrite_t *w = gr__malloc(sizeof *w);
    if (!w) {
        gr__buf_free(&batch);
        return GR_ENOMEM;
    }
    w->data = batch.data;
    w->cb = cb;
    w->ud = ud;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)batch.len);
    if (uv_write(&w->req, tcp, &b, 1, gr__stream_write_done) != 0) {
        gr__free(w->data);
        gr__free(w);
        return GR_ECONN;
    }
    return 1;
}

static void gr__flusher_cb(uv_prepare_t *h) {
    gr__flusher_t *f = h->data;
    /* The batch being flushed stays reachable (f->running) so that a
     * callback may unlink any of its nodes (a connection it closes) or mark
     * one again (a no-op until its turn: it is still queued). */
    f->running = f->head;
    f->head = NULL;
    uv_prepare_stop(&f->prepare);
    gr__flush_node_t *n;
    while ((n = f->running) != NULL) {
        f->running = n->next;
        n->queued = 0;
        n->next = NULL;
        f->flush(n, f->ud);
    }
}

void gr__flusher_init(uv_loop_t *loop, gr__flusher_t *f, gr__flush_fn flush, void *ud) {
    uv_prepare_init(loop, &f->prepare);
    f->prepare.data = f;
    f->head = f->running = NULL;
    f->flush = flush;
    f->ud = ud;
}

void gr__flusher_mark(gr__flusher_t *f, gr__flush_node_t *n) {
    if (n->queued) return;
    n->queued = 1;
    n->next = f->head;
    f->head = n;
    uv_prepare_start(&f->prepare, gr__flusher_cb);
}

static int gr__flush_list_remove(gr__flush_node_t **pp, gr__flush_node_t *n) {
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (!*pp) return 0;
    *pp = n->next;
    return 1;
}

void gr__flusher_unlink(gr__flusher_t *f, gr__flush_node_t *n) {
    if (!n->queued) return;
    if (!gr__flush_list_remove(&f->head, n)) gr__flush_list_remove(&f->running, n);
    n->queued = 0;
    n->next = NULL;
}

void gr__flusher_close(gr__flusher_t *f, uv_close_cb cb) { uv_close((uv_handle_t *)&f->prepare, cb); }
