/* src/silo/silo.c - the silo handle: wires storage, the grain runtime and the
 * client gateway together on one loop, and runs the graceful stop. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "base/base.h"
#include "runtime/runtime.h"
#include "granary/silo.h"
#include "storage/pgpool.h"
#include "admin/dashboard.h"
#include "gateway/gateway.h"
#include "admin/http.h"
#include "cluster/membership.h"
#include "lifecycle/ttl.h"
#include "reminders/reminders.h"
#include "cluster/router.h"
#include "wire/frame.h"

#include "silo/silo_internal.h"

void gr_silo_options_init(gr_silo_options_t *c) {
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:7700";
    c->cluster = "default";
    c->pg_pool_size = 4;
    c->pg_op_timeout_ms = 5000;
    c->idle_deactivate_ms = 600000;
    c->call_timeout_ms = 30000;
    c->max_queue_per_grain = 10000;
    c->max_connections = 4096;
    c->max_inflight_per_conn = 10000;
    c->max_frame_bytes = GR_FRAME_MAX_DEFAULT;
    c->handshake_timeout_ms = 5000;
    c->max_preauth_connections = 256;
    c->frame_timeout_ms = 10000;
    c->max_conn_bytes = 64u << 20;
    c->max_buffered_bytes = 256u << 20;
    c->drain_timeout_ms = 25000;
    c->heartbeat_ms = 200;
    c->lease_ms = 1200;
    c->reminder_poll_ms = 1000;
    c->reminder_min_period_ms = 1000;
    c->rebalance_rate = 1000;
    c->rebalance_window_ms = 60000;
    c->state_ttl_page_rows = 1000;
}

static int gr__silo_err(char *err, size_t n, int rc, const char *fmt, const char *arg) {
    if (err && n) snprintf(err, n, fmt, arg);
    return rc;
}

static const char *gr__silo_keep(gr_silo_t *s, int slot, const char *v) {
    if (!v) return NULL;
    s->strings[slot] = gr__strdup(v);
    return s->strings[slot];
}

static void gr__silo_free(gr_silo_t *s) {
    for (size_t i = 0; i < GR__ARRAY_SIZE(s->strings); i++)
        gr__free(s->strings[i]);
    gr__free(s->id);
    gr__tls_ctx_unref(s->tls_server);
    gr__tls_ctx_unref(s->tls_dial);
    gr__free(s);
}

/* Load both TLS configurations from the files in s->cfg: the listener's,
 * and the one silo-to-silo links dial with (presenting the same
 * certificate, so mutual TLS between silos needs nothing more). */
static int gr__silo_load_tls(gr_silo_t *s, gr__tls_ctx_t **server, gr__tls_ctx_t **dial, char *err,
                             size_t err_size) {
    gr__tls_ctx_opts_t so = {.server = 1,
                             .cert = s->cfg.tls_cert,
                             .key = s->cfg.tls_key,
                             .ca = s->cfg.tls_ca,
                             .verify_peer = s->cfg.tls_client_auth};
    gr__tls_ctx_opts_t co = {
        .server = 0, .cert = s->cfg.tls_cert, .key = s->cfg.tls_key, .ca = s->cfg.tls_ca};
    int rc = gr__tls_ctx_new(&so, server, err, err_size);
    if (rc != 0) return rc;
    rc = gr__tls_ctx_new(&co, dial, err, err_size);
    if (rc != 0) {
        gr__tls_ctx_unref(*server);
        *server = NULL;
    }
    return rc;
}

/* The runtime asks this before every answer of an activation: a silo that
 * is not joined, is fenced, draining past its lease, or has not heartbeated
 * for most of a lease must not answer (docs/directory.md). */
static int gr__silo_lease_ok(void *ud) {
    gr_silo_t *s = ud;
    /* Closing: membership may be gone already, and nothing answers any more. */
    return !s->closing && s->membership && !s->dead && gr__membership_lease_ok(s->membership);
}

/* A reply being built: a failed append is remembered, so the answer is an
 * error and never a truncated body with status 0. */
typedef struct gr__silo_out {
    gr__buf_t b;
    int rc;
} gr__silo_out_t;

static void gr__silo_add_grains(void *ud, const char *cls, uint64_t active) {
    gr__silo_out_t *o = ud;
    o->rc |= gr__buf_printf(&o->b, "%s %llu\n", cls, (unsigned long long)active);
}

/* The silo owning a grain's hash-ring range (reminders fire there). */
static const char *gr__silo_owner(void *ud, const char *cls, const uint8_t *key, size_t key_len) {
    gr_silo_t *s = ud;
    return gr__router_owner(s->router, cls, key, key_len);
}

/* Reminders fire only from a joined, healthy silo that is not leaving. */
static void gr__silo_update_firing(gr_silo_t *s) {
    int healthy = s->joined && !s->fenced && !s->dead && !s->stopping && !s->closing;
    if (s->reminders) gr__reminders_set_firing(s->reminders, healthy);
    if (s->ttl) gr__ttl_set_active(s->ttl, healthy);
}

static const char *gr__silo_state_name(void *ud) {
    const gr_silo_t *s = ud;
    if (s->dead) return "dead";
    if (s->fenced) return "fenced";
    if (s->stopping) return "draining";
    if (!s->started) return "starting";
    if (s->router && !s->joined) return "joining";
    return "active";
}

static const gr__view_t *gr__silo_view(void *ud) {
    const gr_silo_t *s = ud;
    return s->membership && s->joined ? gr__membership_view(s->membership) : NULL;
}

/* Control calls any authenticated client may make ("$silo"), and the
 * directory protocol only silos may use ("$dir"). */
static void gr__silo_system_call(void *ud, const char *cls, const char *method, const char *from_silo,
                                 const uint8_t *key, size_t key_len, const uint8_t *arg, size_t arg_len,
                                 gr_call_cb done, void *done_ud) {
    gr_silo_t *s = ud;
    if (!strcmp(cls, "$dir") && from_silo && s->router) {
        gr__router_system_call(s->router, method, key, key_len, arg, arg_len, done, done_ud);
        return;
    }
    if (!strcmp(cls, "$mig") && from_silo && s->router) {
        gr__router_migration_call(s->router, from_silo, method, key, key_len, arg, arg_len, done, done_ud);
        return;
    }
    if (strcmp(cls, "$silo") != 0) {
        done(done_ud, GR_ENOCLASS, GR__LIT("reserved class"));
        return;
    }
    if (s->reminders &&
        gr__reminders_control(s->reminders, method, key, key_len, arg, arg_len, done, done_ud) == 0)
        return;
    gr__silo_out_t o = {.rc = 0};
    gr__buf_init(&o.b);
    gr__buf_t *b = &o.b;
    int status = 0;
    if (!strcmp(method, "reminder_stats") && s->reminders) {
        gr__reminders_stats_t rs;
        gr__reminders_get_stats(s->reminders, &rs);
        o.rc |= gr__buf_printf(
            b, "%s fired %llu failed %llu polls %llu in_flight %llu firing %d polling %d\n", s->id,
            (unsigned long long)rs.fired, (unsigned long long)rs.fire_failures, (unsigned long long)rs.polls,
            (unsigned long long)rs.in_flight, rs.firing, rs.polling);
    } else if (!strcmp(method, "dashboard") && s->dashboard) {
        gr__buf_free(b);
        gr__dashboard_fragment_call(s->dashboard, arg, arg_len, done, done_ud);
        return;
    } else if (!strcmp(method, "grains")) {
        /* "CLASS ACTIVE" per line, for this silo. */
        gr__runtime_foreach_class(s->rt, gr__silo_add_grains, &o);
    } else if (!strcmp(method, "members")) {
        /* "ID ADDRESS:PORT STATUS HEARTBEAT_AGE_MS" per line, as this silo sees the view. */
        if (s->membership) {
            const gr__view_t *v = gr__membership_view(s->membership);
            for (size_t i = 0; i < v->n; i++)
                o.rc |= gr__buf_printf(b, "%s %s:%d %s %lld\n", v->members[i].id, v->members[i].address,
                                       v->members[i].port, gr__member_status_name(v->members[i].status),
                                       (long long)v->members[i].age_ms);
        } else {
            o.rc |= gr__buf_printf(b, "%s %s:%d active 0\n", s->id, s->listen_host, gr_silo_port(s));
        }
    } else {
        status = GR_ENOMETHOD;
        o.rc |= gr__buf_printf(b,
                               "unknown control method '%s' (grains, members, dashboard, reminder_add, "
                               "reminder_remove, reminder_list, reminder_stats)",
                               method);
    }
    if (o.rc)
        done(done_ud, GR_ENOMEM, GR__LIT("out of memory"));
    else
        done(done_ud, status, b->data, b->len);
    gr__buf_free(b);
}

int gr_silo_new(uv_loop_t *loop, const gr_silo_options_t *cfg, gr_silo_t **out, char *err, size_t err_size) {
    if (!loop || !cfg || !out) return GR_EINVAL;
    if (!cfg->memory_storage && (!cfg->database_url || !cfg->database_url[0]))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "database URL is required (--database or GRANARY_DATABASE_URL)");
    if (!cfg->listen) return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "listen address is required");
    if (!cfg->cluster || !cfg->cluster[0] || strlen(cfg->cluster) > 255)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "cluster name must be 1..255 bytes");
    if (cfg->secret && strlen(cfg->secret) > 255)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "cluster secret must be at most 255 bytes");
    if (cfg->http_token && cfg->http_token[0] &&
        (strlen(cfg->http_token) > 255 ||
         strspn(cfg->http_token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") !=
             strlen(cfg->http_token)))
        return gr__silo_err(
            err, err_size, GR_ECONFIG, "%s",
            "--http-token must be 1..255 characters of A-Z a-z 0-9 - . _ ~ + / = (it travels in a "
            "header and a cookie)");
    if (cfg->silo_secret && strlen(cfg->silo_secret) > 255)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "silo secret must be at most 255 bytes");
    if (cfg->silo_secret && cfg->silo_secret[0] && cfg->secret && !strcmp(cfg->silo_secret, cfg->secret))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--silo-secret must differ from --secret (clients hold --secret)");
    if (!cfg->max_preauth_connections || !cfg->frame_timeout_ms ||
        cfg->max_conn_bytes < 2u * GR_FRAME_MAX_DEFAULT || cfg->max_buffered_bytes < cfg->max_conn_bytes)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--max-preauth-connections and --frame-timeout-ms must be positive, "
                            "--max-conn-bytes at least 2 frames "
                            "(2228224) and --max-buffered-bytes at least --max-conn-bytes");
    if (cfg->max_frame_bytes < 1024 || cfg->max_frame_bytes > GR_FRAME_MAX_DEFAULT)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "max frame bytes must be between 1024 and 1114112");
    if (!cfg->max_connections || !cfg->max_inflight_per_conn || !cfg->handshake_timeout_ms ||
        !cfg->drain_timeout_ms || !cfg->call_timeout_ms || !cfg->idle_deactivate_ms ||
        !cfg->max_queue_per_grain || !cfg->pg_pool_size || !cfg->pg_op_timeout_ms || !cfg->heartbeat_ms)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "limits and timeouts must be positive");
    if (cfg->heartbeat_ms > 60000u || cfg->lease_ms > 600000u)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--heartbeat-ms must be at most 60000 and --lease-ms at most 600000");
    if (!cfg->pg_pool_size || cfg->pg_pool_size > 64)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "--pg-pool must be between 1 and 64");
    if ((uint64_t)cfg->lease_ms < 2ull * cfg->heartbeat_ms)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "lease must be at least twice the heartbeat interval");
    if ((cfg->accept_secret && strlen(cfg->accept_secret) > 255) ||
        (cfg->accept_silo_secret && strlen(cfg->accept_silo_secret) > 255))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "accepted secrets must be at most 255 bytes");
    if (cfg->accept_silo_secret && cfg->accept_silo_secret[0] && !(cfg->silo_secret && cfg->silo_secret[0]))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "--accept-silo-secret needs --silo-secret");
    if (cfg->accept_silo_secret && cfg->accept_silo_secret[0] &&
        ((cfg->secret && !strcmp(cfg->accept_silo_secret, cfg->secret)) ||
         (cfg->accept_secret && !strcmp(cfg->accept_silo_secret, cfg->accept_secret))))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--accept-silo-secret must differ from the client secrets (clients hold those)");
    if (cfg->silo_secret && cfg->silo_secret[0] && cfg->accept_secret &&
        !strcmp(cfg->silo_secret, cfg->accept_secret))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--silo-secret must differ from --accept-secret (clients hold it)");
    if (!cfg->tls_cert && (cfg->tls_key || cfg->tls_ca || cfg->tls_client_auth || cfg->tls_server_name))
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--tls-key, --tls-ca, --tls-client-auth and --tls-server-name need --tls-cert");
    if (cfg->tls_cert && !cfg->tls_key)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "--tls-cert needs --tls-key");
    if (cfg->tls_client_auth && !cfg->tls_ca)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "--tls-client-auth needs --tls-ca (the CA that signs client certificates)");
    if (cfg->state_ttl_page_rows > 10000)
        return gr__silo_err(err, err_size, GR_EINVAL, "%s", "state_ttl_page_rows must be 0..10000");
    if (cfg->reminder_poll_ms < 10 || cfg->reminder_min_period_ms < 10)
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s",
                            "reminder poll interval and minimum period must be at least 10 ms");

    gr_silo_t *s = gr__calloc(1, sizeof *s);
    if (!s) return GR_ENOMEM;
    s->loop = loop;
    s->cfg = *cfg;
    if (gr__parse_hostport(cfg->listen, strlen(cfg->listen), s->listen_host, sizeof s->listen_host,
                           &s->listen_port) != 0) {
        gr__silo_free(s);
        const char *colon = strrchr(cfg->listen, ':');
        if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1))
            return gr__silo_err(err, err_size, GR_ECONFIG, "--listen '%s': port out of range (0..65535)",
                                cfg->listen);
        return gr__silo_err(err, err_size, GR_ECONFIG, "listen address '%s' is not HOST:PORT", cfg->listen);
    }
    s->cfg.database_url = gr__silo_keep(s, 0, cfg->database_url);
    s->cfg.listen = gr__silo_keep(s, 1, cfg->listen);
    s->cfg.advertise = gr__silo_keep(s, 2, cfg->advertise);
    s->cfg.cluster = gr__silo_keep(s, 3, cfg->cluster);
    s->cfg.secret = gr__silo_keep(s, 4, cfg->secret);
    s->cfg.http = gr__silo_keep(s, 5, cfg->http);
    s->cfg.silo_secret = gr__silo_keep(s, 6, cfg->silo_secret);
    s->cfg.http_token = gr__silo_keep(s, 7, cfg->http_token);
    s->cfg.http_allowed_hosts = gr__silo_keep(s, 8, cfg->http_allowed_hosts);
    s->cfg.tls_cert = gr__silo_keep(s, 9, cfg->tls_cert);
    s->cfg.tls_key = gr__silo_keep(s, 10, cfg->tls_key);
    s->cfg.tls_ca = gr__silo_keep(s, 11, cfg->tls_ca);
    s->cfg.tls_server_name = gr__silo_keep(s, 12, cfg->tls_server_name);
    s->cfg.accept_secret = gr__silo_keep(s, 13, cfg->accept_secret);
    s->cfg.accept_silo_secret = gr__silo_keep(s, 14, cfg->accept_silo_secret);
    /* Fail closed: a secret that could not be copied must not become "none". */
    if ((cfg->secret && !s->cfg.secret) || (cfg->silo_secret && !s->cfg.silo_secret) ||
        (cfg->http_token && !s->cfg.http_token) || (cfg->http_allowed_hosts && !s->cfg.http_allowed_hosts) ||
        (cfg->database_url && !s->cfg.database_url) || !s->cfg.listen || (cfg->cluster && !s->cfg.cluster) ||
        (cfg->tls_cert && !s->cfg.tls_cert) || (cfg->tls_key && !s->cfg.tls_key) ||
        (cfg->tls_ca && !s->cfg.tls_ca) || (cfg->tls_server_name && !s->cfg.tls_server_name) ||
        (cfg->accept_secret && !s->cfg.accept_secret) ||
        (cfg->accept_silo_secret && !s->cfg.accept_silo_secret)) {
        gr__silo_free(s);
        return GR_ENOMEM;
    }
    if (cfg->http && gr__parse_hostport(cfg->http, strlen(cfg->http), s->http_host, sizeof s->http_host,
                                        &s->http_port) != 0) {
        gr__silo_free(s);
        return gr__silo_err(err, err_size, GR_ECONFIG, "http address '%s' is not HOST:PORT", cfg->http);
    }
    s->cfg.silo_id = NULL;
    const char *adv = cfg->advertise ? cfg->advertise : s->listen_host;
    char idbuf[160];
    /* The generation tells incarnations on one address apart (wall clock,
     * ms: a restarted pod always gets a larger one). */
    s->generation = (int64_t)gr__wall_ms();
    if (cfg->silo_id)
        snprintf(idbuf, sizeof idbuf, "%s", cfg->silo_id);
    else
        snprintf(idbuf, sizeof idbuf, "%s:%d-%llx", adv, s->listen_port, (unsigned long long)s->generation);
    if (strlen(idbuf) > 100) {
        gr__silo_free(s);
        return gr__silo_err(err, err_size, GR_ECONFIG, "%s", "silo id must be at most 100 bytes");
    }
    s->id = gr__strdup(idbuf);
    if (!s->id) {
        gr__silo_free(s);
        return GR_ENOMEM;
    }

    int rc;
    if (s->cfg.tls_cert) {
        char terr[400];
        rc = gr__silo_load_tls(s, &s->tls_server, &s->tls_dial, terr, sizeof terr);
        if (rc != 0) {
            gr__silo_free(s);
            return gr__silo_err(err, err_size, rc, "%s", terr);
        }
    }
    if (!cfg->memory_storage) {
        /* A URL that cannot parse will never connect: refuse it now (exit 2)
         * rather than retry it forever. */
        char perr[300];
        if (gr__pg_conninfo_check(s->cfg.database_url, perr, sizeof perr) != 0) {
            gr__silo_free(s);
            return gr__silo_err(err, err_size, GR_ECONFIG, "--database: %s", perr);
        }
    }
    if (cfg->memory_storage) {
        rc = gr_storage_memory_new(loop, &s->storage);
    } else {
        gr_storage_pg_options_t po;
        gr_storage_pg_options_init(&po);
        po.conninfo = s->cfg.database_url;
        po.service = s->cfg.cluster;
        po.pool_size = cfg->pg_pool_size;
        po.op_timeout_ms = cfg->pg_op_timeout_ms;
        rc = gr_storage_pg_new(loop, &po, &s->storage);
    }
    if (rc != 0) {
        gr__silo_free(s);
        return gr__silo_err(err, err_size, rc, "cannot create storage: %s", gr_strerror(rc));
    }
    gr_runtime_options_t ro;
    gr_runtime_options_init(&ro);
    ro.silo_id = s->id;
    ro.idle_deactivate_ms = cfg->idle_deactivate_ms;
    ro.default_call_timeout_ms = cfg->call_timeout_ms;
    ro.max_queue_per_grain = cfg->max_queue_per_grain;
    ro.max_activations = cfg->max_activations;
    ro.memory_limit = cfg->memory_limit;
    rc = gr_runtime_new(loop, s->storage, &ro, &s->rt);
    if (rc == 0 && !cfg->memory_storage)
        rc = gr__router_new(loop, s->rt, s->id, s->cfg.cluster,
                            s->cfg.silo_secret && s->cfg.silo_secret[0] ? s->cfg.silo_secret : s->cfg.secret,
                            &s->router);
    if (rc == 0 && s->router) gr__router_set_lease(s->router, gr__silo_lease_ok, s);
    if (rc == 0 && s->router)
        gr__router_set_migration(s->router, !cfg->no_migrate, cfg->rebalance_rate, cfg->rebalance_window_ms);
    if (rc == 0 && s->router) gr__router_set_rebalance_by_calls(s->router, cfg->rebalance_by_calls);
    /* Half the drain for live moves, half for writing what did not move. */
    if (rc == 0) gr__runtime_set_migrate_budget(s->rt, s->cfg.drain_timeout_ms / 2);
    if (rc == 0 && s->router && s->tls_dial)
        rc = gr__router_set_tls(s->router, s->tls_dial, s->cfg.tls_server_name);
    if (rc == 0 && !cfg->memory_storage) {
        gr__reminders_opts_t rmo;
        gr__reminders_opts_init(&rmo);
        rmo.service = s->cfg.cluster;
        rmo.poll_ms = cfg->reminder_poll_ms;
        rmo.min_period_ms = cfg->reminder_min_period_ms;
        rc = gr__reminders_new(loop, s->cfg.database_url, s->rt, s->id, &rmo, gr__silo_owner, s,
                               &s->reminders);
    }
    if (rc == 0 && !cfg->memory_storage) {
        gr__ttl_opts_t to;
        gr__ttl_opts_init(&to);
        to.service = s->cfg.cluster;
        to.page_rows = cfg->state_ttl_page_rows;
        rc = gr__ttl_new(loop, s->cfg.database_url, s->rt, s->id, &to, gr__silo_owner, s, &s->ttl);
    }
    if (rc == 0) {
        gr__gateway_opts_t go = {.cluster = s->cfg.cluster,
                                 .secret = s->cfg.secret,
                                 .silo_id = s->id,
                                 .max_connections = cfg->max_connections,
                                 .max_inflight_per_conn = cfg->max_inflight_per_conn,
                                 .max_frame_bytes = cfg->max_frame_bytes,
                                 .handshake_timeout_ms = cfg->handshake_timeout_ms};
        go.silo_secret = s->cfg.silo_secret;
        go.tls = s->tls_server;
        go.accept_secret = s->cfg.accept_secret;
        go.accept_silo_secret = s->cfg.accept_silo_secret;
        go.max_preauth_connections = cfg->max_preauth_connections;
        go.frame_timeout_ms = cfg->frame_timeout_ms;
        go.max_conn_bytes = cfg->max_conn_bytes;
        go.max_buffered_bytes = cfg->max_buffered_bytes;
        go.system_call = gr__silo_system_call;
        go.system_ud = s;
        rc = gr__gateway_new(loop, s->rt, &go, &s->gw);
    }
    if (rc == 0 && cfg->http && !cfg->no_dashboard) {
        gr__dashboard_env_t de = {s->rt,
                                  s->gw,
                                  s->router,
                                  s->reminders,
                                  s->id,
                                  s->cfg.cluster,
                                  s->listen_host,
                                  cfg->max_frame_bytes,
                                  gr__silo_state_name,
                                  gr__silo_view,
                                  s};
        rc = gr__dashboard_new(loop, &de, &s->dashboard);
    }
    if (rc != 0) {
        /* Tear down what exists, and say what failed (not always memory). */
        if (s->reminders) gr__reminders_close(s->reminders, NULL, NULL);
        if (s->ttl) gr__ttl_close(s->ttl, NULL, NULL);
        if (s->gw) gr__gateway_close(s->gw, NULL, NULL);
        if (s->router) gr__router_close(s->router, NULL, NULL);
        if (s->rt) gr_runtime_close(s->rt, NULL, NULL);
        gr_storage_close(s->storage, NULL, NULL);
        gr__silo_free(s);
        return gr__silo_err(err, err_size, rc, "cannot create the silo: %s", gr_strerror(rc));
    }
    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    *out = s;
    return 0;
}

int gr_silo_register(gr_silo_t *s, const gr_class_t *cls) { return gr_runtime_register(s->rt, cls); }

int gr_silo_reload_tls(gr_silo_t *s, char *err, size_t err_size) {
    if (!s->tls_server) return gr__silo_err(err, err_size, GR_ESTATE, "%s", "TLS is not configured");
    if (s->closing) return gr__silo_err(err, err_size, GR_ESTATE, "%s", "the silo is closing");
    gr__tls_ctx_t *server = NULL, *dial = NULL;
    int rc = gr__silo_load_tls(s, &server, &dial, err, err_size);
    if (rc == 0 && s->router) rc = gr__router_set_tls(s->router, dial, s->cfg.tls_server_name);
    if (rc != 0) {
        s->tls_reload_failures++;
        gr__tls_ctx_unref(server);
        gr__tls_ctx_unref(dial);
        if (rc == GR_ENOMEM) gr__silo_err(err, err_size, rc, "%s", "out of memory");
        return rc;
    }
    gr__gateway_set_tls(s->gw, server);
    gr__tls_ctx_unref(s->tls_server);
    gr__tls_ctx_unref(s->tls_dial);
    s->tls_server = server;
    s->tls_dial = dial;
    s->tls_reloads++;
    return 0;
}
gr_runtime_t *gr_silo_runtime(gr_silo_t *s) { return s->rt; }
const char *gr_silo_id(const gr_silo_t *s) { return s->id; }
int gr_silo_port(const gr_silo_t *s) { return s->started ? gr__gateway_port(s->gw) : 0; }

/* ---- membership events ---- */

static void gr__silo_on_view(void *ud, const gr__view_t *view) {
    gr_silo_t *s = ud;
    gr__router_set_view(s->router, view);
    if (s->dashboard) gr__dashboard_on_view(s->dashboard, view);
}

static void gr__silo_on_fence(void *ud, int fenced, const char *why) {
    gr_silo_t *s = ud;
    s->fenced = fenced;
    gr__router_set_fenced(s->router, fenced);
    gr__silo_update_firing(s);
    /* Another silo may own our grains by now: drop them without writing. */
    if (fenced) gr__runtime_drop_all(s->rt);
}

static void gr__silo_on_dead(void *ud) {
    gr_silo_t *s = ud;
    s->dead = 1;
    gr__router_set_fenced(s->router, 1);
    gr__silo_update_firing(s);
    gr__runtime_drop_all(s->rt);
    if (s->dead_cb) s->dead_cb(s, s->dead_ud);
}

static void gr__silo_joined(void *ud, int status) {
    gr_silo_t *s = ud;
    if (status == 0) {
        s->joined = 1;
        gr__silo_update_firing(s);
        GR__LOG_INFO("silo %s is active in cluster %s", s->id, s->cfg.cluster);
    } else if (status == GR_EEXIST) {
        /* Our id belongs to a live member: never serve as it. */
        s->join_refused = 1;
        s->dead = 1;
        gr__router_set_fenced(s->router, 1);
        gr__silo_update_firing(s);
        if (s->dead_cb) s->dead_cb(s, s->dead_ud);
    } else {
        GR__LOG_ERROR("could not join the cluster: %s (is the schema migrated?)", gr_strerror(status));
    }
}

void gr_silo_on_dead(gr_silo_t *s, gr_silo_dead_cb cb, void *ud) {
    s->dead_cb = cb;
    s->dead_ud = ud;
}

int gr_silo_join_refused(const gr_silo_t *s) { return s->join_refused; }

int gr_silo_ready(const gr_silo_t *s) {
    if (!s->started || s->stopping || s->fenced || s->dead) return 0;
    if (s->router && gr__router_refused_by(s->router)) return 0; /* its peers will not talk to it */
    return s->cfg.memory_storage ? 1 : s->joined;
}

int gr_silo_http_port(const gr_silo_t *s) { return s->http ? gr__http_port(s->http) : 0; }

static int gr__silo_start(gr_silo_t *s, char *err, size_t err_size);

int gr_silo_start(gr_silo_t *s, char *err, size_t err_size) {
    if (s->started || s->stopping || s->start_failed) return GR_ESTATE;
    int rc = gr__silo_start(s, err, err_size);
    /* A failed start may leave the gateway listening or the HTTP server up:
     * such a silo can only be closed (no second start on top of it). */
    if (rc != 0) s->start_failed = 1;
    return rc;
}

static int gr__silo_start(gr_silo_t *s, char *err, size_t err_size) {
    const char *adv = s->cfg.advertise ? s->cfg.advertise : s->listen_host;
    if (s->router && (!strcmp(adv, "0.0.0.0") || !strcmp(adv, "::"))) {
        snprintf(err, err_size,
                 "listening on %s needs --advertise HOST (or POD_IP) so other silos can reach this one",
                 s->listen_host);
        return GR_ECONFIG;
    }
    int rc = gr__gateway_listen(s->gw, s->listen_host, s->listen_port, err, err_size);
    if (rc != 0) return rc;
    if (s->cfg.http) {
        rc = gr__http_new(s->loop, s->http_host, s->http_port, gr__silo_http, s, &s->http, err, err_size);
        if (rc != 0) return rc;
        GR__LOG_INFO("probes and metrics on http://%s:%d/ (healthz, readyz, metrics%s)", s->http_host,
                     gr__http_port(s->http), s->dashboard ? "; dashboard at /" : "");
    }
    s->started = 1;
    GR__LOG_INFO("silo %s listening on %s:%d (cluster %s, storage %s)", s->id, s->listen_host,
                 gr__gateway_port(s->gw), s->cfg.cluster, s->cfg.memory_storage ? "memory" : "postgres");
    if (!s->router) return 0;
    gr__membership_opts_t mo = {s->cfg.cluster,          s->id,         adv,
                                gr__gateway_port(s->gw), s->generation, s->cfg.heartbeat_ms,
                                s->cfg.lease_ms};
    gr__membership_cbs_t cbs = {gr__silo_on_view, gr__silo_on_fence, gr__silo_on_dead, s};
    rc = gr__membership_new(s->loop, s->cfg.database_url, &mo, &cbs, &s->membership);
    if (rc != 0) {
        snprintf(err, err_size, "cannot start membership: %s", gr_strerror(rc));
        return rc;
    }
    gr__membership_join(s->membership, gr__silo_joined, s);
    return 0;
}

static void gr__silo_stop_done(gr_silo_t *s, int status) {
    if (!s->stop_cb) return;
    void (*cb)(gr_silo_t *, int, void *) = s->stop_cb;
    s->stop_cb = NULL;
    uv_timer_stop(&s->stop_timer);
    cb(s, status, s->stop_ud);
}

static void gr__silo_left(void *ud, int status) { gr__silo_stop_done(ud, 0); }

static void gr__silo_gateway_flushed(void *ud) {
    gr_silo_t *s = ud;
    if (s->membership && s->joined && !s->dead) {
        /* Leaving: the others drop our entries and re-register with the new
         * partition owners on this view change. */
        gr__membership_set_status(s->membership, GR__MS_DEAD, gr__silo_left, s);
        return;
    }
    gr__silo_stop_done(s, 0);
}

static void gr__silo_drained(gr_runtime_t *rt, void *ud) {
    gr_silo_t *s = ud;
    GR__LOG_INFO("all grains deactivated; answering calls in flight, then closing connections");
    gr__gateway_shutdown(s->gw, gr__silo_gateway_flushed, s);
}

static void gr__silo_stop_timeout(uv_timer_t *t) {
    gr_silo_t *s = t->data;
    GR__LOG_ERROR("graceful stop did not finish within %u ms (%zu activations left)",
                  (unsigned)s->cfg.drain_timeout_ms, gr_runtime_activation_count(s->rt));
    gr__silo_stop_done(s, GR_ETIMEDOUT);
}

int gr_silo_stop(gr_silo_t *s, gr_silo_stop_cb cb, void *ud) {
    if (s->stopping || s->closing || s->start_failed) return GR_ESTATE;
    s->stopping = 1;
    gr__silo_update_firing(s);
    s->stop_cb = cb;
    s->stop_ud = ud;
    GR__LOG_INFO("graceful stop: deactivating %zu grains", gr_runtime_activation_count(s->rt));
    if (s->membership && s->joined)
        gr__membership_set_status(s->membership, GR__MS_SHUTTING_DOWN, NULL, NULL);
    if (s->router) gr__router_set_draining(s->router, 1);
    gr__gateway_stop_accepting(s->gw);
    uv_timer_start(&s->stop_timer, gr__silo_stop_timeout, s->cfg.drain_timeout_ms, 0);
    int rc = gr_runtime_drain(s->rt, gr__silo_drained, s);
    if (rc != 0) return rc;
    return 0;
}

static void gr__silo_part_closed(void *ud) {
    gr_silo_t *s = ud;
    if (--s->parts_open != 0) return;
    void (*cb)(void *) = s->close_cb;
    void *cud = s->close_ud;
    gr__silo_free(s);
    if (cb) cb(cud);
}

static void gr__silo_runtime_closed(void *ud) {
    gr_silo_t *s = ud;
    /* Storage goes last: the runtime's pending operations referenced it. */
    gr_storage_close(s->storage, gr__silo_part_closed, s);
}

static void gr__silo_timer_closed(uv_handle_t *h) { gr__silo_part_closed(h->data); }

void gr_silo_close(gr_silo_t *s, gr_close_cb cb, void *ud) {
    assert(!s->closing && "gr_silo_close called twice");
    s->closing = 1;
    s->close_cb = cb;
    s->close_ud = ud;
    s->stop_cb = NULL;
    s->parts_open = 3 + (s->router != NULL) + (s->membership != NULL) + (s->http != NULL) +
                    (s->reminders != NULL) + (s->ttl != NULL) + (s->dashboard != NULL);
    if (s->dashboard) gr__dashboard_close(s->dashboard, gr__silo_part_closed, s);
    /* Reminders first: their fires in flight complete (cancelled) when the
     * runtime closes below, and the service waits for them. */
    if (s->reminders) gr__reminders_close(s->reminders, gr__silo_part_closed, s);
    if (s->ttl) gr__ttl_close(s->ttl, gr__silo_part_closed, s);
    if (s->http) gr__http_close(s->http, gr__silo_part_closed, s);
    uv_close((uv_handle_t *)&s->stop_timer, gr__silo_timer_closed);
    /* The router first: its links' cancelled calls complete into a live runtime. */
    if (s->router) gr__router_close(s->router, gr__silo_part_closed, s);
    if (s->membership) gr__membership_close(s->membership, gr__silo_part_closed, s);
    gr__gateway_close(s->gw, gr__silo_part_closed, s);
    gr_runtime_close(s->rt, gr__silo_runtime_closed, s);
}
