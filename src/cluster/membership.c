/* src/cluster/membership.c - membership through the granary_silo table.
 *
 * Each tick (heartbeat_ms) is one round trip that both heartbeats and reads
 * every live member with its heartbeat age by the database clock, counted
 * from the database's own start at the earliest: after a database restart
 * every silo gets a whole lease to reconnect before anyone judges it. Members
 * silent for longer than lease_ms are declared dead by a conditional UPDATE
 * (one silo wins). We fence ourselves when our own heartbeat has not
 * succeeded for lease_ms. Membership has its own connection, so a pool busy
 * with grain state never delays heartbeats.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "cluster/membership.h"

struct gr__membership {
    uv_loop_t *loop;
    gr__pgpool_t *pool;
    gr__membership_opts_t opts;
    char cluster[256], silo_id[128], address[64];
    char port_s[16], gen_s[24], lease_s[24];
    gr__membership_cbs_t cbs;
    uv_timer_t tick;
    uv_timer_t fence_timer; /* fires when the lease since the last good heartbeat runs out */
    int tick_in_flight;
    int join_in_flight;
    unsigned join_failures;
    int joined;             /* our row exists */
    int active;             /* we asked to become active */
    int status;             /* our last known status */
    uint64_t last_ok_sent;  /* send time of the last successful heartbeat */
    uint64_t join_sent;     /* send time of the join in flight */
    uint64_t healthy_since; /* start of the current run of successful ticks */
    int fenced;
    int dead_reported;
    gr__view_t view;
    void (*join_cb)(void *, int);
    void *join_ud;
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

static const char *const gr__status_names[] = {"joining", "active", "shutting_down", "dead"};

const char *gr__member_status_name(gr__member_status_t s) {
    return (unsigned)s < 4 ? gr__status_names[s] : "unknown";
}

static gr__member_status_t gr__parse_status(const char *s) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, gr__status_names[i])) return (gr__member_status_t)i;
    return GR__MS_DEAD;
}

static const char GR__SQL_JOIN[] =
    "WITH v AS (INSERT INTO granary_membership_version (cluster, version) VALUES ($1, 1) "
    "           ON CONFLICT (cluster) DO UPDATE SET version = granary_membership_version.version + 1 "
    "           RETURNING version), "
    "     old AS (UPDATE granary_silo SET status = 'dead' WHERE cluster = $1 AND address = $3 "
    "             AND port = $4::int AND silo_id <> $2 AND status <> 'dead' RETURNING silo_id), "
    "     ins AS (INSERT INTO granary_silo (cluster, silo_id, address, port, generation, status, lease_ms) "
    "             VALUES ($1, $2, $3, $4::int, $5::bigint, 'joining', $6::int) "
    "             ON CONFLICT (cluster, silo_id) DO UPDATE SET status = 'joining', heartbeat_at = now() "
    "             WHERE granary_silo.status <> 'dead' AND granary_silo.generation = excluded.generation "
    "             RETURNING 1) "
    "SELECT (SELECT version FROM v), (SELECT count(*) FROM old), (SELECT count(*) FROM ins), "
    "       (SELECT status FROM granary_silo WHERE cluster = $1 AND silo_id = $2)";

/* Leaving (status dead) also releases every activation claim we still hold:
 * the grains were all deactivated first, and their new hosts must not wait
 * for our lease to run out. (Claims live in the grain database; the silo's
 * rows there are membership's to end.) */
static const char GR__SQL_SET_STATUS[] =
    "WITH rel AS (UPDATE granary_activation SET silo_id = '', token = 0 "
    "             WHERE service = $1 AND silo_id = $2 AND $3 = 'dead'), "
    "     u AS (UPDATE granary_silo SET status = $3, heartbeat_at = now() "
    "           WHERE cluster = $1 AND silo_id = $2 AND status <> 'dead' RETURNING 1) "
    "UPDATE granary_membership_version SET version = version + 1 "
    "WHERE cluster = $1 AND EXISTS (SELECT 1 FROM u) RETURNING version";

static const char GR__SQL_TICK[] =
    "WITH hb AS (UPDATE granary_silo SET heartbeat_at = now() "
    "            WHERE cluster = $1 AND silo_id = $2 AND status <> 'dead' RETURNING status) "
    "SELECT s.silo_id, s.address, s.port, s.status, "
    "       (extract(epoch FROM (now() - greatest(s.heartbeat_at, pg_postmaster_start_time()))) * "
    "1000)::bigint, "
    "       (SELECT status FROM hb), "
    "       coalesce((SELECT version FROM granary_membership_version WHERE cluster = $1), 0), s.lease_ms "
    "FROM granary_silo s WHERE s.cluster = $1 AND s.status <> 'dead' ORDER BY s.silo_id";

static const char GR__SQL_DECLARE_DEAD[] =
    "WITH d AS (UPDATE granary_silo SET status = 'dead' "
    "           WHERE cluster = $1 AND silo_id = $2 AND status <> 'dead' "
    "           AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - (lease_ms * interval '1 "
    "millisecond') "
    "           RETURNING 1) "
    "UPDATE granary_membership_version SET version = version + 1 "
    "WHERE cluster = $1 AND EXISTS (SELECT 1 FROM d) RETURNING version";

static void gr__ms_fence(gr__membership_t *m, int fenced, const char *why) {
    if (m->fenced == fenced) return;
    m->fenced = fenced;
    if (fenced)
        GR__LOG_ERROR("fencing: %s; not serving grains until heartbeats succeed", why);
    else
        GR__LOG_INFO("unfenced: heartbeats succeed again");
    if (m->cbs.on_fence) m->cbs.on_fence(m->cbs.ud, fenced, why);
}

static int gr__view_equal(const gr__view_t *a, const gr__member_t *b, size_t n) {
    if (a->n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->members[i].id, b[i].id) || a->members[i].status != b[i].status ||
            a->members[i].port != b[i].port || strcmp(a->members[i].address, b[i].address))
            return 0;
    return 1;
}

static void gr__ms_declared(void *ud, int status, PGresult *res, const char *detail) {
    (void)ud;
    if (status == 0 && PQntuples(res) > 0)
        GR__LOG_INFO("declared a silent silo dead (view %s)", PQgetvalue(res, 0, 0));
}

static void gr__ms_declare_dead(gr__membership_t *m, const gr__member_t *who) {
    char silent[24], lease[24];
    snprintf(silent, sizeof silent, "%" PRId64, who->age_ms);
    snprintf(lease, sizeof lease, "%" PRId64, who->lease_ms);
    const char *f[] = {"peer", who->id, "silent_ms", silent, "lease_ms", lease, NULL};
    gr__log_fields(GR_LOG_LEVEL_WARN, f,
                   "silo %s silent for %" PRId64 " ms (its lease %" PRId64 " ms): declaring it dead", who->id,
                   who->age_ms, who->lease_ms);
    const char *p[2] = {m->cluster, who->id};
    gr__pgpool_query(m->pool, GR__SQL_DECLARE_DEAD, 2, p, NULL, NULL, 0, gr__ms_declared, m);
}

static void gr__ms_tick_done(void *ud, int status, PGresult *res, const char *detail);
static void gr__ms_send_join(gr__membership_t *m);

static void gr__ms_set_status_query(gr__membership_t *m, gr__member_status_t st, gr__pg_result_cb cb,
                                    void *ud) {
    const char *p[3] = {m->cluster, m->silo_id, gr__status_names[st]};
    if (gr__pgpool_query(m->pool, GR__SQL_SET_STATUS, 3, p, NULL, NULL, 0, cb, ud) != 0)
        cb(ud, GR_ESTORAGE, NULL, "cannot queue the status change");
}

static void gr__ms_activated(void *ud, int status, PGresult *res, const char *detail) {
    gr__membership_t *m = ud;
    if (status != 0) {
        m->active = 0; /* retried on the next tick; join_cb still waits */
        GR__LOG_WARN("becoming active failed: %s", detail);
        return;
    }
    m->status = GR__MS_ACTIVE;
    GR__LOG_INFO("joined the cluster as active");
    void (*cb)(void *, int) = m->join_cb;
    m->join_cb = NULL;
    if (cb) cb(m->join_ud, 0);
}

typedef struct gr__ms_tick {
    gr__membership_t *m;
    uint64_t sent; /* loop time the heartbeat left: the conservative lease start */
} gr__ms_tick_t;

/* Fence exactly when the lease runs out, not at the next tick: another silo
 * may declare us dead as soon as our age passes the lease, and we must have
 * stopped serving by then. */
static void gr__ms_fence_due(uv_timer_t *t) {
    gr__membership_t *m = t->data;
    uint64_t now = uv_now(m->loop);
    if (m->joined && !m->closing && now - m->last_ok_sent >= m->opts.lease_ms) {
        char why[128];
        snprintf(why, sizeof why, "no successful heartbeat for %llu ms (lease %u ms)",
                 (unsigned long long)(now - m->last_ok_sent), (unsigned)m->opts.lease_ms);
        m->healthy_since = 0;
        gr__ms_fence(m, 1, why);
    }
}

static void gr__ms_arm_fence(gr__membership_t *m) {
    uint64_t now = uv_now(m->loop), end = m->last_ok_sent + m->opts.lease_ms;
    uv_timer_start(&m->fence_timer, gr__ms_fence_due, end > now ? end - now : 0, 0);
}

static void gr__ms_tick_cb(uv_timer_t *t) {
    gr__membership_t *m = t->data;
    uint64_t now = uv_now(m->loop);
    if (m->joined && now - m->last_ok_sent > m->opts.lease_ms) {
        char why[128];
        snprintf(why, sizeof why, "no successful heartbeat for %llu ms (lease %u ms)",
                 (unsigned long long)(now - m->last_ok_sent), (unsigned)m->opts.lease_ms);
        m->healthy_since = 0;
        gr__ms_fence(m, 1, why);
    }
    if (m->closing) return;
    if (!m->joined) {
        if (!m->join_in_flight) gr__ms_send_join(m);
        return;
    }
    if (m->tick_in_flight) return;
    gr__ms_tick_t *tk = gr__malloc(sizeof *tk);
    if (!tk) return;
    tk->m = m;
    tk->sent = now;
    const char *p[2] = {m->cluster, m->silo_id};
    if (gr__pgpool_query(m->pool, GR__SQL_TICK, 2, p, NULL, NULL, 0, gr__ms_tick_done, tk) == 0)
        m->tick_in_flight = 1;
    else
        gr__free(tk);
}

static void gr__ms_tick_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__ms_tick_t *tk = ud;
    gr__membership_t *m = tk->m;
    uint64_t sent = tk->sent;
    gr__free(tk);
    m->tick_in_flight = 0;
    if (status != 0 || m->closing) {
        if (status != 0 && status != GR_ECANCELED) GR__LOG_DEBUG("heartbeat failed: %s", detail);
        return;
    }
    int rows = PQntuples(res);
    const char *mine = rows ? PQgetvalue(res, 0, 5) : "";
    if (rows == 0 || PQgetisnull(res, 0, 5) || !strcmp(mine, "dead")) {
        /* Our row is gone or dead: someone declared us dead. */
        if (!m->dead_reported) {
            m->dead_reported = 1;
            GR__LOG_ERROR("this silo was declared dead by the cluster; it must not serve grains any more");
            gr__ms_fence(m, 1, "declared dead by the cluster");
            if (m->cbs.on_dead) m->cbs.on_dead(m->cbs.ud);
        }
        return;
    }
    m->last_ok_sent = sent;
    if (!m->healthy_since) m->healthy_since = sent;
    gr__ms_arm_fence(m);
    gr__ms_fence(m, 0, NULL);

    gr__member_t *mem = gr__calloc((size_t)rows, sizeof *mem);
    if (!mem) return;
    for (int i = 0; i < rows; i++) {
        snprintf(mem[i].id, sizeof mem[i].id, "%s", PQgetvalue(res, i, 0));
        snprintf(mem[i].address, sizeof mem[i].address, "%s", PQgetvalue(res, i, 1));
        mem[i].port = atoi(PQgetvalue(res, i, 2));
        mem[i].status = gr__parse_status(PQgetvalue(res, i, 3));
        mem[i].age_ms = strtoll(PQgetvalue(res, i, 4), NULL, 10);
        mem[i].lease_ms = strtoll(PQgetvalue(res, i, 7), NULL, 10);
    }
    int64_t version = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
    /* Declare silent silos dead, but only after we ourselves have been
     * heartbeating for a whole lease: after a database outage every silo
     * looks silent, and the first one back must not evict the others. */
    uint64_t now = uv_now(m->loop);
    int can_judge = now - m->healthy_since >= m->opts.lease_ms;
    for (int i = 0; i < rows; i++)
        if (can_judge && strcmp(mem[i].id, m->silo_id) && mem[i].age_ms > mem[i].lease_ms)
            gr__ms_declare_dead(m, &mem[i]);
    if (!gr__view_equal(&m->view, mem, (size_t)rows) || m->view.version != version) {
        int changed = !gr__view_equal(&m->view, mem, (size_t)rows);
        gr__member_t *old = m->view.members; /* freed below, after the log line compares */
        size_t old_n = m->view.n;
        m->view.members = mem;
        m->view.n = (size_t)rows;
        m->view.version = version;
        if (changed) {
            /* Who came and who went, as fields an operator can filter on. */
            char joined[512] = "", left[512] = "", ver[24], live[24];
            for (int i = 0; i < rows; i++) {
                int known = 0;
                for (size_t j = 0; j < old_n && !known; j++)
                    known = !strcmp(old[j].id, mem[i].id);
                if (!known && strlen(joined) + strlen(mem[i].id) + 2 < sizeof joined)
                    strcat(strcat(joined, joined[0] ? "," : ""), mem[i].id);
            }
            for (size_t j = 0; j < old_n; j++) {
                int still = 0;
                for (int i = 0; i < rows && !still; i++)
                    still = !strcmp(old[j].id, mem[i].id);
                if (!still && strlen(left) + strlen(old[j].id) + 2 < sizeof left)
                    strcat(strcat(left, left[0] ? "," : ""), old[j].id);
            }
            snprintf(ver, sizeof ver, "%" PRId64, version);
            snprintf(live, sizeof live, "%zu", m->view.n);
            const char *f[] = {"view", ver, "live", live, "joined", joined, "left", left, NULL};
            gr__log_fields(GR_LOG_LEVEL_INFO, f, "membership view %" PRId64 ": %zu live silos%s%s%s%s",
                           version, m->view.n, joined[0] ? "; joined: " : "", joined,
                           left[0] ? "; left: " : "", left);
            if (m->cbs.on_view) m->cbs.on_view(m->cbs.ud, &m->view);
        }
        gr__free(old);
    } else {
        gr__free(mem);
    }
    /* Joining -> active after the first good view: we can now route. */
    if (m->joined && !m->active && m->status == GR__MS_JOINING) {
        m->active = 1;
        gr__ms_set_status_query(m, GR__MS_ACTIVE, gr__ms_activated, m);
    }
}

static void gr__ms_joined(void *ud, int status, PGresult *res, const char *detail) {
    gr__membership_t *m = ud;
    m->join_in_flight = 0;
    if (status != 0) {
        /* The database may be starting or restarting: the tick retries. One
         * log line for the first failure, then one in 25 (every ~5 s). */
        if (m->join_failures++ % 25 == 0) GR__LOG_WARN("joining the cluster failed (retrying): %s", detail);
        return;
    }
    if (PQntuples(res) > 0 && atoi(PQgetvalue(res, 0, 1)) > 0)
        GR__LOG_INFO("marked %s earlier incarnation(s) on %s:%d dead", PQgetvalue(res, 0, 1), m->address,
                     m->opts.port);
    if (PQntuples(res) > 0 && atoi(PQgetvalue(res, 0, 2)) == 0 &&
        strcmp(PQgetvalue(res, 0, 3), "dead") != 0) {
        /* The id is a live member's, another process (another generation):
         * joining would make two silos one member, and the real one would
         * be declared dead. Refuse; the silo exits 2 (a configuration error). */
        GR__LOG_ERROR(
            "silo id %s is in use by a live member of cluster %s (another process); refusing to join: "
            "give each silo its own --silo-id",
            m->silo_id, m->cluster);
        m->dead_reported = 1;
        void (*cb)(void *, int) = m->join_cb;
        m->join_cb = NULL;
        if (cb) cb(m->join_ud, GR_EEXIST);
        return;
    }
    if (PQntuples(res) > 0 && atoi(PQgetvalue(res, 0, 2)) == 0) {
        /* Our row exists and is dead (an earlier join of ours went through
         * unanswered, and we were declared dead since): a dead id never
         * comes back, or its activation claims could be taken while it
         * serves. */
        if (!m->dead_reported) {
            m->dead_reported = 1;
            GR__LOG_ERROR("this silo id was declared dead before it could join; it must not serve grains");
            if (m->cbs.on_dead) m->cbs.on_dead(m->cbs.ud);
        }
        return;
    }
    m->joined = 1;
    m->status = GR__MS_JOINING;
    m->last_ok_sent = m->join_sent; /* the database stamped our heartbeat after this */
    m->healthy_since = m->last_ok_sent;
    gr__ms_arm_fence(m);
}

static void gr__ms_send_join(gr__membership_t *m) {
    const char *p[6] = {m->cluster, m->silo_id, m->address, m->port_s, m->gen_s, m->lease_s};
    m->join_sent = uv_now(m->loop);
    if (gr__pgpool_query(m->pool, GR__SQL_JOIN, 6, p, NULL, NULL, 0, gr__ms_joined, m) == 0)
        m->join_in_flight = 1;
}

void gr__membership_join(gr__membership_t *m, void (*cb)(void *, int), void *ud) {
    m->join_cb = cb;
    m->join_ud = ud;
    /* The tick sends the join (again, until it succeeds), then heartbeats. */
    uv_timer_start(&m->tick, gr__ms_tick_cb, 0, m->opts.heartbeat_ms);
}

typedef struct gr__ms_req {
    gr__membership_t *m;
    gr__member_status_t st;
    void (*cb)(void *, int);
    void *ud;
} gr__ms_req_t;

static void gr__ms_status_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__ms_req_t *r = ud;
    if (status == 0) {
        r->m->status = (int)r->st;
        GR__LOG_INFO("membership status: %s", gr__member_status_name(r->st));
    } else {
        GR__LOG_WARN("membership status %s not recorded: %s", gr__member_status_name(r->st), detail);
    }
    if (r->st == GR__MS_DEAD) { /* left: no more heartbeats, nothing to fence */
        uv_timer_stop(&r->m->tick);
        uv_timer_stop(&r->m->fence_timer);
    }
    if (r->cb) r->cb(r->ud, status);
    gr__free(r);
}

void gr__membership_set_status(gr__membership_t *m, gr__member_status_t st, void (*cb)(void *, int),
                               void *ud) {
    gr__ms_req_t *r = gr__malloc(sizeof *r);
    if (!r || !m->joined) {
        gr__free(r);
        if (cb) cb(ud, r ? GR_ESTATE : GR_ENOMEM);
        return;
    }
    r->m = m;
    r->st = st;
    r->cb = cb;
    r->ud = ud;
    gr__ms_set_status_query(m, st, gr__ms_status_done, r);
}

const gr__view_t *gr__membership_view(const gr__membership_t *m) { return &m->view; }
int gr__membership_fenced(const gr__membership_t *m) { return m->fenced; }

int gr__membership_lease_ok(const gr__membership_t *m) {
    if (!m->joined || m->fenced || m->dead_reported || m->status == GR__MS_DEAD) return 0;
    /* uv_hrtime(), not the loop's cached time: after a long pause (GC-like,
     * SIGSTOP, a slow turn) the cached time is stale, and the answer must be
     * right at the moment a reply leaves. last_ok_sent is loop time, which
     * is never ahead of uv_hrtime(). */
    uint64_t now = uv_hrtime() / 1000000u;
    uint32_t lease = m->opts.lease_ms;
    return now < m->last_ok_sent + lease - lease / GR__LEASE_MARGIN_DIV;
}

static void gr__ms_pool_closed(void *ud) {
    gr__membership_t *m = ud;
    void (*cb)(void *) = m->close_cb;
    void *cud = m->close_ud;
    gr__free(m->view.members);
    gr__free(m);
    if (cb) cb(cud);
}

static void gr__ms_timer_closed(uv_handle_t *h) {
    gr__membership_t *m = h->data;
    /* In-flight queries complete with GR_ECANCELED inside the pool's close. */
    gr__pgpool_close(m->pool, gr__ms_pool_closed, m);
}

static void gr__ms_fence_timer_closed(uv_handle_t *h) {
    gr__membership_t *m = h->data;
    uv_close((uv_handle_t *)&m->tick, gr__ms_timer_closed);
}

void gr__membership_close(gr__membership_t *m, void (*cb)(void *), void *ud) {
    assert(!m->closing);
    m->closing = 1;
    m->close_cb = cb;
    m->close_ud = ud;
    m->join_cb = NULL;
    uv_close((uv_handle_t *)&m->fence_timer, gr__ms_fence_timer_closed);
}

int gr__membership_new(uv_loop_t *loop, const char *conninfo, const gr__membership_opts_t *o,
                       const gr__membership_cbs_t *cbs, gr__membership_t **out) {
    if (!o->cluster || !o->silo_id || !o->address || o->heartbeat_ms == 0 || o->lease_ms <= o->heartbeat_ms)
        return GR_EINVAL;
    gr__membership_t *m = gr__calloc(1, sizeof *m);
    if (!m) return GR_ENOMEM;
    gr__pgpool_options_t po;
    gr__pgpool_options_init(&po);
    po.pool_size = 1; /* its own connection: never queued behind grain writes */
    po.op_timeout_ms = o->lease_ms;
    po.query_timeout_ms = o->lease_ms; /* a stalled heartbeat must not block the next one */
    po.reconnect_min_ms = 50;
    /* Never below the minimum (the pool refuses that): heartbeats under 25 ms are legal. */
    po.reconnect_max_ms = o->heartbeat_ms * 2 > 50 ? o->heartbeat_ms * 2 : 50;
    int rc = gr__pgpool_new(loop, conninfo, &po, &m->pool);
    if (rc != 0) {
        gr__free(m);
        return rc;
    }
    m->loop = loop;
    m->opts = *o;
    snprintf(m->cluster, sizeof m->cluster, "%s", o->cluster);
    snprintf(m->silo_id, sizeof m->silo_id, "%s", o->silo_id);
    snprintf(m->address, sizeof m->address, "%s", o->address);
    snprintf(m->port_s, sizeof m->port_s, "%d", o->port);
    snprintf(m->gen_s, sizeof m->gen_s, "%" PRId64, o->generation);
    snprintf(m->lease_s, sizeof m->lease_s, "%u", (unsigned)o->lease_ms);
    m->opts.cluster = m->cluster;
    m->opts.silo_id = m->silo_id;
    m->opts.address = m->address;
    m->cbs = *cbs;
    uv_timer_init(loop, &m->tick);
    m->tick.data = m;
    uv_timer_init(loop, &m->fence_timer);
    m->fence_timer.data = m;
    *out = m;
    return 0;
}
