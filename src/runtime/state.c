/* src/runtime/state.c - grain state and persist-before-reply: the write
 * queue of one activation (one write in flight, later requests coalesced),
 * the gr_state_* API and grain accessors. */
#include "runtime/runtime_internal.h"

static void gr__write_start(gr_grain_t *g);

/* ---- state writes ---- */

static void gr__waiters_complete(gr_grain_t *g, gr__write_waiter_t *w, int status, const char *detail) {
    gr_runtime_t *rt = GR__G_RT(g);
    while (w) {
        gr__write_waiter_t *n = w->next;
        if (w->msg) {
            gr_msg_t *m = w->msg;
            gr__turn_end(g, m); /* before completing: that frees m */
            /* Committed: its reply is stored, so it is final whatever happens
             * to this delivery (a retry must get it, never run again). */
            if (status == 0 && m->idem_entry) m->idem_entry->state = GR__IDEM_DONE;
            if (status == 0 && !gr__may_answer(g)) /* committed, but we cannot vouch it is still current */
                gr__msg_fail(rt, m, GR_ENOTHERE, GR__NO_LEASE);
            else if (status == 0)
                gr__msg_complete(rt, m, m->reply_status, m->reply, m->reply_len);
            else
                gr__msg_fail(rt, m, status, detail);
        } else if (w->cb) {
            w->cb(g, status, w->ud);
        }
        gr__free(w);
        w = n;
    }
}

static void gr__grain_unref(gr_grain_t *g) {
    g->refs--;
    gr__grain_release(g);
}

static void gr__write_cb(void *ud, int status, int64_t new_version, const char *detail) {
    gr_grain_t *g = ud;
    gr_runtime_t *rt = GR__G_RT(g);
    /* The write's reference is held until the end: completing waiters can
     * finish the grain, and the struct must survive until we return. */
    g->writing = 0;
    gr__hist_observe(&rt->write_latency, gr__since_us32_ns(g->io_t0));
    gr__write_waiter_t *now = g->waiters_now;
    g->waiters_now = NULL;
    if (g->status == GR__G_DEAD) { /* runtime closed: nobody is listening */
        gr__waiters_complete(g, now, GR_ECANCELED, "runtime closed");
        gr__grain_unref(g);
        return;
    }
    if (status == 0) {
        g->version = new_version;
        gr__waiters_complete(g, now, 0, NULL);
        if (g->status != GR__G_DEAD) {
            if (g->waiters_next) gr__write_start(g);
            gr__grain_schedule(g);
        }
        gr__grain_unref(g);
        return;
    }
    /* A conflict means another activation owns this grain now; any other
     * failure leaves the stored state unknown. Either way the in-memory state
     * may differ from storage, so drop this activation without writing and
     * let a fresh one reload: no reply may claim a write that did not commit. */
    char msg[512];
    if (status == GR_ECONFLICT) {
        rt->stats.storage_conflicts++;
        snprintf(msg, sizeof msg, "state write conflict: another activation wrote version %lld first",
                 (long long)(g->version + 1));
    } else {
        rt->stats.storage_errors++;
        snprintf(msg, sizeof msg, "state write failed: %s", detail ? detail : gr_strerror(status));
        status = status == GR_ECANCELED ? GR_ESHUTDOWN : GR_ESTORAGE;
    }
    gr__log(GR_LOG_LEVEL_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s; deactivating", msg);
    gr__write_waiter_t *next = g->waiters_next;
    g->waiters_next = NULL;
    gr__waiters_complete(g, now, status, msg);
    gr__waiters_complete(g, next, status, msg);
    if (g->status != GR__G_DEAD) {
        g->dirty = 0;
        if (g->status == GR__G_DEACTIVATING) {
            gr__grain_finish(g);
        } else if (!gr__grain_busy(g)) {
            gr__grain_deactivate(g, 0);
        } else {
            /* A turn is still in progress (an explicit write from a handler):
             * deactivate without saving once it ends. */
            g->deactivate_requested = 2;
        }
    }
    gr__grain_unref(g);
}

static void gr__write_start(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    g->waiters_now = g->waiters_next;
    g->waiters_next = NULL;
    if (!g->dirty) { /* nothing changed since the last commit */
        gr__write_waiter_t *w = g->waiters_now;
        g->waiters_now = NULL;
        gr__waiters_complete(g, w, 0, NULL);
        return;
    }
    g->writing = 1;
    g->dirty = 0; /* a change made while the write is in flight sets it again */
    g->refs++;
    g->io_t0 = gr__us32();
    rt->stats.storage_writes++;
    int rc;
    gr__idem_log_t *ilog = g->ext && (g->ext->idem.n || g->ext->idem.dels.len) ? &g->ext->idem : NULL;
    if (ilog)
        gr__idem_prune(ilog, gr__idem_now_ms(), gr__idem_keys(GR__G_CLS(g)),
                       gr__idem_retention(GR__G_CLS(g)));
    /* A keyed call cleared the state: its reply must be stored with that
     * change, so the row is written empty instead of deleted. */
    if (g->clearing && ilog && gr__idem_pending(ilog)) g->clearing = 0;
    if (g->clearing) {
        /* Delete the row, version-checked like a write; the version after
         * it is 0, so a later write inserts a fresh row. */
        g->clearing = 0;
        rc = gr_storage_clear(rt->storage, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, g->version,
                              gr__write_cb, g);
    } else {
        const gr_class_t *cls = GR__G_CLS(g);
        if (ilog && gr__idem_pending(ilog)) {
            /* The replies this write answers for, and the keys it evicts, go
             * in the same statement as the state: a reply is stored if and
             * only if its state is. Both buffers are ours before the call:
             * a provider may complete it at once, and the completion may end
             * the activation (and free its log). */
            gr__buf_t adds, dels = ilog->dels;
            gr__buf_init(&adds);
            gr__buf_init(&ilog->dels);
            rc = gr__idem_encode_new(ilog, &adds);
            if (rc == 0)
                rc = gr__storage_write_replies(rt->storage, cls->name, GR__G_KEY(g), g->key_len, g->state,
                                               g->state_len, cls->state_version, g->version, adds.data,
                                               adds.len, dels.data, dels.len, gr__idem_retention(cls),
                                               gr__write_cb, g);
            gr__buf_free(&adds);
            gr__buf_free(&dels);
        } else {
            rc = gr_storage_write(rt->storage, cls->name, GR__G_KEY(g), g->key_len, g->state, g->state_len,
                                  cls->state_version, g->version, gr__write_cb, g);
        }
    }
    if (rc != 0) {
        g->dirty = 1;
        gr__write_cb(g, rc == GR_ESHUTDOWN ? GR_ECANCELED : GR_ESTORAGE, 0, gr_strerror(rc));
    }
}

/* Queue a write; the waiter completes when a write that includes the
 * current state has committed. */
int gr__write_request(gr_grain_t *g, gr_write_cb cb, void *ud, gr_msg_t *msg) {
    gr__write_waiter_t *w = gr__calloc(1, sizeof *w);
    if (!w) return GR_ENOMEM;
    w->cb = cb;
    w->ud = ud;
    w->msg = msg;
    w->next = g->waiters_next;
    g->waiters_next = w;
    if (!g->writing) gr__write_start(g);
    return 0;
}

/* ---- grain accessors ---- */

const gr_class_t *gr_grain_class(const gr_grain_t *g) { return GR__G_CLS(g); }
const uint8_t *gr_grain_key(const gr_grain_t *g, size_t *len) {
    if (len) *len = g->key_len;
    return GR__G_KEY(g);
}
const char *gr_grain_silo(const gr_grain_t *g) { return GR__G_RT(g)->silo_id; }
gr_runtime_t *gr_grain_runtime(const gr_grain_t *g) { return GR__G_RT(g); }
void *gr_grain_data(const gr_grain_t *g) { return g->ext ? g->ext->data : NULL; }

int gr_grain_set_data(gr_grain_t *g, void *data, gr_free_fn free_fn) {
    if (!g) return GR_EINVAL;
    if (!g->ext && !data && !free_fn) return 0;
    gr__grain_ext_t *x = gr__grain_ext(g);
    if (!x) return GR_ENOMEM;
    if (x->data_free && x->data != data) x->data_free(x->data);
    x->data = data;
    x->data_free = free_fn;
    return 0;
}

void gr_grain_deactivate_on_idle(gr_grain_t *g) {
    if (!g->deactivate_requested) g->deactivate_requested = 1;
    gr__grain_schedule(g);
}

void gr_state_get(const gr_grain_t *g, const uint8_t **data, size_t *len) {
    *data = g->state;
    *len = g->state_len;
}

int64_t gr_state_version(const gr_grain_t *g) { return g->version; }
int gr_state_dirty(const gr_grain_t *g) { return g->dirty; }

int gr_state_set(gr_grain_t *g, const void *data, size_t len) {
    if (!g) return GR_EINVAL;
    if (GR__G_WORKER(g)) return GR_ESTATE; /* stateless */
    if (len > GR_STATE_MAX) return GR_ETOOBIG;
    if (len && !data) return GR_EINVAL;
    uint8_t *copy = NULL;
    if (len) {
        copy = gr__memdup(data, len);
        if (!copy) return GR_ENOMEM;
    }
    gr__free(g->state);
    g->state = copy;
    g->state_len = (uint32_t)len;
    g->dirty = 1;
    g->clearing = 0; /* writing the new state replaces the row instead */
    return 0;
}

int gr_state_clear(gr_grain_t *g) {
    if (!g) return GR_EINVAL;
    if (GR__G_WORKER(g)) return GR_ESTATE;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    gr__free(g->state);
    g->state = NULL;
    g->state_len = 0;
    /* Nothing stored and nothing pending: there is no row to delete. */
    if (g->version == 0 && !g->writing) {
        g->dirty = 0;
        return 0;
    }
    g->clearing = 1;
    g->dirty = 1;
    return 0;
}

int gr_state_write(gr_grain_t *g, gr_write_cb cb, void *ud) {
    if (!g) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    return gr__write_request(g, cb, ud, NULL);
}

int gr__runtime_upgrade(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *key, size_t key_len,
                        const uint8_t *old, size_t len, uint32_t format, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    gr__class_entry_t *ce = NULL;
    if (cls) HASH_FIND_STR(rt->classes, cls->name, ce);
    if (!ce || ce->cls != cls || !cls->upgrade_state || (cls->flags & GR_CLASS_STATELESS_WORKER) ||
        key_len > GR_KEY_MAX || len > GR_STATE_MAX)
        return GR_EINVAL;
    size_t class_len = strlen(cls->name);
    uint8_t id[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    memcpy(id, cls->name, class_len);
    id[class_len] = 0;
    if (key_len) memcpy(id + class_len + 1, key, key_len);
    gr_grain_t *g = NULL;
    int rc = gr__grain_alloc(rt, cls, id, class_len + 1 + key_len, class_len, &g);
    if (rc != 0) return rc;
    /* As at an activation: the old bytes are the state when the upgrade
     * runs, and it sets the new ones. */
    g->status = GR__G_ACTIVE;
    g->version = 1;
    if (len && !(g->state = gr__memdup(old, len))) rc = GR_ENOMEM;
    g->state_len = (uint32_t)len;
    if (rc == 0 && cls->upgrade_state(g, old, len, format) != 0) rc = GR_EACTIVATE;
    if (rc == 0) {
        *out = g->state;
        *out_len = g->state_len;
        g->state = NULL;
    }
    gr__free(g->state);
    if (g->ext) {
        if (g->ext->data_free) g->ext->data_free(g->ext->data);
        gr__idem_drop(rt, g);
        gr__free(g->ext);
    }
    g->status = GR__G_LOADING;
    gr__grain_unalloc(g);
    return rc;
}
