/* src/cluster/router.c - routing: the cluster's call path (see docs/directory.md):
 *
 *   cache hit (silo alive) ----------------------------> deliver
 *   else owner = ring(grain); owner == self ? register locally
 *                                           : "$dir register" to the owner
 *   deliver: self -> run here; other -> forward (hop + 1); on "not here",
 *            "shutting down" or a link that failed before the call left,
 *            forget the cache and route again (at most two more attempts).
 *
 * Placement is prefer-local: the silo that asks registers itself, unless it
 * is draining (then the ring owner is preferred). The first live
 * registration wins; the storage version check catches any brief duplicate.
 *
 * The directory protocol (registration, re-registration after a view
 * change, claims, the `$dir` requests peers send) is in registry.c; the
 * peer links are C clients with the silo role (client/client_internal.h).
 */
#include "cluster/router_internal.h"

static int gr__router_lease_cb(void *ud) {
    gr__router_t *r = ud;
    return r->lease_ok(r->lease_ud);
}

/* ---- view helpers ---- */

const gr__member_t *gr__member(const gr__router_t *r, const char *id) {
    for (size_t i = 0; i < r->n_members; i++)
        if (!strcmp(r->members[i].id, id)) return &r->members[i];
    return NULL;
}

/* Alive for the directory: in the view and not dead (a draining silo still
 * hosts its activations until it deactivates them). */
int gr__alive(void *ud, const char *id) {
    const gr__member_t *m = gr__member(ud, id);
    return m && m->status != GR__MS_DEAD;
}

const char *gr__owner(const gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len) {
    int o = gr__ring_owner(&r->ring, gr__grain_hash(cls, key, key_len));
    return o < 0 ? NULL : r->ring_ids[o];
}

const char *gr__router_owner(const gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len) {
    return gr__owner(r, cls, key, key_len);
}

/* ---- peers ---- */

void gr__peer_closed(void *ud) {
    gr__router_t *r = ud;
    r->peers_closing--;
    if (r->closing && r->peers_closing == 0 && !r->peers) {
        void (*cb)(void *) = r->close_cb;
        void *cud = r->close_ud;
        gr__free(r->cluster);
        gr__free(r->secret);
        gr__tls_ctx_unref(r->tls);
        gr__free(r->tls_name);
        gr__free(r);
        if (cb) cb(cud);
    }
}

void gr__peer_drop(gr__router_t *r, gr__peer_t *p) {
    HASH_DEL(r->peers, p);
    r->peers_closing++;
    gr_client_close(p->client, gr__peer_closed, r);
    gr__free(p);
}

gr_client_t *gr__peer_get(gr__router_t *r, const char *id) {
    gr__peer_t *p = NULL;
    HASH_FIND_STR(r->peers, id, p);
    if (p) return p->client;
    const gr__member_t *m = gr__member(r, id);
    if (!m) return NULL;
    char addr[96];
    snprintf(addr, sizeof addr, strchr(m->address, ':') ? "[%s]:%d" : "%s:%d", m->address, m->port);
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = addr;
    o.cluster = r->cluster;
    o.secret = r->secret;
    o.name = r->self;
    o.connect_timeout_ms = 1000;
    p = gr__calloc(1, sizeof *p);
    if (!p) return NULL;
    if (gr_client_new(r->loop, &o, &p->client) != 0) {
        GR__LOG_WARN("peer %s has an unusable address %s", id, addr);
        gr__free(p);
        return NULL;
    }
    gr__client_set_role(p->client, GR__ROLE_SILO);
    if (r->tls) gr__client_set_tls(p->client, r->tls, r->tls_name);
    snprintf(p->id, sizeof p->id, "%s", id);
    HASH_ADD_STR(r->peers, id, p);
    if (gr__hash_oom()) {
        gr_client_close(p->client, NULL, NULL);
        gr__free(p);
        return NULL;
    }
    return p->client;
}

/* ---- delivering a call ---- */

typedef struct gr__fwd {
    gr__router_t *r;
    gr_msg_t *msg;
    int attempt;
    int sent_ready;      /* the link was past its handshake when we queued the call */
    uint64_t handshakes; /* its handshakes then */
    char silo[GR__SILO_ID_MAX + 1];
} gr__fwd_t;

static int gr__should_retry(int status) {
    return status == GR_ENOTHERE || status == GR_ECONN || status == GR_ECANCELED || status == GR_ESHUTDOWN;
}

/* May this forward go elsewhere? "Not here" and "shutting down" are the
 * peer's own answers: it did not run the call. A broken link is different:
 * once the request was written the call may have run, and sending it again
 * would run it twice (a doubled increment), so only a call that never left
 * (the link never got past its handshake since we queued it) is retried;
 * the others go back to the caller as GR_ECONN, retryable in doubt. */
static int gr__forward_may_retry(const gr__fwd_t *f, int status) {
    if (status == GR_ENOTHERE || status == GR_ESHUTDOWN) return 1;
    if (status != GR_ECONN && status != GR_ECANCELED) return 0;
    gr__peer_t *p = NULL;
    HASH_FIND_STR(f->r->peers, f->silo, p);
    return !f->sent_ready && p && gr__client_handshakes(p->client) == f->handshakes;
}

static void gr__forward_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__fwd_t *f = ud;
    gr__router_t *r = f->r;
    if (gr__forward_may_retry(f, status) && f->attempt < 2 && !r->closing) {
        /* Forget where we thought it was and ask the directory again. */
        size_t idl;
        const uint8_t *id = gr__msg_id(f->msg, &idl);
        const char *cached = gr__dir_lookup(&r->cache, id, idl);
        if (cached && !strcmp(cached, f->silo)) gr__dir_unregister(&r->cache, id, idl, f->silo);
        r->stats.forward_retries++;
        gr__route(r, f->msg, f->attempt + 1);
        gr__free(f);
        return;
    }
    if (status == GR_ECANCELED) status = GR_ECONN; /* the link closed: retryable for our caller */
    if (status == GR_ECONN) { /* counted against the peer: said when it leaves the view */
        gr__peer_t *p = NULL;
        HASH_FIND_STR(r->peers, f->silo, p);
        if (p) p->forwards_failed++;
    }
    if (status == GR_EAUTH) {
        /* The peer refused this silo, not the caller: the caller's own
         * credentials are fine, and another silo may serve it. */
        uint64_t now = uv_now(r->loop);
        if (!r->refusal_logged_ms || now - r->refusal_logged_ms >= 10000) {
            r->refusal_logged_ms = now;
            GR__LOG_ERROR(
                "silo %s refuses this silo's handshake: --cluster, --silo-secret (or --secret) or the "
                "TLS certificate differ; this silo reports not ready until they agree",
                f->silo);
        }
        char why[GR__SILO_ID_MAX + 96];
        int n = snprintf(why, sizeof why, "silo %s refuses this silo's handshake (cluster secrets differ)",
                         f->silo);
        gr__runtime_msg_done(r->rt, f->msg, GR_ENOTHERE, (const uint8_t *)why, (size_t)n);
        gr__free(f);
        return;
    }
    gr__runtime_msg_done(r->rt, f->msg, status, reply, len);
    gr__free(f);
}

void gr__deliver(gr__router_t *r, gr_msg_t *m, const char *silo, int attempt) {
    GR__LOG_DEBUG("route %s: deliver to %s (attempt %d, hops %d)", gr__msg_class(m), silo, attempt,
                  gr__msg_hops(m));
    if (!strcmp(silo, r->self)) {
        gr__runtime_run_here(r->rt, m);
        return;
    }
    int hops = gr__msg_hops(m);
    if (hops + 1 > GR__MAX_HOPS) {
        gr__runtime_msg_done(r->rt, m, GR_ENOTHERE, GR__LIT("too many forwards"));
        return;
    }
    gr_client_t *peer = gr__peer_get(r, silo);
    gr__fwd_t *f = gr__malloc(sizeof *f);
    uint32_t remaining = gr__msg_remaining_ms(r->rt, m);
    if (!peer || !f || remaining == 0) {
        gr__free(f);
        gr__runtime_msg_done(r->rt, m, remaining ? GR_ENOTHERE : GR_ETIMEDOUT,
                             (const uint8_t *)"cannot reach the silo hosting the grain", 39);
        return;
    }
    f->r = r;
    f->msg = m;
    f->attempt = attempt;
    f->sent_ready = gr__client_ready(peer);
    f->handshakes = gr__client_handshakes(peer);
    snprintf(f->silo, sizeof f->silo, "%s", silo);
    size_t kl, al;
    const uint8_t *key = gr__msg_key(m, &kl);
    const uint8_t *arg = gr__msg_arg(m, &al);
    size_t chl;
    const uint8_t *chain = gr__msg_chain(m, &chl);
    gr_ref_t ref = {gr__msg_class(m), key, kl};
    r->stats.forwarded++;
    /* HERE: the target activates the grain itself rather than asking the
     * directory again; its claim decides whether it may (docs/directory.md). */
    size_t il;
    const uint8_t *idem = gr__msg_idem(m, &il); /* the grain dedupes wherever it runs */
    int rc = gr__client_call_chain(peer, &ref, gr_msg_method(m), arg, al, remaining, GR__FRAME_REQUEST,
                                   (uint8_t)((hops + 1) | GR__FRAME_F_HERE), chain, chl, idem, il,
                                   gr__forward_done, f);
    if (rc != 0) {
        gr__free(f);
        gr__runtime_msg_done(r->rt, m, rc, NULL, 0);
    }
}

/* ---- asking the directory ---- */

typedef struct gr__dirq {
    gr__router_t *r;
    gr_msg_t *msg;
    int attempt;
} gr__dirq_t;

static void gr__dir_answer(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__dirq_t *q = ud;
    gr__router_t *r = q->r;
    GR__LOG_DEBUG("directory answer: %s %.*s", gr_err_name(status), (int)len, (const char *)reply);
    if (status != 0 || len == 0 || len > GR__SILO_ID_MAX) {
        if (gr__should_retry(status) && q->attempt < 2 && !r->closing) {
            r->stats.forward_retries++;
            gr__route(r, q->msg, q->attempt + 1);
        } else if (status == GR_EAUTH) { /* the directory's owner refuses this silo, not the caller */
            gr__runtime_msg_done(
                r->rt, q->msg, GR_ENOTHERE,
                GR__LIT("the directory owner refuses this silo's handshake (cluster secrets differ)"));
        } else {
            gr__runtime_msg_done(
                r->rt, q->msg, status ? (status == GR_ECANCELED ? GR_ECONN : status) : GR_EPROTO, reply, len);
        }
        gr__free(q);
        return;
    }
    char winner[GR__SILO_ID_MAX + 1];
    memcpy(winner, reply, len);
    winner[len] = '\0';
    size_t idl;
    const uint8_t *id = gr__msg_id(q->msg, &idl);
    gr__dir_put(&r->cache, id, idl, winner);
    gr__deliver(r, q->msg, winner, q->attempt);
    gr__free(q);
}

/* Where a grain that is not registered anywhere should start (the owner
 * keeps an existing live registration whatever we prefer). */
static const char *gr__placement(gr__router_t *r, const gr_msg_t *m, const char *owner) {
    switch (gr__msg_placement(m)) {
    case GR_PLACE_RANDOM:
        if (r->n_ring_ids) { /* active silos only: never a draining one */
            uint64_t x = r->rand_state;
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            r->rand_state = x;
            return r->ring_ids[x % r->n_ring_ids];
        }
        return owner;
    case GR_PLACE_HASH:
        return owner;
    default: /* local, unless we are draining */
        return r->draining ? owner : r->self;
    }
}

void gr__route(gr__router_t *r, gr_msg_t *m, int attempt) {
    if (r->closing) {
        gr__runtime_msg_done(r->rt, m, GR_ESHUTDOWN, GR__LIT("silo is shutting down"));
        return;
    }
    if (r->fenced) {
        static const char why[] = "silo is fenced (cannot reach the membership table)";
        gr__runtime_msg_done(r->rt, m, GR_ENOTHERE, (const uint8_t *)why, sizeof why - 1);
        return;
    }
    if (!r->have_view) {
        GR__LOG_DEBUG("route %s: waiting for a membership view", gr__msg_class(m));
        gr__pending_t *p = gr__malloc(sizeof *p);
        if (!p) {
            gr__runtime_msg_done(r->rt, m, GR_ENOMEM, NULL, 0);
            return;
        }
        p->msg = m;
        p->next = r->waiting;
        r->waiting = p;
        return;
    }
    size_t idl, kl;
    const uint8_t *id = gr__msg_id(m, &idl);
    const uint8_t *key = gr__msg_key(m, &kl);
    const char *cached = gr__dir_lookup(&r->cache, id, idl);
    if (cached && gr__alive(r, cached) && !(r->draining && !strcmp(cached, r->self))) {
        gr__deliver(r, m, cached, attempt);
        return;
    }
    const char *owner = gr__owner(r, gr__msg_class(m), key, kl);
    if (!owner) {
        /* No active silo in the view (we are the last one, draining). */
        gr__runtime_msg_done(r->rt, m, GR_ESHUTDOWN, GR__LIT("no active silo can host the grain"));
        return;
    }
    const char *preferred = gr__placement(r, m, owner);
    if (!strcmp(owner, r->self)) {
        char winner[GR__SILO_ID_MAX + 1];
        if (gr__dir_register(&r->partition, id, idl, preferred, gr__alive, r, winner) != 0) {
            gr__runtime_msg_done(r->rt, m, GR_ENOMEM, NULL, 0);
            return;
        }
        gr__dir_put(&r->cache, id, idl, winner);
        gr__deliver(r, m, winner, attempt);
        return;
    }
    gr_client_t *peer = gr__peer_get(r, owner);
    gr__dirq_t *q = gr__malloc(sizeof *q);
    if (!peer || !q) {
        gr__free(q);
        gr__runtime_msg_done(r->rt, m, GR_ENOTHERE, GR__LIT("directory owner unreachable"));
        return;
    }
    q->r = r;
    q->msg = m;
    q->attempt = attempt;
    gr_ref_t ref = {"$dir", id, idl};
    r->stats.dir_requests_sent++;
    int rc = gr__client_call_flags(peer, &ref, "register", preferred, strlen(preferred), GR__DIR_TIMEOUT_MS,
                                   GR__FRAME_REQUEST, 0, gr__dir_answer, q);
    if (rc != 0) {
        gr__free(q);
        gr__runtime_msg_done(r->rt, m, rc, NULL, 0);
    }
}

static void gr__router_route_cb(void *ud, gr_msg_t *m) { gr__route(ud, m, 0); }

void gr__router_set_draining(gr__router_t *r, int on) { r->draining = on; }

void gr__router_set_fenced(gr__router_t *r, int on) {
    r->fenced = on;
    /* The cache is only hints. The partition is kept: it holds other silos'
     * live activations, and after a short fence (the database was briefly
     * gone) nothing would re-register them, so a call placed afresh could
     * start a second activation beside one that is still serving. If we are
     * declared dead instead, this process exits and the partition with it. */
    if (on) gr__dir_clear(&r->cache);
}

const char *gr__router_refused_by(const gr__router_t *r) {
    uint64_t now = uv_now(r->loop);
    const char *first = NULL;
    size_t refusing = 0, others = 0;
    for (size_t i = 0; i < r->n_members; i++)
        if (r->members[i].status == GR__MS_ACTIVE && strcmp(r->members[i].id, r->self) != 0) others++;
    const gr__peer_t *p, *tmp;
    HASH_ITER(hh, r->peers, p, tmp) {
        uint64_t at = gr__client_refused_at(p->client);
        if (at && now - at < GR__REFUSED_WINDOW_MS && gr__alive((void *)r, p->id)) {
            refusing++;
            if (!first) first = p->id;
        }
    }
    /* Refused by most of the others, this silo is the odd one out (its
     * settings differ from theirs): it is the one to report not ready. One
     * misconfigured pod refusing everybody must not take the healthy ones
     * out. With two silos each is refused by "most": both report it. */
    return refusing && refusing * 2 > others ? first : NULL;
}

void gr__router_get_stats(const gr__router_t *r, gr__router_stats_t *out) {
    *out = r->stats;
    out->partition_entries = r->partition.n;
    out->cache_entries = r->cache.n;
}

int gr__router_new(uv_loop_t *loop, gr_runtime_t *rt, const char *self_id, const char *cluster,
                   const char *secret, gr__router_t **out) {
    if (strlen(self_id) > GR__SILO_ID_MAX) return GR_EINVAL;
    gr__router_t *r = gr__calloc(1, sizeof *r);
    if (!r) return GR_ENOMEM;
    r->cluster = gr__strdup(cluster);
    r->secret = gr__strdup(secret ? secret : "");
    if (!r->cluster || !r->secret) {
        gr__free(r->cluster);
        gr__free(r->secret);
        gr__free(r);
        return GR_ENOMEM;
    }
    r->loop = loop;
    r->rt = rt;
    snprintf(r->self, sizeof r->self, "%s", self_id);
    /* Silos started at the same instant still pick differently. */
    r->rand_state = gr__hash64(self_id, strlen(self_id), uv_hrtime()) | 1;
    uv_timer_init(loop, &r->rereg_timer);
    r->rereg_timer.data = r;
    gr__runtime_set_router(rt, gr__router_route_cb, gr__router_gone_cb, r);
    *out = r;
    return 0;
}

int gr__router_set_tls(gr__router_t *r, gr__tls_ctx_t *ctx, const char *server_name) {
    /* The name is configuration, fixed for the silo's life: copied once,
     * and the peers borrow it. */
    if (server_name && !r->tls_name && !(r->tls_name = gr__strdup(server_name))) return GR_ENOMEM;
    /* Links already up keep their session; each uses ctx from its next
     * connection on (a reload must not drop calls in flight). */
    gr__peer_t *p, *tmp;
    HASH_ITER(hh, r->peers, p, tmp) gr__client_set_tls(p->client, ctx, r->tls_name);
    if (ctx) gr__tls_ctx_ref(ctx);
    gr__tls_ctx_unref(r->tls);
    r->tls = ctx;
    return 0;
}

void gr__router_install_hooks(gr__router_t *r) {
    gr__cluster_hooks_t h = {gr__router_lease_cb, gr__router_held_cb, gr__router_claimed_cb,
                             r->migration.on ? gr__router_migrate_cb : NULL, r};
    gr__runtime_set_cluster(r->rt, r->lease_ok ? &h : NULL);
}

void gr__router_set_lease(gr__router_t *r, int (*lease_ok)(void *ud), void *ud) {
    r->lease_ok = lease_ok;
    r->lease_ud = ud;
    gr__router_install_hooks(r);
}

uint64_t gr__router_mean_load(const gr__router_t *r) { return r->migration.last_mean; }
uint64_t gr__router_mean_cps(const gr__router_t *r) { return r->migration.last_mean_cps; }
uint64_t gr__router_cps(const gr__router_t *r) { return (uint64_t)r->migration.cps; }

static void gr__rereg_timer_closed(uv_handle_t *h) { gr__peer_closed(h->data); }

void gr__router_close(gr__router_t *r, void (*cb)(void *), void *ud) {
    assert(!r->closing);
    r->closing = 1;
    r->close_cb = cb;
    r->close_ud = ud;
    gr__runtime_set_router(r->rt, NULL, NULL, NULL);
    /* Claims stay on: activations still ending must release theirs, and
     * no reply may leave without a lease while the silo closes. Only the
     * router's part goes (calls held elsewhere fail). */
    if (r->lease_ok) { /* the silo's own function: the router's memory goes before the runtime's */
        gr__cluster_hooks_t h = {r->lease_ok, NULL, NULL, NULL, r->lease_ud};
        gr__runtime_set_cluster(r->rt, &h);
    }
    while (r->waiting) {
        gr__pending_t *p = r->waiting;
        r->waiting = p->next;
        gr__runtime_msg_done(r->rt, p->msg, GR_ESHUTDOWN, NULL, 0);
        gr__free(p);
    }
    while (r->rereg_retry) {
        gr__rereg_t *q = r->rereg_retry;
        r->rereg_retry = q->next;
        gr__free(q);
    }
    r->peers_closing++; /* released by the timer's close callback */
    uv_close((uv_handle_t *)&r->rereg_timer, gr__rereg_timer_closed);
    gr__migration_close(r, gr__rereg_timer_closed);
    gr__dir_clear(&r->partition);
    gr__dir_clear(&r->cache);
    gr__free(r->members);
    gr__free(r->ring_ids);
    gr__ring_free(&r->ring);
    r->members = NULL;
    r->n_members = 0;
    gr__peer_t *p, *tmp;
    r->peers_closing++; /* hold: freeing happens after the last peer closes */
    HASH_ITER(hh, r->peers, p, tmp) gr__peer_drop(r, p);
    gr__peer_closed(r);
}
