/* src/runtime/calls.c - calls: pending call records and their deadlines,
 * messages and their completion, idempotency keys at the runtime's edge,
 * call chains (cycle detection), submitting a call (gr_call and friends,
 * stateless workers) and replying to one. */
#include "runtime/runtime_internal.h"

/* ---- call chains ---- */

static int gr__chain_has(const uint8_t *chain, size_t len, const uint8_t *id, size_t id_len) {
    for (size_t o = 0; o + 2 <= len;) {
        size_t n = (size_t)chain[o] << 8 | chain[o + 1];
        if (o + 2 + n > len) return 0; /* malformed (from the wire): no match */
        if (n == id_len && memcmp(chain + o + 2, id, n) == 0) return 1;
        o += 2 + n;
    }
    return 0;
}

/* out = parent chain + this id, dropping the oldest entries when it would
 * exceed GR__CHAIN_MAX (a cycle longer than that goes undetected and ends
 * in the call's timeout). Returns the new length. */
static size_t gr__chain_extend(uint8_t *out, const uint8_t *parent, size_t plen, const uint8_t *id,
                               size_t id_len) {
    if (id_len + 2 > GR__CHAIN_MAX) return 0;
    size_t skip = 0;
    while (skip < plen && plen - skip + 2 + id_len > GR__CHAIN_MAX)
        skip += 2 + ((size_t)parent[skip] << 8 | (skip + 1 < plen ? parent[skip + 1] : 0));
    if (skip > plen) skip = plen;
    if (plen > skip) memcpy(out, parent + skip, plen - skip);
    size_t o = plen - skip;
    out[o] = (uint8_t)(id_len >> 8);
    out[o + 1] = (uint8_t)id_len;
    memcpy(out + o + 2, id, id_len);
    return o + 2 + id_len;
}

/* "Class/key -> Class/key -> ..." for an error text (each id shown up to
 * 168 bytes; bytes other than printable ASCII as '?'). */
static void gr__chain_describe(char *out, size_t size, const uint8_t *chain, size_t len, const uint8_t *id,
                               size_t id_len) {
    size_t w = 0;
    out[0] = '\0';
    for (size_t o = 0; o <= len && w + 8 < size;) {
        const uint8_t *e;
        size_t n;
        if (o + 2 <= len) {
            n = (size_t)chain[o] << 8 | chain[o + 1];
            if (o + 2 + n > len) break;
            e = chain + o + 2;
            o += 2 + n;
        } else {
            e = id; /* the target closes the cycle */
            n = id_len;
            o = len + 1;
        }
        if (w) w += (size_t)snprintf(out + w, size - w, " -> ");
        if (n >= 2 && e[0] == GR__WORKER_TAG) { /* a stateless worker: show its grain id */
            e += 2;
            n -= 2;
        }
        for (size_t i = 0; i < n && i < GR_CLASS_NAME_MAX + 40 && w + 4 < size; i++)
            out[w++] = e[i] == 0 ? '/' : (e[i] >= 32 && e[i] < 127 ? (char)e[i] : '?');
        out[w] = '\0';
    }
}

/* ---- pending calls and their completion ---- */

void gr__call_unlink(gr_runtime_t *rt, gr__call_t *c) {
    HASH_DEL(rt->calls, c);
    gr__dlq_remove(&rt->deadlines, &c->dl);
    if (c->owner) {
        if (c->own_prev)
            c->own_prev->own_next = c->own_next;
        else
            c->owner->owned = c->own_next;
        if (c->own_next) c->own_next->own_prev = c->own_prev;
        /* Its callback runs later and may use the grain: the grain stays
         * (and is not evicted) until the record is released. */
        c->held = c->owner;
        c->held->refs++;
        c->owner = NULL;
    }
}

/* Queue a call's completion for the pump. `reply` ownership moves in. */
static void gr__call_finish(gr_runtime_t *rt, gr__call_t *c, int status, uint8_t *reply, size_t len) {
    c->status = status;
    c->reply = reply;
    c->reply_len = len;
    c->done_next = NULL;
    if (rt->done_tail)
        rt->done_tail->done_next = c;
    else
        rt->done_head = c;
    rt->done_tail = c;
    gr__pump_start(rt);
}

/* A completion that never entered the table (refused at submission). */
void gr__call_fail_soon(gr_runtime_t *rt, gr__call_t *c, int status, const char *detail) {
    size_t n = detail ? strlen(detail) : 0;
    uint8_t *d = n ? gr__memdup(detail, n) : NULL;
    gr__call_finish(rt, c, status, d, d ? n : 0);
}

static void gr__deadline_rearm(gr_runtime_t *rt);

static void gr__deadline_cb(uv_timer_t *t) {
    gr_runtime_t *rt = t->data;
    gr__dlq_node_t *n;
    while ((n = gr__dlq_pop_expired(&rt->deadlines, uv_now(rt->loop))) != NULL) {
        gr__call_t *c = GR__CONTAINER_OF(n, gr__call_t, dl);
        gr__call_unlink(rt, c);
        gr__call_fail_soon(rt, c, GR_ETIMEDOUT, "no reply within the call's timeout");
    }
    gr__deadline_rearm(rt);
}

static void gr__deadline_rearm(gr_runtime_t *rt) {
    uint64_t d = gr__dlq_next_in(&rt->deadlines, uv_now(rt->loop));
    if (d == UINT64_MAX)
        uv_timer_stop(&rt->deadline_timer);
    else
        uv_timer_start(&rt->deadline_timer, gr__deadline_cb, d, 0);
}

/* Return a call record (and its reply) to the runtime's spares. */
void gr__call_release(gr_runtime_t *rt, gr__call_t *c) {
    if (c->held) {
        gr_grain_t *g = c->held;
        c->held = NULL;
        g->refs--;
        if (g->status == GR__G_DEAD) gr__grain_release(g);
    }
    if (c->reply != c->reply_inline) gr__free(c->reply);
    if (rt->n_spare_calls >= GR__FREE_LIST_MAX || rt->closing) {
        gr__free(c);
        return;
    }
    c->done_next = rt->spare_calls;
    rt->spare_calls = c;
    rt->n_spare_calls++;
}

static gr__call_t *gr__call_new(gr_runtime_t *rt, gr_call_cb cb, void *ud, uint32_t timeout_ms,
                                gr_grain_t *owner) {
    gr__call_t *c = rt->spare_calls;
    if (c) {
        rt->spare_calls = c->done_next;
        rt->n_spare_calls--;
        memset(c, 0, offsetof(gr__call_t, reply_inline));
    } else {
        c = gr__calloc(1, sizeof *c);
        if (!c) return NULL;
    }
    c->id = ++rt->next_call_id;
    c->cb = cb;
    c->ud = ud;
    HASH_ADD_BYHASHVALUE(hh, rt->calls, id, sizeof c->id, GR__CALL_HASH(c->id), c);
    if (gr__hash_oom()) {
        gr__call_release(rt, c);
        return NULL;
    }
    uint64_t deadline = uv_now(rt->loop) + (timeout_ms ? timeout_ms : rt->opts.default_call_timeout_ms);
    if (gr__dlq_insert(&rt->deadlines, &c->dl, deadline)) gr__deadline_rearm(rt);
    if (owner) {
        c->owner = owner;
        c->own_next = owner->owned;
        if (owner->owned) owner->owned->own_prev = c;
        owner->owned = c;
    }
    return c;
}

/* Route a reply to its waiting call, if the caller is still waiting. */
static void gr__deliver_reply(gr_runtime_t *rt, uint64_t call_id, int status, uint8_t *reply, size_t len) {
    gr__call_t *c = NULL;
    if (call_id) HASH_FIND_BYHASHVALUE(hh, rt->calls, &call_id, sizeof call_id, GR__CALL_HASH(call_id), c);
    if (!c) {
        if (call_id) rt->stats.late_replies++;
        gr__free(reply);
        return;
    }
    gr__call_unlink(rt, c);
    gr__call_finish(rt, c, status, reply, len);
}

static gr_msg_t *gr__msg_new(gr_runtime_t *rt) {
    gr_msg_t *m = rt->spare_msgs;
    if (!m) return gr__calloc(1, sizeof *m);
    rt->spare_msgs = m->next;
    rt->n_spare_msgs--;
    memset(m, 0, offsetof(gr_msg_t, arg_inline));
    return m;
}

/* The message's chain: `chain` (from the wire or a caller's turn), plus
 * the calling grain's id when a grain makes the call. */
static int gr__msg_set_chain(gr_msg_t *m, const uint8_t *chain, size_t len, const gr_grain_t *caller) {
    if (len > GR__CHAIN_MAX) return GR_ETOOBIG;
    m->chain = NULL;
    m->chain_len = 0;
    size_t need = len + (caller ? 2u + caller->id_len : 0u);
    if (!need) return 0;
    m->chain = need <= sizeof m->chain_inline ? m->chain_inline : gr__malloc(GR__CHAIN_MAX);
    if (!m->chain) return GR_ENOMEM;
    if (caller)
        m->chain_len = (uint16_t)gr__chain_extend(m->chain, chain, len, caller->id, caller->id_len);
    else
        memcpy(m->chain, chain, m->chain_len = (uint16_t)len);
    return 0;
}

/* ---- idempotency keys (runtime/idem.h, docs/exactly-once.md) ---- */

/* Complete the duplicates parked on an entry with one answer. */
static void gr__idem_answer(gr_runtime_t *rt, gr_msg_t *w, int status, const void *data, size_t len) {
    while (w) {
        gr_msg_t *n = w->next;
        w->next = NULL;
        if (gr__msg_complete_copy(rt, w, status, data, len) != 0)
            gr__msg_fail(rt, w, GR_ENOMEM, "out of memory");
        w = n;
    }
}

/* A keyed message completes. With its entry DONE the duplicates parked on
 * it get the same reply; completing any other way (its reply did not
 * commit, the lease failed, ...) the entry is forgotten and the duplicates
 * fail the same way, to be retried. */
static void gr__idem_settle(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len) {
    gr__idem_entry_t *e = m->idem_entry;
    m->idem_entry = NULL;
    e->owner = NULL;
    gr_msg_t *w = e->waiting;
    e->waiting = NULL;
    if (e->state == GR__IDEM_DONE) {
        /* The answer is final (and stored, for a persisting class) even if
         * this message could not deliver it (the lease was in doubt): the
         * entry stays, and the duplicates get it only under the lease. */
        if (gr__may_answer(m->grain))
            gr__idem_answer(rt, w, e->status, e->reply, e->reply_len);
        else
            gr__idem_answer(rt, w, GR_ENOTHERE, GR__NO_LEASE, strlen(GR__NO_LEASE));
        return;
    }
    gr__idem_remove(&m->grain->ext->idem, e);
    gr__idem_answer(rt, w, status, data, len);
}

/* The activation ends: nothing may point into its log afterwards. */
void gr__idem_drop(gr_runtime_t *rt, gr_grain_t *g) {
    static const char why[] = "the activation ended before the first call with this idempotency key settled";
    gr__idem_log_t *log = &g->ext->idem;
    for (gr__idem_entry_t *e = log->oldest; e; e = e->newer) {
        if (e->owner) ((gr_msg_t *)e->owner)->idem_entry = NULL;
        gr_msg_t *w = e->waiting;
        e->waiting = NULL;
        gr__idem_answer(rt, w, GR_ENOTHERE, why, sizeof why - 1);
    }
    gr__idem_clear(log);
}

void gr__msg_free(gr_runtime_t *rt, gr_msg_t *m) {
    if (m->idem_entry) { /* freed unanswered (the runtime closes): its entry must not point here */
        m->idem_entry->owner = NULL;
        m->idem_entry = NULL;
    }
    if (m->chain != m->chain_inline) gr__free(m->chain);
    gr__free(m->idem);
    gr__free(m->id);
    if (m->name_owned) gr__free(m->method_name);
    if (m->arg != m->arg_inline) gr__free(m->arg);
    gr__free(m->reply);
    if (rt->n_spare_msgs >= GR__FREE_LIST_MAX || rt->closing) {
        gr__free(m);
        return;
    }
    m->next = rt->spare_msgs;
    rt->spare_msgs = m;
    rt->n_spare_msgs++;
}

/* Complete a message: send its reply (status 0, GR_EAPP or an error) to the
 * caller. `reply` ownership moves in. */
void gr__msg_complete(gr_runtime_t *rt, gr_msg_t *m, int status, uint8_t *reply, size_t len) {
    if (m->idem_entry) gr__idem_settle(rt, m, status, reply, len);
    if (status != 0) rt->stats.calls_failed++;
    if (m->ran) { /* count it for its class and method */
        gr__class_entry_t *ce = m->grain->ce;
        size_t i = (size_t)(m->method - ce->cls->methods);
        ce->calls[i]++;
        rt->stats.calls_run++;
        if (status != 0) ce->errors[i]++;
        gr__hist_observe(&ce->latency[i], uv_hrtime() - m->t0_ns);
    }
    /* A reply held for persist-before-reply is either the one delivered or
     * superseded by an error: free it in the second case. */
    if (m->reply != reply) gr__free(m->reply);
    m->reply = NULL;
    gr__deliver_reply(rt, m->call_id, status, reply, len);
    gr__msg_free(rt, m);
}

/* gr__msg_complete for a reply the caller still owns: the common case of a
 * handler replying at once, without a held copy in between. */
int gr__msg_complete_copy(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len) {
    /* The one allocation comes first: a failure must leave no trace (no
     * duplicate answered, nothing counted), so that the caller may retry. */
    gr__call_t *c = NULL;
    uint8_t *copy = NULL;
    if (m->call_id)
        HASH_FIND_BYHASHVALUE(hh, rt->calls, &m->call_id, sizeof m->call_id, GR__CALL_HASH(m->call_id), c);
    if (c && len > sizeof c->reply_inline && !(copy = gr__memdup(data, len))) return GR_ENOMEM;
    if (m->idem_entry) gr__idem_settle(rt, m, status, data, len);
    if (status != 0) rt->stats.calls_failed++;
    if (m->ran) {
        gr__class_entry_t *ce = m->grain->ce;
        size_t i = (size_t)(m->method - ce->cls->methods);
        ce->calls[i]++;
        rt->stats.calls_run++;
        if (status != 0) ce->errors[i]++;
        gr__hist_observe(&ce->latency[i], uv_hrtime() - m->t0_ns);
    }
    if (!c) {
        if (m->call_id) rt->stats.late_replies++;
    } else {
        if (!copy) {
            copy = c->reply_inline;
            if (len) memcpy(copy, data, len);
        }
        gr__call_unlink(rt, c);
        gr__call_finish(rt, c, status, copy, len);
    }
    gr__msg_free(rt, m);
    return 0;
}

void gr__msg_fail(gr_runtime_t *rt, gr_msg_t *m, int status, const char *detail) {
    size_t n = detail ? strlen(detail) : 0;
    uint8_t *d = n ? gr__memdup(detail, n) : NULL;
    gr__msg_complete(rt, m, status, d, d ? n : 0);
}

int gr__msg_set_route(gr_msg_t *m, const gr_class_t *cls, const uint8_t *id, size_t id_len,
                      size_t class_len) {
    gr__free(m->id);
    m->id = gr__memdup(id, id_len);
    if (!m->id) return GR_ENOMEM;
    m->id_len = id_len;
    m->class_len = class_len;
    m->cls = cls;
    return 0;
}

/* ---- submitting calls ---- */

/* Stateless workers: hand the message to an idle worker activation of
 * (class, key) on this silo, else start another one (up to the class's
 * max_workers), else queue it on the worker with the shortest mailbox.
 * Never routed: any silo may serve a worker's calls. */
void gr__worker_enqueue(gr_runtime_t *rt, gr__class_entry_t *ce, const uint8_t *key, size_t key_len,
                        gr_msg_t *m) {
    const gr_class_t *cls = ce->cls;
    size_t cl = strlen(cls->name);
    uint8_t idbuf[2 + GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    idbuf[0] = GR__WORKER_TAG;
    memcpy(idbuf + 2, cls->name, cl + 1);
    if (key_len) memcpy(idbuf + 2 + cl + 1, key, key_len);
    size_t id_len = 2 + cl + 1 + key_len;
    unsigned max = cls->max_workers ? cls->max_workers : GR__WORKERS_DEFAULT;
    if (max > 255) max = 255;
    gr_grain_t *pick = NULL, *shortest = NULL;
    int free_slot = -1;
    for (unsigned i = 0; i < max && !pick; i++) {
        gr_grain_t *g = NULL;
        idbuf[1] = (uint8_t)i;
        HASH_FIND(hh, rt->grains, idbuf, id_len, g);
        if (!g) {
            if (free_slot < 0) free_slot = (int)i;
            continue;
        }
        if (g->status != GR__G_ACTIVE && g->status != GR__G_LOADING) continue;
        if (!gr__grain_busy(g) && !g->mb_head)
            pick = g;
        else if (!shortest || g->mb_len < shortest->mb_len)
            shortest = g;
    }
    if (!pick && free_slot >= 0) {
        idbuf[1] = (uint8_t)free_slot;
        int rc = gr__grain_new(rt, cls, idbuf, id_len, 2 + cl, &pick);
        if (rc != 0) {
            gr__msg_fail(rt, m, rc, "could not start a stateless worker");
            return;
        }
    }
    if (!pick) pick = shortest;
    if (!pick) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "no stateless worker can take the call");
        return;
    }
    if (pick->mb_len >= rt->opts.max_queue_per_grain) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "grain mailbox is full");
        return;
    }
    gr__mailbox_push(pick, m);
    gr__grain_schedule(pick);
}

/* A call whose chain already holds its target comes back to a grain that is
 * waiting for this very chain: unless the method may interleave, it could
 * only wait for its own caller, so fail it now with a clear error instead
 * of after the timeout. Returns 1 when it failed the message. */
int gr__deadlock_check(gr_runtime_t *rt, gr_grain_t *g, gr_msg_t *m) {
    if (!m->chain_len || !gr__chain_has(m->chain, m->chain_len, g->id, g->id_len)) return 0;
    if (!m->method) m->method = gr__find_method(GR__G_CLS(g), m->method_name);
    if (gr__can_interleave(g, m)) return 0;
    char path[512], who[200], detail[900];
    gr__chain_describe(path, sizeof path, m->chain, m->chain_len, g->id, g->id_len);
    gr__chain_describe(who, sizeof who, NULL, 0, g->id, g->id_len);
    snprintf(detail, sizeof detail,
             "call cycle %s: %s is waiting for this call chain, and its method %s does not interleave "
             "(mark the class GR_CLASS_REENTRANT or the method interleaving, or break the cycle)",
             path, who, m->method_name);
    rt->stats.deadlocks++;
    gr__msg_fail(rt, m, GR_EDEADLOCK, detail);
    return 1;
}

static int gr__submit(gr_runtime_t *rt, gr_grain_t *owner, const gr_ref_t *ref, const char *method,
                      const void *arg, size_t arg_len, uint32_t timeout_ms, int hops, int here,
                      const uint8_t *chain, size_t chain_len, const uint8_t *idem, size_t idem_len,
                      gr_call_cb cb, void *ud) {
    if (!rt || !ref || !method || !cb || !ref->class_name || (ref->key_len && !ref->key) ||
        (arg_len && !arg) || (idem_len && !idem))
        return GR_EINVAL;
    if (idem_len > GR_IDEM_KEY_MAX) return GR_ETOOBIG;
    size_t cl = strlen(ref->class_name), ml = strlen(method);
    if (cl == 0 || ml == 0) return GR_EINVAL;
    if (cl > GR_CLASS_NAME_MAX || ml > GR_METHOD_NAME_MAX || ref->key_len > GR_KEY_MAX ||
        arg_len > GR_ARG_MAX)
        return GR_ETOOBIG;
    /* A draining silo in a cluster still routes calls elsewhere. */
    if (rt->closing || (rt->draining && !rt->router)) return GR_ESHUTDOWN;

    gr__class_entry_t *ce = NULL;
    size_t slot = ((uintptr_t)ref->class_name >> 3) % GR__CLASS_CACHE;
    if (rt->class_cache[slot].name == ref->class_name &&
        strcmp(rt->class_cache[slot].ce->cls->name, ref->class_name) == 0) {
        ce = rt->class_cache[slot].ce;
    } else {
        HASH_FIND_STR(rt->classes, ref->class_name, ce);
        if (ce) {
            rt->class_cache[slot].name = ref->class_name;
            rt->class_cache[slot].ce = ce;
        }
    }
    /* No timeout given: the target class's default, then the runtime's. */
    if (!timeout_ms && ce) timeout_ms = ce->cls->call_timeout_ms;
    gr__call_t *c = gr__call_new(rt, cb, ud, timeout_ms, owner);
    if (!c) return GR_ENOMEM;
    rt->stats.calls++;
    if (!ce) {
        char detail[GR_CLASS_NAME_MAX + 64];
        snprintf(detail, sizeof detail, "no grain class '%s' on this silo", ref->class_name);
        gr__call_unlink(rt, c);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ENOCLASS, detail);
        return 0;
    }

    gr_msg_t *m = gr__msg_new(rt);
    if (m) {
        /* A method of a class registered here is resolved once, now, and
         * its name borrowed from the class table; an unknown one keeps a
         * copy of its name for the error (or for a silo whose version of
         * the class has it). */
        m->method = gr__find_method(ce->cls, method);
        if (m->method) {
            m->method_name = (char *)m->method->name;
        } else {
            m->method_name = gr__strdup(method);
            m->name_owned = 1;
        }
        if (arg_len <= sizeof m->arg_inline) {
            m->arg = m->arg_inline;
            if (arg_len) memcpy(m->arg, arg, arg_len);
        } else {
            m->arg = gr__memdup(arg, arg_len);
        }
    }
    if (m && idem_len) {
        m->idem = gr__memdup(idem, idem_len);
        m->idem_len = m->idem ? (uint8_t)idem_len : 0;
    }
    if (!m || !m->method_name || !m->arg || (idem_len && !m->idem) ||
        gr__msg_set_chain(m, chain, chain_len, owner) != 0) {
        if (m) gr__msg_free(rt, m);
        gr__call_unlink(rt, c);
        gr__call_release(rt, c);
        return GR_ENOMEM;
    }
    m->call_id = c->id;
    m->arg_len = arg_len;
    m->t0_ns = uv_hrtime();
    m->deadline = c->dl.deadline;

    /* The table key is class '\0' key: unambiguous because class names have
     * no NUL. A stack buffer avoids an allocation per call. */
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    memcpy(idbuf, ref->class_name, cl + 1);
    if (ref->key_len) memcpy(idbuf + cl + 1, ref->key, ref->key_len);
    size_t id_len = cl + 1 + ref->key_len;

    if (ce->cls->flags & GR_CLASS_STATELESS_WORKER) {
        gr__worker_enqueue(rt, ce, idbuf + cl + 1, ref->key_len, m);
        return 0;
    }
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, id_len, g);
    if (rt->router && (!g || g->status == GR__G_DEAD) && !here) {
        m->hops = hops;
        if (gr__msg_set_route(m, ce->cls, idbuf, id_len, cl) != 0) {
            gr__call_unlink(rt, c);
            gr__msg_free(rt, m);
            gr__call_release(rt, c);
            return GR_ENOMEM;
        }
        rt->router(rt->router_ud, m);
        return 0;
    }
    if (g && g->mb_len >= rt->opts.max_queue_per_grain) {
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_EOVERLOAD, "grain mailbox is full");
        return 0;
    }
    if (!g && here && rt->cluster.lease_ok && !rt->cluster.lease_ok(rt->cluster.ud)) {
        /* Sent here to activate, but we cannot vouch for our lease: do not
         * claim a grain we could not serve (it would wait for our death). */
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ENOTHERE, GR__NO_LEASE);
        return 0;
    }
    if (!g && rt->draining) { /* sent here to activate: a draining silo starts nothing new */
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ESHUTDOWN, "silo is shutting down");
        return 0;
    }
    if (!g) {
        m->hops = hops;
        int rc = gr__grain_new(rt, ce->cls, idbuf, id_len, cl, &g);
        if (rc != 0) {
            gr__call_unlink(rt, c);
            gr__msg_free(rt, m);
            rt->stats.calls_failed++;
            gr__call_fail_soon(rt, c, rc, "could not start loading the grain's state");
            return 0;
        }
    } else if (gr__deadlock_check(rt, g, m)) {
        return 0;
    }
    gr__mailbox_push(g, m);
    gr__grain_schedule(g);
    return 0;
}

int gr_call(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
            uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    return gr__submit(rt, NULL, ref, method, arg, arg_len, timeout_ms, 0, 0, NULL, 0, NULL, 0, cb, ud);
}

void gr_call_options_init(gr_call_options_t *o) { memset(o, 0, sizeof *o); }

int gr_call_ex(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
               const gr_call_options_t *o, gr_call_cb cb, void *ud) {
    if (!o) return GR_EINVAL;
    return gr__submit(rt, NULL, ref, method, arg, arg_len, o->timeout_ms, 0, 0, NULL, 0, o->idempotency_key,
                      o->idempotency_key_len, cb, ud);
}

int gr__call_hops(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                  uint32_t timeout_ms, int hops, int here, const uint8_t *chain, size_t chain_len,
                  const uint8_t *idem, size_t idem_len, gr_call_cb cb, void *ud) {
    return gr__submit(rt, NULL, ref, method, arg, arg_len, timeout_ms, hops, here, chain, chain_len, idem,
                      idem_len, cb, ud);
}

int gr_grain_call(gr_grain_t *g, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                  uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    if (!g) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    /* The new call's chain: the chain of the turn this grain is in (the
     * non-interleaved one: an interleaved turn cannot block anyone), plus
     * this grain (added by gr__submit, for the owner). */
    const gr_msg_t *cur = g->current;
    return gr__submit(GR__G_RT(g), g, ref, method, arg, arg_len, timeout_ms, 0, 0, cur ? cur->chain : NULL,
                      cur ? cur->chain_len : 0, NULL, 0, cb, ud);
}

int gr_grain_call_ex(gr_grain_t *g, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                     const gr_call_options_t *o, gr_call_cb cb, void *ud) {
    if (!g || !o) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    const gr_msg_t *cur = g->current;
    return gr__submit(GR__G_RT(g), g, ref, method, arg, arg_len, o->timeout_ms, 0, 0, cur ? cur->chain : NULL,
                      cur ? cur->chain_len : 0, o->idempotency_key, o->idempotency_key_len, cb, ud);
}

const uint8_t *gr_msg_idempotency_key(const gr_msg_t *m, size_t *len) {
    if (len) *len = m && m->idem_len ? m->idem_len : 0;
    return m && m->idem_len ? m->idem : NULL;
}

const uint8_t *gr__msg_idem(const gr_msg_t *m, size_t *len) { return gr_msg_idempotency_key(m, len); }

/* ---- replies ---- */

static int gr__reply(gr_msg_t *m, int status, const void *data, size_t len) {
    if (!m) return GR_EINVAL;
    if (len > GR_ARG_MAX) return GR_ETOOBIG;
    gr_grain_t *g = m->grain;
    gr_runtime_t *rt = GR__G_RT(g);
    assert((g->current == m || m->interleaved) && "gr_reply on a message that is not a turn in progress");
    int persist = (GR__G_CLS(g)->flags & GR_CLASS_PERSIST_BEFORE_REPLY) && g->status == GR__G_ACTIVE;
    gr__idem_entry_t *e = m->idem_entry && m->idem_entry->state == GR__IDEM_RUNNING ? m->idem_entry : NULL;
    /* A keyed call's reply is remembered; a persisting class stores it with
     * the state (a write even if the state did not change: dirty), and
     * until that commits duplicates wait. The entry is recorded last, when
     * nothing else can fail, so an error return leaves it running. */
    if (e && persist) g->dirty = 1;
    if (!(persist && (g->dirty || g->writing))) {
        if (e) {
            if (gr__idem_record(&g->ext->idem, e, status, data, len, gr__idem_now_ms()) != 0)
                return GR_ENOMEM;
            e->state = GR__IDEM_DONE;
        }
        gr__turn_end(g, m); /* before completing: that frees m */
        if (!gr__may_answer(g)) {
            gr__msg_fail(rt, m, GR_ENOTHERE, GR__NO_LEASE);
            gr__grain_schedule(g);
            return 0;
        }
        if (gr__msg_complete_copy(rt, m, status, data, len) != 0) {
            gr__turn_restore(g, m);
            return GR_ENOMEM;
        }
        gr__grain_schedule(g);
        return 0;
    }
    /* Held until the state write commits: the reply needs its own copy. */
    uint8_t *copy = NULL;
    if (len) {
        copy = gr__memdup(data, len);
        if (!copy) return GR_ENOMEM;
    }
    if (e && gr__idem_record(&g->ext->idem, e, status, data, len, gr__idem_now_ms()) != 0) {
        gr__free(copy);
        return GR_ENOMEM;
    }
    m->reply_status = status;
    m->reply = copy;
    m->reply_len = len;
    if (gr__write_request(g, NULL, NULL, m) == 0) return 0; /* turn ends at commit */
    m->reply = NULL;
    gr__free(copy);
    gr__turn_end(g, m);
    gr__msg_fail(rt, m, GR_ENOMEM, "out of memory persisting state");
    /* The change this turn made can no longer be persisted with its reply:
     * no later turn may run on it (and write it: a keyed retry would then
     * count twice). The activation ends without saving; queued calls go to
     * the next one, which loads what storage has. */
    g->dirty = 0;
    g->deactivate_requested = 2;
    gr__grain_schedule(g);
    return 0;
}

int gr_reply(gr_msg_t *m, const void *data, size_t len) { return gr__reply(m, 0, data, len); }

int gr_reply_error(gr_msg_t *m, const char *text) {
    return gr__reply(m, GR_EAPP, text ? text : "", text ? strlen(text) : 0);
}

const char *gr_msg_method(const gr_msg_t *m) { return m->method_name; }
uint64_t gr_msg_deadline(const gr_msg_t *m) { return m->deadline; }
uint32_t gr_msg_remaining_ms(const gr_msg_t *m) {
    gr_runtime_t *rt = m->grain ? GR__G_RT(m->grain) : NULL;
    if (!rt) return 0;
    uint64_t now = uv_now(rt->loop);
    return m->deadline > now ? (uint32_t)(m->deadline - now) : 0;
}
