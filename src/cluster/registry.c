/* src/cluster/registry.c - the directory protocol (docs/directory.md): this
 * silo's partition of the directory and the cache of other partitions,
 * unregistration of activations that end, re-registration of every
 * activation after a view change, claims granted and held elsewhere, and
 * the `$dir` requests peers send to the partition this silo owns. */
#include "cluster/router_internal.h"

/* ---- activations that end, and re-registration ---- */

static void gr__unregister(gr__router_t *r, const uint8_t *id, size_t idl, const char *cls,
                           const uint8_t *key, size_t kl) {
    gr__dir_unregister(&r->cache, id, idl, r->self);
    const char *owner = gr__owner(r, cls, key, kl);
    if (!owner) return;
    if (!strcmp(owner, r->self)) {
        gr__dir_unregister(&r->partition, id, idl, r->self);
        return;
    }
    gr_client_t *peer = gr__peer_get(r, owner);
    gr_ref_t ref = {"$dir", id, idl};
    if (peer)
        gr__client_call_flags(peer, &ref, "unregister", r->self, strlen(r->self), GR__DIR_TIMEOUT_MS,
                              GR__FRAME_ONEWAY, 0, NULL, NULL);
}

static size_t gr__make_id(uint8_t *buf, const char *cls, const uint8_t *key, size_t kl) {
    size_t cl = strlen(cls);
    memcpy(buf, cls, cl + 1);
    if (kl) memcpy(buf + cl + 1, key, kl);
    return cl + 1 + kl;
}

void gr__router_gone_cb(void *ud, const char *cls, const uint8_t *key, size_t kl) {
    gr__router_t *r = ud;
    if (r->closing || !r->have_view) return;
    uint8_t id[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t idl = gr__make_id(id, cls, key, kl);
    gr__unregister(r, id, idl, cls, key, kl);
}

static void gr__rereg_send(gr__router_t *r, gr__rereg_t *q);

static void gr__rereg_timer_cb(uv_timer_t *t) {
    gr__router_t *r = t->data;
    gr__rereg_t *q = r->rereg_retry;
    r->rereg_retry = NULL;
    while (q) {
        gr__rereg_t *n = q->next;
        q->next = NULL;
        /* Gone meanwhile: nothing to announce any more. */
        if (r->closing || !gr__runtime_hosts(r->rt, q->cls, q->key, q->key_len))
            gr__free(q);
        else
            gr__rereg_send(r, q);
        q = n;
    }
}

static void gr__rereg_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__rereg_t *q = ud;
    gr__router_t *r = q->r;
    (void)reply, (void)len;
    if (status != 0 && !r->closing) {
        if (q->attempt < GR__REREG_ATTEMPTS) {
            q->attempt++;
            q->next = r->rereg_retry;
            r->rereg_retry = q;
            if (!uv_is_active((uv_handle_t *)&r->rereg_timer))
                uv_timer_start(&r->rereg_timer, gr__rereg_timer_cb, GR__REREG_RETRY_MS, 0);
            return;
        }
        /* The directory is only a hint now: a silo sent elsewhere finds the
         * claim held here and sends the call on (docs/directory.md). */
        r->stats.lost_registrations++;
        gr__log(GR_LOG_LEVEL_WARN, q->cls, q->key, q->key_len,
                "could not re-register after a view change (%s); calls will find it through its claim",
                gr_err_name(status));
    }
    gr__free(q);
}

static void gr__rereg_one(void *ud, const char *cls, const uint8_t *key, size_t kl) {
    gr__router_t *r = ud;
    r->rereg_count++;
    gr__rereg_t *q = gr__malloc(sizeof *q + kl);
    if (!q) return;
    memset(q, 0, sizeof *q);
    q->r = r;
    snprintf(q->cls, sizeof q->cls, "%s", cls);
    q->key_len = kl;
    if (kl) memcpy(q->key, key, kl);
    gr__rereg_send(r, q);
}

/* Announce one activation to its partition owner (q is consumed). */
static void gr__rereg_send(gr__router_t *r, gr__rereg_t *q) {
    const char *cls = q->cls;
    const uint8_t *key = q->key;
    size_t kl = q->key_len;
    uint8_t id[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t idl = gr__make_id(id, cls, key, kl);
    const char *owner = gr__owner(r, cls, key, kl);
    if (!owner) {
        gr__free(q);
        return;
    }
    if (!strcmp(owner, r->self)) {
        gr__dir_put(&r->partition, id, idl, r->self);
        gr__free(q);
        return;
    }
    gr_client_t *peer = gr__peer_get(r, owner);
    gr_ref_t ref = {"$dir", id, idl};
    r->stats.rerouted_on_view++;
    /* "claimed", not "register": an activation here holds the grain's claim
     * (or is claiming it), so it is the one; a stale entry naming another
     * silo must not make it step down. */
    if (!peer || gr__client_call_flags(peer, &ref, "claimed", r->self, strlen(r->self), GR__DIR_TIMEOUT_MS,
                                       GR__FRAME_REQUEST, 0, gr__rereg_done, q) != 0)
        gr__rereg_done(q, GR_ECONN, NULL, 0); /* retried like any failure */
}

/* Tell the grain's directory owner that `host` holds its claim. */
static void gr__dir_set_host(gr__router_t *r, const uint8_t *id, size_t idl, const char *cls,
                             const uint8_t *key, size_t kl, const char *host) {
    gr__dir_put(&r->cache, id, idl, host);
    const char *owner = gr__owner(r, cls, key, kl);
    if (!owner) return;
    if (!strcmp(owner, r->self)) {
        gr__dir_put(&r->partition, id, idl, host);
        return;
    }
    gr_client_t *peer = gr__peer_get(r, owner);
    gr_ref_t ref = {"$dir", id, idl};
    if (peer)
        gr__client_call_flags(peer, &ref, "claimed", host, strlen(host), GR__DIR_TIMEOUT_MS, GR__FRAME_ONEWAY,
                              0, NULL, NULL);
}

/* A claim granted here: make sure the directory says so (it may name
 * another silo if the call came here through a stale cache or a holder
 * hint). */
void gr__router_claimed_cb(void *ud, const char *cls, const uint8_t *key, size_t kl) {
    gr__router_t *r = ud;
    if (r->closing || !r->have_view) return;
    uint8_t id[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t idl = gr__make_id(id, cls, key, kl);
    const char *cached = gr__dir_lookup(&r->cache, id, idl);
    if (cached && !strcmp(cached, r->self)) return; /* placed here through the directory */
    gr__dir_set_host(r, id, idl, cls, key, kl, r->self);
}

/* Our activation found the grain's claim held by `holder`: the calls it had
 * queued go there, and the directory learns where the grain is. */
void gr__router_held_cb(void *ud, gr_msg_t *m, const char *holder) {
    gr__router_t *r = ud;
    if (r->closing) {
        gr__runtime_msg_done(r->rt, m, GR_ESHUTDOWN, NULL, 0);
        return;
    }
    if (!holder[0] || !strcmp(holder, r->self) || !gr__member(r, holder) || !gr__alive(r, holder)) {
        /* Held by a silo that died (its lease has not run out yet) or that
         * our view does not know yet: retry shortly. */
        char why[GR__SILO_ID_MAX + 96];
        int n =
            snprintf(why, sizeof why, "the grain is still claimed by %s, which cannot be reached now; retry",
                     holder[0] ? holder : "another silo");
        gr__runtime_msg_done(r->rt, m, GR_ENOTHERE, (const uint8_t *)why, (size_t)n);
        return;
    }
    size_t idl, kl;
    const uint8_t *id = gr__msg_id(m, &idl);
    const uint8_t *key = gr__msg_key(m, &kl);
    const char *cached = gr__dir_lookup(&r->cache, id, idl);
    if (!cached || strcmp(cached, holder) != 0)
        gr__dir_set_host(r, id, idl, gr__msg_class(m), key, kl, holder);
    r->stats.forward_retries++;
    gr__deliver(r, m, holder, 1);
}

void gr__router_set_view(gr__router_t *r, const gr__view_t *view) {
    gr__member_t *copy = view->n ? gr__calloc(view->n, sizeof *copy) : NULL;
    const char **ids = view->n ? gr__calloc(view->n, sizeof *ids) : NULL;
    if (view->n && (!copy || !ids)) {
        gr__free(copy);
        gr__free(ids);
        GR__LOG_ERROR("out of memory installing a membership view");
        return;
    }
    if (view->n) memcpy(copy, view->members, view->n * sizeof *copy);
    size_t n_active = 0;
    for (size_t i = 0; i < view->n; i++)
        if (copy[i].status == GR__MS_ACTIVE) ids[n_active++] = copy[i].id;
    gr__ring_t ring;
    if (gr__ring_build(&ring, ids, n_active) != 0) {
        gr__free(copy);
        gr__free(ids);
        return;
    }
    gr__free(r->members);
    gr__free(r->ring_ids);
    gr__ring_free(&r->ring);
    r->members = copy;
    r->n_members = view->n;
    r->ring = ring;
    r->ring_ids = ids;
    r->n_ring_ids = n_active;
    /* Forget whatever points at silos that left; close links to them. */
    size_t dropped = gr__dir_retain_alive(&r->partition, gr__alive, r);
    size_t uncached = gr__dir_retain_alive(&r->cache, gr__alive, r);
    char ver[24];
    snprintf(ver, sizeof ver, "%lld", (long long)view->version);
    gr__peer_t *p, *tmp;
    HASH_ITER(hh, r->peers, p, tmp) {
        if (gr__alive(r, p->id)) continue;
        char failed[24];
        snprintf(failed, sizeof failed, "%llu", (unsigned long long)p->forwards_failed);
        const char *f[] = {"view", ver, "peer", p->id, "forwards_failed", failed, NULL};
        gr__log_fields(p->forwards_failed ? GR_LOG_LEVEL_WARN : GR_LOG_LEVEL_INFO, f,
                       "silo %s left the view: link closed; %llu forwards to it failed (their callers got "
                       "the retryable GR_ECONN; those already sent may have run)",
                       p->id, (unsigned long long)p->forwards_failed);
        gr__peer_drop(r, p);
    }
    /* Calls wait until a view shows us active: while we are joining the
     * ring does not include us yet, and placing nowhere helps nobody. */
    const gr__member_t *me = gr__member(r, r->self);
    if (!r->have_view && !(me && me->status == GR__MS_ACTIVE)) return;
    int first = !r->have_view;
    r->have_view = 1;
    /* Tell the (possibly new) partition owners about our activations. */
    r->rereg_count = 0;
    if (!first) gr__runtime_foreach(r->rt, gr__rereg_one, r);
    if (!first && (dropped || uncached || r->rereg_count)) {
        char d[24], u[24], rr[24];
        snprintf(d, sizeof d, "%zu", dropped);
        snprintf(u, sizeof u, "%zu", uncached);
        snprintf(rr, sizeof rr, "%zu", r->rereg_count);
        const char *f[] = {"view", ver, "entries_dropped", d, "cache_dropped", u, "reregistered", rr, NULL};
        gr__log_fields(
            GR_LOG_LEVEL_INFO, f,
            "view %s installed: %zu grains registered here on departed silos were lost with them "
            "(each activates again on its next call), %zu cached locations dropped, %zu activations "
            "of this silo re-registered with their partition owners",
            ver, dropped, uncached, r->rereg_count);
    }
    /* Calls that waited for a view go now, in arrival order. */
    gr__pending_t *w = r->waiting, *rev = NULL;
    r->waiting = NULL;
    while (w) {
        gr__pending_t *n = w->next;
        w->next = rev;
        rev = w;
        w = n;
    }
    while (rev) {
        gr__pending_t *n = rev->next;
        gr__route(r, rev->msg, 0);
        gr__free(rev);
        rev = n;
    }
}

/* ---- serving peers' directory requests ---- */

/* Where this partition has the grain registered, without registering it:
 * the silo id, or an empty reply if nowhere or on a silo no longer alive. */
static void gr__dir_answer_host(gr__router_t *r, const uint8_t *id, size_t idl, gr_call_cb cb, void *ud) {
    const char *host = gr__dir_lookup(&r->partition, id, idl);
    if (host && !gr__alive(r, host)) host = NULL;
    cb(ud, 0, (const uint8_t *)(host ? host : ""), host ? strlen(host) : 0);
}

void gr__router_system_call(gr__router_t *r, const char *method, const uint8_t *key, size_t key_len,
                            const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud) {
    char silo[GR__SILO_ID_MAX + 1];
    if (arg_len == 0 || arg_len > GR__SILO_ID_MAX || memchr(arg, 0, arg_len)) {
        done(ud, GR_EINVAL, GR__LIT("bad silo id"));
        return;
    }
    memcpy(silo, arg, arg_len);
    silo[arg_len] = '\0';
    r->stats.dir_requests_served++;
    GR__LOG_DEBUG("directory %s from %s", method, silo);
    /* Entries may only name live members of our view: a forged id (or one
     * from a view newer than ours: retried) would otherwise sit in the
     * partition while the named silo lives, growing it without bound. */
    if ((!strcmp(method, "register") || !strcmp(method, "claimed")) && !gr__alive(r, silo)) {
        static const char why[] = "that silo is not a live member of this silo's view (yet)";
        done(ud, GR_ENOTHERE, (const uint8_t *)why, sizeof why - 1);
        return;
    }
    if (!strcmp(method, "register")) {
        char winner[GR__SILO_ID_MAX + 1];
        if (!r->have_view) {
            done(ud, GR_ENOTHERE, GR__LIT("no membership view yet"));
            return;
        }
        if (gr__dir_register(&r->partition, key, key_len, silo, gr__alive, r, winner) != 0) {
            done(ud, GR_ENOMEM, NULL, 0);
            return;
        }
        done(ud, 0, (const uint8_t *)winner, strlen(winner));
    } else if (!strcmp(method, "lookup")) {
        gr__dir_answer_host(r, key, key_len, done, ud);
    } else if (!strcmp(method, "unregister")) {
        gr__dir_unregister(&r->partition, key, key_len, silo);
        done(ud, 0, NULL, 0);
    } else if (!strcmp(method, "claimed")) {
        /* `silo` holds the grain's activation claim: it replaces whatever
         * the entry said (docs/directory.md). */
        if (gr__dir_put(&r->partition, key, key_len, silo) != 0) {
            done(ud, GR_ENOMEM, NULL, 0);
            return;
        }
        done(ud, 0, (const uint8_t *)silo, strlen(silo));
    } else {
        done(ud, GR_ENOMETHOD, GR__LIT("unknown directory method"));
    }
}

int gr__router_call_silo(gr__router_t *r, const char *silo, const char *method, const void *arg,
                         size_t arg_len, uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    if (r->closing) return GR_ESHUTDOWN;
    gr_client_t *peer = gr__peer_get(r, silo);
    if (!peer) return GR_ENOTHERE;
    gr_ref_t ref = {"$silo", NULL, 0};
    return gr__client_call_flags(peer, &ref, method, arg, arg_len, timeout_ms, GR__FRAME_REQUEST, 0, cb, ud);
}

void gr__router_locate(gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len, gr_call_cb cb,
                       void *ud) {
    uint8_t id[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls);
    if (cl > GR_CLASS_NAME_MAX || key_len > GR_KEY_MAX) {
        cb(ud, GR_ETOOBIG, NULL, 0);
        return;
    }
    size_t idl = gr__make_id(id, cls, key, key_len);
    const char *owner = gr__owner(r, cls, key, key_len);
    if (!owner) {
        cb(ud, GR_ENOTHERE, GR__LIT("no membership view yet"));
        return;
    }
    if (!strcmp(owner, r->self)) {
        gr__dir_answer_host(r, id, idl, cb, ud);
        return;
    }
    gr_client_t *peer = gr__peer_get(r, owner);
    gr_ref_t ref = {"$dir", id, idl};
    int rc = peer ? gr__client_call_flags(peer, &ref, "lookup", r->self, strlen(r->self), GR__DIR_TIMEOUT_MS,
                                          GR__FRAME_REQUEST, 0, cb, ud)
                  : GR_ENOTHERE;
    if (rc != 0) cb(ud, rc, GR__LIT("directory owner unreachable"));
}
