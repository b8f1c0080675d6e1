/* src/runtime/runtime.c - the runtime handle: options, class registration,
 * drain and close, and the hooks through which the cluster layer routes
 * calls (runtime/runtime.h).
 *
 * Everything runs on one libuv loop. Work that would run user code (a turn,
 * a call's completion) is never done inside the API call that caused it: it
 * goes on a run list drained by an idle handle (the "pump", turns.c), so
 * handlers never nest and nothing is freed under a caller's feet. The other
 * files of this folder: calls.c (pending calls, messages, call chains,
 * submitting and replying), activations.c (the activation table, loading,
 * idle deactivation), turns.c (mailboxes and turns), state.c (state and
 * persist-before-reply), timers.c (timers and the reminder facade),
 * metrics.c (Prometheus text). Their shared types: runtime_internal.h.
 */
#include "runtime/runtime_internal.h"

/* ---- the runtime handle ---- */

void gr_runtime_options_init(gr_runtime_options_t *o) {
    memset(o, 0, sizeof *o);
    o->silo_id = "local";
    o->idle_deactivate_ms = 600000;
    o->default_call_timeout_ms = 30000;
    o->max_queue_per_grain = 10000;
}

int gr_runtime_new(uv_loop_t *loop, gr_storage_t *storage, const gr_runtime_options_t *opts,
                   gr_runtime_t **out) {
    if (!loop || !storage || !opts || !out || !opts->silo_id || opts->default_call_timeout_ms == 0 ||
        opts->idle_deactivate_ms == 0 || opts->max_queue_per_grain == 0)
        return GR_EINVAL;
    gr_runtime_t *rt = gr__calloc(1, sizeof *rt);
    if (!rt) return GR_ENOMEM;
    rt->silo_id = gr__strdup(opts->silo_id);
    if (!rt->silo_id) {
        gr__free(rt);
        return GR_ENOMEM;
    }
    rt->loop = loop;
    rt->storage = storage;
    rt->opts = *opts;
    rt->opts.silo_id = rt->silo_id;
    rt->min_idle_ms = opts->idle_deactivate_ms;
    uv_idle_init(loop, &rt->pump);
    rt->pump.data = rt;
    uv_timer_init(loop, &rt->deadline_timer);
    rt->deadline_timer.data = rt;
    uv_timer_init(loop, &rt->idle_timer);
    rt->idle_timer.data = rt;
    /* Sweep four times per shortest age, at most once per second. */
    uint64_t every = opts->idle_deactivate_ms / 4;
    if (every > 1000) every = 1000;
    if (every < 10) every = 10;
    uv_timer_start(&rt->idle_timer, gr__idle_sweep_cb, every, every);
    uv_unref((uv_handle_t *)&rt->idle_timer);
    uv_unref((uv_handle_t *)&rt->deadline_timer);
    uv_timer_init(loop, &rt->memory_timer);
    rt->memory_timer.data = rt;
    if (opts->memory_limit) {
        rt->stats.rss = gr__rss_bytes();
        uv_timer_start(&rt->memory_timer, gr__memory_sample_cb, 100, 100);
    }
    uv_unref((uv_handle_t *)&rt->memory_timer);
    *out = rt;
    return 0;
}

static void gr__class_entry_free(gr__class_entry_t *e) {
    gr__free(e->calls);
    gr__free(e->errors);
    gr__free(e->interleave);
    gr__free(e->read_only);
    gr__free(e->latency);
    gr__free(e);
}

int gr_runtime_register(gr_runtime_t *rt, const gr_class_t *cls) {
    /* Over a limit is GR_ETOOBIG, as everywhere (granary/common.h). */
    if (cls && cls->name && strlen(cls->name) > GR_CLASS_NAME_MAX) return GR_ETOOBIG;
    for (const gr_method_t *m = cls && cls->methods ? cls->methods : NULL; m && m->name; m++)
        if (strlen(m->name) > GR_METHOD_NAME_MAX) return GR_ETOOBIG;
    /* Bit 30 of a stored format says a reply log follows the state. */
    if (!rt || !cls || !gr__valid_class_name(cls->name) || !cls->methods || !cls->methods[0].name ||
        cls->placement > GR_PLACE_RANDOM || (cls->state_version & GR__IDEM_FORMAT_FLAG) ||
        cls->state_version > INT32_MAX) /* storage keeps formats as int4, bit 30 reserved */
        return GR_EINVAL;
    for (const gr_method_t *m = cls->methods; m->name; m++) {
        size_t n = strlen(m->name);
        if (!m->fn || n == 0 || n > GR_METHOD_NAME_MAX) return GR_EINVAL;
    }
    gr__class_entry_t *e = NULL;
    HASH_FIND_STR(rt->classes, cls->name, e);
    if (e) return GR_EEXIST;
    e = gr__calloc(1, sizeof *e);
    if (!e) return GR_ENOMEM;
    e->cls = cls;
    e->rt = rt;
    for (const gr_method_t *m = cls->methods; m->name; m++)
        e->n_methods++;
    e->calls = gr__calloc(e->n_methods, sizeof *e->calls);
    e->errors = gr__calloc(e->n_methods, sizeof *e->errors);
    e->interleave = gr__calloc(e->n_methods, 1);
    e->read_only = gr__calloc(e->n_methods, 1);
    e->latency = gr__calloc(e->n_methods, sizeof *e->latency);
    int rc = !e->calls || !e->errors || !e->interleave || !e->read_only || !e->latency ? GR_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < e->n_methods; i++)
        e->interleave[i] = (cls->flags & GR_CLASS_REENTRANT) != 0;
    for (const char *const *name = cls->interleave; rc == 0 && name && *name; name++) {
        const gr_method_t *m = gr__find_method(cls, *name);
        if (m)
            e->interleave[m - cls->methods] = 1;
        else
            rc = GR_EINVAL; /* a typo here would silently serialise the method */
    }
    for (const char *const *name = cls->read_only; rc == 0 && name && *name; name++) {
        const gr_method_t *m = gr__find_method(cls, *name);
        if (m)
            e->read_only[m - cls->methods] = 1;
        else
            rc = GR_EINVAL;
    }
    if (rc == 0) {
        HASH_ADD_KEYPTR(hh, rt->classes, cls->name, strlen(cls->name), e);
        if (gr__hash_oom()) rc = GR_ENOMEM;
    }
    if (rc != 0) {
        gr__class_entry_free(e);
        return rc;
    }
    /* The sweep must run often enough for the shortest class age. */
    if (cls->idle_deactivate_ms && cls->idle_deactivate_ms < rt->min_idle_ms)
        rt->min_idle_ms = cls->idle_deactivate_ms;
    if (cls->idle_deactivate_ms && cls->idle_deactivate_ms / 4 < uv_timer_get_repeat(&rt->idle_timer)) {
        uint64_t every = cls->idle_deactivate_ms / 4 < 10 ? 10 : cls->idle_deactivate_ms / 4;
        uv_timer_start(&rt->idle_timer, gr__idle_sweep_cb, every, every);
    }
    return 0;
}

const gr_class_t *gr_runtime_find_class(gr_runtime_t *rt, const char *name) {
    gr__class_entry_t *e = NULL;
    if (!rt || !name) return NULL;
    HASH_FIND_STR(rt->classes, name, e);
    return e ? e->cls : NULL;
}

size_t gr_runtime_activation_count(const gr_runtime_t *rt) { return rt->n_grains; }

void gr__runtime_get_stats(const gr_runtime_t *rt, gr__runtime_stats_t *out) { *out = rt->stats; }

void gr__maybe_drained(gr_runtime_t *rt) {
    if (!rt->draining || rt->n_grains != 0 || !rt->drain_cb) return;
    void (*cb)(gr_runtime_t *, void *) = rt->drain_cb;
    rt->drain_cb = NULL;
    cb(rt, rt->drain_ud);
}

void gr__runtime_set_migrate_budget(gr_runtime_t *rt, uint32_t ms) { rt->mig_budget_ms = ms; }

int gr_runtime_drain(gr_runtime_t *rt, gr_drain_cb cb, void *ud) {
    if (rt->draining || rt->closing) return GR_ESTATE;
    rt->draining = 1;
    rt->drain_cb = cb;
    rt->drain_ud = ud;
    /* Idle grains deactivate on their next run; busy ones after their turn
     * and mailbox; loading ones after serving what they queued. The pump
     * reports completion, so cb never runs inside this call. */
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) gr__grain_schedule(g);
    /* With live migration, the activations that may move do instead, a
     * bounded number at a time (migrate.c). */
    if (rt->cluster.migrate && rt->router) gr__migrate_drain(rt);
    gr__pump_start(rt);
    return 0;
}

static void gr__handle_closed(uv_handle_t *h) {
    gr_runtime_t *rt = h->data;
    rt->open_handles--;
    gr__maybe_closed(rt);
}

void gr__maybe_closed(gr_runtime_t *rt) {
    if (!rt->closing || rt->open_handles != 0 || rt->n_grains != 0 || rt->run_head) return;
    /* Grains still held by storage operations or timer handles keep the
     * runtime alive: they point back at it. */
    if (rt->held_grains != 0) return;
    gr__class_entry_t *e, *tmp;
    HASH_ITER(hh, rt->classes, e, tmp) {
        HASH_DEL(rt->classes, e);
        gr__class_entry_free(e);
    }
    void (*cb)(void *) = rt->close_cb;
    void *ud = rt->close_ud;
    gr__free(rt->silo_id);
    gr__free(rt);
    if (cb) cb(ud);
}

static int gr__write_holds(gr_grain_t *g, gr_msg_t *m) {
    for (gr__write_waiter_t *w = g->waiters_now; w; w = w->next)
        if (w->msg == m) return 1;
    for (gr__write_waiter_t *w = g->waiters_next; w; w = w->next)
        if (w->msg == m) return 1;
    return 0;
}

void gr_runtime_close(gr_runtime_t *rt, gr_close_cb cb, void *ud) {
    assert(!rt->closing && "gr_runtime_close called twice");
    rt->closing = 1;
    rt->close_cb = cb;
    rt->close_ud = ud;
    /* Counted before anything is released: the runtime must not be freed
     * while this function is still walking it. */
    rt->open_handles = 4; /* pump, deadline, idle and memory timers */
    gr__migrate_queue_free(rt);
    gr__migrate_in_cancel_all(rt);
    /* Drop every activation without saving: drain first to save. */
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) {
        gr_msg_t *m;
        /* Calls this grain made are cancelled first, with their callbacks,
         * while the grain is intact: a callback may still reply. */
        while (g->owned) {
            gr__call_t *c = g->owned;
            gr__call_unlink(rt, c);
            c->cb(c->ud, GR_ECANCELED, NULL, 0);
            gr__call_release(rt, c);
        }
        /* A message still unanswered is void from here on (replying to it
         * after close is a programming error), unless a state write holds
         * it: the write's completion releases it. */
        if (g->current && !gr__write_holds(g, g->current)) gr__msg_free(rt, g->current);
        g->current = NULL;
        while (g->ext && g->ext->interleaved) {
            gr_msg_t *im = g->ext->interleaved;
            g->ext->interleaved = im->next;
            g->ext->n_interleaved--;
            im->next = NULL;
            if (!gr__write_holds(g, im)) gr__msg_free(rt, im);
        }
        while ((m = gr__mailbox_pop(g)) != NULL)
            gr__msg_free(rt, m);
        gr__timers_stop_all(g);
        if (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING || g->status == GR__G_MIGRATING)
            g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
    }
    /* Every call still waiting completes now with GR_ECANCELED. */
    gr__call_t *c, *ctmp;
    HASH_ITER(hh, rt->calls, c, ctmp) {
        gr__call_unlink(rt, c);
        c->cb(c->ud, GR_ECANCELED, NULL, 0);
        gr__call_release(rt, c);
    }
    while (rt->done_head) {
        c = rt->done_head;
        rt->done_head = c->done_next;
        c->cb(c->ud, c->status, c->reply, c->reply_len);
        gr__call_release(rt, c);
    }
    while (rt->spare_calls) {
        c = rt->spare_calls;
        rt->spare_calls = c->done_next;
        gr__free(c);
    }
    while (rt->spare_msgs) {
        gr_msg_t *m = rt->spare_msgs;
        rt->spare_msgs = m->next;
        gr__free(m);
    }
    rt->n_spare_calls = rt->n_spare_msgs = 0;
    rt->done_tail = NULL;
    /* Grains on the run list are released here rather than by the pump. */
    while (rt->run_head) {
        g = rt->run_head;
        rt->run_head = g->run_next;
        g->scheduled = 0;
        gr__grain_release(g);
    }
    rt->run_tail = NULL;
    uv_close((uv_handle_t *)&rt->pump, gr__handle_closed);
    uv_close((uv_handle_t *)&rt->deadline_timer, gr__handle_closed);
    uv_close((uv_handle_t *)&rt->idle_timer, gr__handle_closed);
    uv_close((uv_handle_t *)&rt->memory_timer, gr__handle_closed);
}

void gr__runtime_set_cluster(gr_runtime_t *rt, const gr__cluster_hooks_t *hooks) {
    if (hooks)
        rt->cluster = *hooks;
    else
        memset(&rt->cluster, 0, sizeof rt->cluster);
}

void gr__runtime_set_router(gr_runtime_t *rt, gr__router_fn route, gr__deactivated_fn gone, void *ud) {
    rt->router = route;
    rt->on_gone = gone;
    rt->router_ud = ud;
}

const char *gr__msg_class(const gr_msg_t *m) { return m->cls->name; }
unsigned gr__msg_placement(const gr_msg_t *m) { return m->cls->placement; }
const uint8_t *gr__msg_key(const gr_msg_t *m, size_t *len) {
    *len = m->id_len - m->class_len - 1;
    return m->id + m->class_len + 1;
}
const uint8_t *gr__msg_id(const gr_msg_t *m, size_t *len) {
    *len = m->id_len;
    return m->id;
}
const uint8_t *gr__msg_arg(const gr_msg_t *m, size_t *len) {
    *len = m->arg_len;
    return m->arg;
}
int gr__msg_hops(const gr_msg_t *m) { return m->hops; }
const uint8_t *gr__msg_chain(const gr_msg_t *m, size_t *len) {
    *len = m->chain_len;
    return m->chain;
}

uint32_t gr__msg_remaining_ms(const gr_runtime_t *rt, const gr_msg_t *m) {
    uint64_t now = uv_now(rt->loop);
    return m->deadline > now ? (uint32_t)(m->deadline - now) : 0;
}

void gr__runtime_run_here(gr_runtime_t *rt, gr_msg_t *m) {
    if (rt->closing) {
        gr__msg_fail(rt, m, GR_ESHUTDOWN, "silo is shutting down");
        return;
    }
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, m->id, m->id_len, g);
    if (!g) {
        if (rt->draining) {
            gr__msg_fail(rt, m, GR_ESHUTDOWN, "silo is shutting down");
            return;
        }
        int rc = gr__grain_new(rt, m->cls, m->id, m->id_len, m->class_len, &g);
        if (rc != 0) {
            gr__msg_fail(rt, m, rc, "could not start loading the grain's state");
            return;
        }
    } else if (g->mb_len >= rt->opts.max_queue_per_grain) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "grain mailbox is full");
        return;
    } else if (gr__deadlock_check(rt, g, m)) {
        return;
    }
    gr__mailbox_push(g, m);
    gr__grain_schedule(g);
}

void gr__runtime_msg_done(gr_runtime_t *rt, gr_msg_t *m, int status, const uint8_t *reply, size_t len) {
    uint8_t *copy = len ? gr__memdup(reply, len) : NULL;
    if (len && !copy) {
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return;
    }
    gr__msg_complete(rt, m, status, copy, copy ? len : 0);
}

void gr__runtime_foreach(gr_runtime_t *rt,
                         void (*fn)(void *ud, const char *cls, const uint8_t *key, size_t len), void *ud) {
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) {
        /* Workers are not in the directory: nothing to re-register. */
        if ((g->status == GR__G_ACTIVE || g->status == GR__G_LOADING || g->status == GR__G_MIGRATING) &&
            !GR__G_WORKER(g))
            fn(ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len);
    }
}
