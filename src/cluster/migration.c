/* src/cluster/migration.c - live migration over the silo-to-silo links
 * (docs/migration.md): sending an activation to the silo that hosts it
 * next, the `$mig` requests peers send us (take an activation over, report
 * our load), and rebalancing: a timer that asks every active member for
 * its activation count and moves a bounded number of ours toward the ones
 * below the mean. The runtime (src/runtime/migrate.c) does the freezing,
 * encoding and starting; this file only chooses targets and carries bytes. */
#include "cluster/router_internal.h"

/* A migration call's timeout: past it the outcome is unknown and the
 * source drops its activation (docs/migration.md). */
#define GR__MIG_TIMEOUT_MS 5000u
/* Rebalancing: how often loads are compared, and how far from the mean a
 * silo may be before anything moves (a fraction, in percent, plus one). */
#define GR__REBALANCE_TICK_MS 250u
#define GR__REBALANCE_SLACK_PCT 5u
#define GR__MIG_ROUND_MAX 1024u /* moves one round starts at most: the runtime's in-flight bound */
#define GR__LOAD_TIMEOUT_MS 900u
/* How long a target whose migration had an unknown outcome is left alone. */
#define GR__SHUN_MS 10000u

typedef struct gr__mig_out {
    gr__router_t *r;
    gr_call_cb cb;
    void *ud;
    char target[GR__SILO_ID_MAX + 1];
    size_t id_len;
    uint8_t id[];
} gr__mig_out_t;

/* The silo that hosts a grain next: its ring owner, or, while our own view
 * still counts us active (a drain has just begun), the next other member. */
static const char *gr__next_host(gr__router_t *r, const char *cls, const uint8_t *key, size_t kl) {
    const char *owner = gr__owner(r, cls, key, kl);
    if (owner && strcmp(owner, r->self) != 0) return owner;
    if (r->n_ring_ids < 2) return NULL;
    uint64_t h = gr__grain_hash(cls, key, kl);
    for (size_t i = 0; i < r->n_ring_ids; i++) {
        const char *id = r->ring_ids[(h + i) % r->n_ring_ids];
        if (strcmp(id, r->self) != 0) return id;
    }
    return NULL;
}

static int gr__shunned(gr__router_t *r, const char *id) {
    uint64_t now = uv_now(r->loop);
    for (size_t i = 0; i < sizeof r->migration.shunned / sizeof r->migration.shunned[0]; i++)
        if (r->migration.shunned[i].until > now && !strcmp(r->migration.shunned[i].id, id)) return 1;
    return 0;
}

static void gr__shun(gr__router_t *r, const char *id) {
    size_t n = sizeof r->migration.shunned / sizeof r->migration.shunned[0], pick = 0;
    for (size_t i = 0; i < n; i++) { /* the same id, else the entry that ends first */
        if (!strcmp(r->migration.shunned[i].id, id)) {
            pick = i;
            break;
        }
        if (r->migration.shunned[i].until < r->migration.shunned[pick].until) pick = i;
    }
    snprintf(r->migration.shunned[pick].id, sizeof r->migration.shunned[pick].id, "%s", id);
    r->migration.shunned[pick].until = uv_now(r->loop) + GR__SHUN_MS;
}

static void gr__mig_sent(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__mig_out_t *m = ud;
    gr__router_t *r = m->r;
    if (status == 0 && !r->closing) {
        /* Before the runtime hears: the calls it queued are routed now. */
        gr__dir_put(&r->cache, m->id, m->id_len, m->target);
        r->stats.migrations_sent++;
    } else if (status != 0 && !gr__migrate_refused(status, reply, len) && !r->closing) {
        gr__shun(r, m->target);
    }
    m->cb(m->ud, status, reply, len);
    gr__free(m);
}

int gr__router_migrate_cb(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *target,
                          const uint8_t *payload, size_t len, gr_call_cb cb, void *cb_ud) {
    gr__router_t *r = ud;
    if (r->closing || r->fenced || !r->have_view) return GR_ESHUTDOWN;
    if (!target) target = gr__next_host(r, cls, key, key_len);
    if (!target || !strcmp(target, r->self) || !gr__alive(r, target) || gr__shunned(r, target))
        return GR_ENOTHERE;
    gr_client_t *peer = gr__peer_get(r, target);
    size_t cl = strlen(cls);
    gr__mig_out_t *m = peer ? gr__malloc(sizeof *m + cl + 1 + key_len) : NULL;
    if (!m) return peer ? GR_ENOMEM : GR_ENOTHERE;
    m->r = r;
    m->cb = cb;
    m->ud = cb_ud;
    snprintf(m->target, sizeof m->target, "%s", target);
    memcpy(m->id, cls, cl + 1);
    if (key_len) memcpy(m->id + cl + 1, key, key_len);
    m->id_len = cl + 1 + key_len;
    gr_ref_t ref = {"$mig", m->id, m->id_len};
    int rc = gr__client_call_flags(peer, &ref, "in", payload, len, GR__MIG_TIMEOUT_MS, GR__FRAME_REQUEST, 0,
                                   gr__mig_sent, m);
    if (rc != 0) gr__free(m);
    return rc;
}

/* ---- requests from peers ---- */

void gr__router_migration_call(gr__router_t *r, const char *peer, const char *method, const uint8_t *key,
                               size_t key_len, const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud) {
    if (!strcmp(method, "load")) {
        /* "COUNT", or "COUNT CALLS_PER_S" when asked with the argument
         * "calls" (a silo of an older version answers the count alone). */
        char n[64];
        int k = arg_len == 5 && !memcmp(arg, "calls", 5)
                    ? snprintf(n, sizeof n, "%zu %.0f", gr__runtime_movable_count(r->rt), r->migration.cps)
                    : snprintf(n, sizeof n, "%zu", gr__runtime_movable_count(r->rt));
        done(ud, 0, (const uint8_t *)n, (size_t)k);
        return;
    }
    if (strcmp(method, "in") != 0) {
        done(ud, GR_ENOMETHOD, GR__LIT("unknown migration method (in, load)"));
        return;
    }
    if (!r->migration.on) {
        done(ud, GR_ESHUTDOWN, GR__LIT(GR__MIG_REFUSAL "live migration is off on this silo"));
        return;
    }
    /* The key is the grain id: class, NUL, key. */
    const uint8_t *nul = key_len ? memchr(key, 0, key_len) : NULL;
    size_t cl = nul ? (size_t)(nul - key) : 0;
    if (!nul || cl == 0 || cl > GR_CLASS_NAME_MAX) {
        done(ud, GR_EPROTO, GR__LIT(GR__MIG_REFUSAL "the key is not a grain id"));
        return;
    }
    char cls[GR_CLASS_NAME_MAX + 1];
    memcpy(cls, key, cl);
    cls[cl] = '\0';
    r->stats.migrations_received++;
    gr__runtime_migrate_in(r->rt, peer, cls, key + cl + 1, key_len - cl - 1, arg, arg_len, done, ud);
}

/* ---- rebalancing ---- */

typedef struct gr__load_q {
    gr__router_t *r;
    uint64_t round;
    size_t index;
} gr__load_q_t;

/* This silo's calls per second (calls run here) over the last tick. Not
 * smoothed: a round of moves by calls must see the effect of the last
 * round, or it moves again what already went. */
static void gr__rebalance_measure(gr__router_t *r) {
    gr__migration_t *mg = &r->migration;
    gr__runtime_stats_t st;
    gr__runtime_get_stats(r->rt, &st);
    uint64_t now = uv_now(r->loop);
    if (mg->calls_prev_ms && now > mg->calls_prev_ms) {
        double inst = (double)(st.calls_run - mg->calls_prev) * 1000.0 / (double)(now - mg->calls_prev_ms);
        mg->cps = inst;
    }
    mg->calls_prev = st.calls_run;
    mg->calls_prev_ms = now;
}

static void gr__rebalance_decide(gr__router_t *r) {
    gr__migration_t *mg = &r->migration;
    size_t n = 0;
    uint64_t count = gr__runtime_movable_count(r->rt);
    /* What is balanced: activation counts, or (by calls) calls per second. */
    uint64_t total = 0, mine = mg->by_calls ? (uint64_t)mg->cps : count;
    if (mg->by_calls)
        for (size_t i = 0; i < mg->n_loads; i++)
            mg->loads[i].count = mg->loads[i].cps;
    for (size_t i = 0; i < mg->n_loads; i++)
        if (mg->loads[i].answered) n++, total += mg->loads[i].count;
    if (!n) return;
    n++; /* ourselves */
    total += mine;
    uint64_t mean = total / n, slack = mean * GR__REBALANCE_SLACK_PCT / 100 + 1;
    if (mg->by_calls)
        mg->last_mean_cps = mean;
    else
        mg->last_mean = mean;
    if (mine <= mean + slack) return;
    /* Moves of the last round still on their way count on neither side
     * yet: deciding now would send their share twice. */
    if (gr__runtime_migrations_in_flight(r->rt)) return;
    /* Every silo above the mean gives its share of each deficit: several
     * donors together fill a deficit once, not once each. */
    uint64_t surplus = 0, over = mine - mean;
    for (size_t i = 0; i < mg->n_loads; i++)
        if (mg->loads[i].answered && mg->loads[i].count > mean) surplus += mg->loads[i].count - mean;
    surplus += over;
    uint64_t budget = mg->credit_m / 1000;
    if (budget > GR__MIG_ROUND_MAX) budget = GR__MIG_ROUND_MAX;
    size_t short_ones = 0;
    for (size_t i = 0; i < mg->n_loads; i++)
        short_ones += mg->loads[i].answered && mg->loads[i].count + slack < mean && gr__alive(r, mg->loads[i].id);
    /* Each silo short of the mean gets its part of this round's budget, so
     * none waits for another's deficit to be filled first. */
    uint64_t part = short_ones ? budget / short_ones : 0;
    if (short_ones && part == 0 && budget) part = 1;
    for (size_t i = 0; i < mg->n_loads && budget && over; i++) {
        if (!mg->loads[i].answered || mg->loads[i].count + slack >= mean) continue;
        if (!gr__alive(r, mg->loads[i].id)) continue;
        uint64_t want = (mean - mg->loads[i].count) * over / surplus;
        /* By calls: one activation per round and silo short of the mean,
         * the busiest first. How many calls one carries is not known (a
         * hot spot is a few grains among many idle ones), so the next round
         * measures what this one moved before moving more. */
        if (mg->by_calls) want = 1;
        if (want < 1) want = 1;
        if (want > part) want = part;
        if (want > budget) want = budget;
        size_t moved =
            gr__runtime_migrate_some(r->rt, mg->loads[i].id, (size_t)want, mg->window_ms, mg->by_calls);
        r->stats.rebalance_moves += moved;
        budget -= moved < budget ? moved : budget;
        over -= moved < over ? moved : over;
        mg->credit_m -= moved * 1000 < mg->credit_m ? moved * 1000 : mg->credit_m;
    }
}

static void gr__load_answer(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__load_q_t *q = ud;
    gr__router_t *r = q->r;
    gr__migration_t *mg = &r->migration;
    if (!r->closing && q->round == mg->round && q->index < mg->n_loads) {
        if (status == 0 && len > 0 && len < 48) {
            char buf[48];
            memcpy(buf, reply, len);
            buf[len] = '\0';
            char *end, *end2 = NULL;
            unsigned long long v = strtoull(buf, &end, 10), c = 0;
            if (*end == ' ') c = strtoull(end + 1, &end2, 10);
            /* By calls, a peer must say its rate (an older one does not:
             * left out of the comparison). */
            if (end != buf && (mg->by_calls ? end2 && end2 != end + 1 && *end2 == '\0' : *end == '\0' || *end == ' ')) {
                mg->loads[q->index].count = v;
                mg->loads[q->index].cps = c;
                mg->loads[q->index].answered = 1;
            }
        }
        if (--mg->waiting == 0) gr__rebalance_decide(r);
    }
    gr__free(q);
}

static void gr__rebalance_tick(uv_timer_t *t) {
    gr__router_t *r = t->data;
    gr__migration_t *mg = &r->migration;
    mg->round++;
    mg->waiting = 0;
    mg->n_loads = 0;
    gr__rebalance_measure(r);
    /* The rate accrues whether or not a round moves anything, up to one
     * second's worth (a silo that joins later gets no burst beyond it). */
    mg->credit_m += (uint64_t)mg->rate * GR__REBALANCE_TICK_MS;
    if (mg->credit_m > (uint64_t)mg->rate * 1000) mg->credit_m = (uint64_t)mg->rate * 1000;
    if (r->closing || r->draining || r->fenced || !r->have_view || !mg->on || !mg->rate ||
        r->n_ring_ids < 2 || (r->lease_ok && !r->lease_ok(r->lease_ud)))
        return;
    if (mg->cap < r->n_ring_ids) {
        gr__load_t *nl = gr__realloc(mg->loads, r->n_ring_ids * sizeof *nl);
        if (!nl) return;
        mg->loads = nl;
        mg->cap = r->n_ring_ids;
    }
    for (size_t i = 0; i < r->n_ring_ids; i++) {
        if (!strcmp(r->ring_ids[i], r->self)) continue;
        gr__load_t *l = &mg->loads[mg->n_loads];
        snprintf(l->id, sizeof l->id, "%s", r->ring_ids[i]);
        l->answered = 0;
        l->count = 0;
        mg->n_loads++;
    }
    /* All questions leave before the first answer can be counted. */
    mg->waiting = mg->n_loads + 1;
    for (size_t i = 0; i < mg->n_loads; i++) {
        gr__load_q_t *q = gr__malloc(sizeof *q);
        gr_client_t *peer = q ? gr__peer_get(r, mg->loads[i].id) : NULL;
        gr_ref_t ref = {"$mig", NULL, 0};
        if (q) *q = (gr__load_q_t){r, mg->round, i};
        const char *arg = mg->by_calls ? "calls" : NULL;
        if (!peer || gr__client_call_flags(peer, &ref, "load", (const uint8_t *)arg, arg ? 5 : 0,
                                           GR__LOAD_TIMEOUT_MS, GR__FRAME_REQUEST,
                                           0, gr__load_answer, q) != 0) {
            gr__free(q);
            mg->waiting--;
        }
    }
    if (--mg->waiting == 0) gr__rebalance_decide(r);
}

void gr__router_set_rebalance_by_calls(gr__router_t *r, int on) { r->migration.by_calls = on; }

int gr__router_set_migration(gr__router_t *r, int on, uint32_t rate, uint32_t window_ms) {
    gr__migration_t *mg = &r->migration;
    mg->on = on;
    mg->rate = on ? rate : 0;
    mg->window_ms = window_ms;
    if (!mg->timer_on) {
        uv_timer_init(r->loop, &mg->timer);
        mg->timer.data = r;
        mg->timer_on = 1;
    }
    if (mg->rate)
        uv_timer_start(&mg->timer, gr__rebalance_tick, GR__REBALANCE_TICK_MS, GR__REBALANCE_TICK_MS);
    else
        uv_timer_stop(&mg->timer);
    gr__router_install_hooks(r);
    return 0;
}

void gr__migration_close(gr__router_t *r, uv_close_cb closed) {
    gr__migration_t *mg = &r->migration;
    mg->round++; /* answers still coming are ignored */
    gr__free(mg->loads);
    mg->loads = NULL;
    mg->n_loads = mg->cap = 0;
    if (!mg->timer_on) return;
    r->peers_closing++; /* released by the timer's close callback */
    uv_close((uv_handle_t *)&mg->timer, closed);
}
