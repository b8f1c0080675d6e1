/* src/silo/silo_http.c - the silo's HTTP side: /healthz, /readyz, /metrics
 * (Prometheus text for every part of the silo), and the Host and token
 * guard in front of the dashboard and the grain-call API. */
#include <stdio.h>
#include <strings.h>

#include "admin/httpapi.h"
#include "admin/procstats.h"
#include "silo/silo_internal.h"

/* ---- HTTP: probes and metrics ---- */

static const char *gr__silo_not_ready_why(const gr_silo_t *s, char *buf, size_t size) {
    if (s->dead) return "declared dead by the cluster";
    if (s->fenced) return "fenced: cannot heartbeat to the membership table";
    if (s->stopping) return "draining";
    if (!s->started) return "starting";
    const char *peer = s->router ? gr__router_refused_by(s->router) : NULL;
    if (peer) {
        snprintf(buf, size,
                 "silo %s refuses this silo's handshake: --cluster, --silo-secret (or --secret) or the TLS "
                 "certificate differ between them",
                 peer);
        return buf;
    }
    return "joining the cluster";
}

static int gr__silo_metrics(gr_silo_t *s, gr__buf_t *b) {
    int rc = gr__runtime_write_metrics(s->rt, b);
    rc |= gr__procstats_write(b, (double)s->generation / 1000.0); /* the generation is the start time in ms */
    gr__gateway_stats_t g;
    gr__gateway_get_stats(s->gw, &g);
    rc |= gr__buf_printf(
        b,
        "# HELP granary_connections Open client and silo connections.\n"
        "# TYPE granary_connections gauge\ngranary_connections %llu\n"
        "# HELP granary_connections_total Connections accepted since start.\n# TYPE "
        "granary_connections_total counter\ngranary_connections_total %llu\n"
        "# HELP granary_connections_refused_total Connections refused (limits, shutting down).\n# TYPE "
        "granary_connections_refused_total counter\ngranary_connections_refused_total %llu\n"
        "# HELP granary_protocol_errors_total Connections closed for a protocol error.\n# TYPE "
        "granary_protocol_errors_total counter\ngranary_protocol_errors_total %llu\n"
        "# HELP granary_handshakes_refused_total Handshakes refused, all reasons.\n# TYPE "
        "granary_handshakes_refused_total counter\ngranary_handshakes_refused_total %llu\n"
        "# HELP granary_overloaded_total Requests refused with GR_EOVERLOAD.\n# TYPE "
        "granary_overloaded_total counter\ngranary_overloaded_total %llu\n"
        "# HELP granary_inflight_calls Calls received over TCP and not answered yet.\n"
        "# TYPE granary_inflight_calls gauge\ngranary_inflight_calls %llu\n"
        "# HELP granary_silo_ready 1 when joined and active (what /readyz answers).\n# TYPE "
        "granary_silo_ready gauge\ngranary_silo_ready %d\n"
        "# HELP granary_silo_fenced 1 while fenced (no successful heartbeat for a lease).\n# TYPE "
        "granary_silo_fenced gauge\ngranary_silo_fenced %d\n"
        "# HELP granary_silo_draining 1 while a graceful stop is in progress.\n# TYPE granary_silo_draining "
        "gauge\ngranary_silo_draining %d\n",
        (unsigned long long)g.connections_open, (unsigned long long)g.connections_total,
        (unsigned long long)g.connections_refused, (unsigned long long)g.protocol_errors,
        (unsigned long long)g.handshakes_refused, (unsigned long long)g.overloaded,
        (unsigned long long)g.inflight, gr_silo_ready(s), s->fenced, s->stopping);
    rc |=
        gr__buf_printf(b, "# HELP granary_handshakes_refused_by_reason_total Handshakes refused, by reason.\n"
                          "# TYPE granary_handshakes_refused_by_reason_total counter\n");
    for (int i = 0; i < GR__REFUSE_COUNT; i++)
        rc |= gr__buf_printf(b, "granary_handshakes_refused_by_reason_total{reason=\"%s\"} %llu\n",
                             gr__refuse_name((gr__refuse_t)i), (unsigned long long)g.refused_by[i]);
    if (s->tls_server) {
        int64_t exp = gr__tls_ctx_cert_expiry_s(s->tls_server);
        rc |= gr__buf_printf(
            b,
            "# HELP granary_tls_certificate_expiry_seconds Seconds until the silo's certificate expires "
            "(negative: expired).\n# TYPE granary_tls_certificate_expiry_seconds gauge\n"
            "granary_tls_certificate_expiry_seconds %lld\n"
            "# HELP granary_tls_reloads_total Certificate reloads (SIGHUP), by result.\n"
            "# TYPE granary_tls_reloads_total counter\ngranary_tls_reloads_total{result=\"ok\"} %llu\n"
            "granary_tls_reloads_total{result=\"failed\"} %llu\n",
            (long long)(exp == INT64_MIN ? 0 : exp), (unsigned long long)s->tls_reloads,
            (unsigned long long)s->tls_reload_failures);
    }
    rc |= gr__buf_printf(
        b,
        "# HELP granary_connections_preauth Connections that have not completed their handshake.\n"
        "# TYPE granary_connections_preauth gauge\ngranary_connections_preauth %llu\n"
        "# HELP granary_request_bytes_buffered Request bytes of calls in flight (the memory budget).\n"
        "# TYPE granary_request_bytes_buffered gauge\ngranary_request_bytes_buffered %llu\n"
        "# HELP granary_partial_frame_timeouts_total Connections closed for a frame left incomplete.\n"
        "# TYPE granary_partial_frame_timeouts_total counter\ngranary_partial_frame_timeouts_total %llu\n"
        "# HELP granary_http_idle_evicted_total Idle HTTP connections closed to make room for new ones.\n"
        "# TYPE granary_http_idle_evicted_total counter\ngranary_http_idle_evicted_total %llu\n",
        (unsigned long long)g.preauth_open, (unsigned long long)g.bytes_buffered,
        (unsigned long long)g.partial_frame_timeouts,
        (unsigned long long)(s->http ? gr__http_evicted(s->http) : 0));
    if (s->reminders) {
        gr__reminders_stats_t rs;
        gr__reminders_get_stats(s->reminders, &rs);
        rc |= gr__buf_printf(
            b,
            "# HELP granary_reminders_fired_total Reminder firings acknowledged by their grain.\n"
            "# TYPE granary_reminders_fired_total counter\ngranary_reminders_fired_total %llu\n"
            "# HELP granary_reminder_failures_total Reminder firings that failed.\n# TYPE "
            "granary_reminder_failures_total counter\ngranary_reminder_failures_total %llu\n"
            "# HELP granary_reminder_polls_total Polls of the reminder table.\n# TYPE "
            "granary_reminder_polls_total counter\ngranary_reminder_polls_total %llu\n"
            "# HELP granary_reminders_in_flight Reminder firings waiting for their grain.\n# TYPE "
            "granary_reminders_in_flight gauge\ngranary_reminders_in_flight %llu\n",
            (unsigned long long)rs.fired, (unsigned long long)rs.fire_failures, (unsigned long long)rs.polls,
            (unsigned long long)rs.in_flight);
    }
    if (s->ttl) rc |= gr__ttl_write_metrics(s->ttl, b);
    if (s->membership) {
        const gr__view_t *v = gr__membership_view(s->membership);
        size_t active = 0;
        for (size_t i = 0; i < v->n; i++)
            active += v->members[i].status == GR__MS_ACTIVE;
        gr__router_stats_t r;
        gr__router_get_stats(s->router, &r);
        rc |= gr__buf_printf(
            b,
            "# HELP granary_membership_size Live silos in the current view.\n"
            "# TYPE granary_membership_size gauge\ngranary_membership_size %zu\n"
            "# HELP granary_membership_active Active silos in the current view.\n# TYPE "
            "granary_membership_active gauge\ngranary_membership_active %zu\n"
            "# HELP granary_membership_view_version Version of the membership view this silo holds.\n# TYPE "
            "granary_membership_view_version gauge\ngranary_membership_view_version %lld\n"
            "# HELP granary_forwarded_calls_total Calls forwarded to the silo hosting the grain.\n# TYPE "
            "granary_forwarded_calls_total counter\ngranary_forwarded_calls_total %llu\n"
            "# HELP granary_forward_retries_total Calls routed again after a forward or directory answer "
            "failed.\n# TYPE granary_forward_retries_total counter\ngranary_forward_retries_total %llu\n"
            "# HELP granary_directory_requests_sent_total Directory requests sent to partition owners.\n# "
            "TYPE granary_directory_requests_sent_total counter\ngranary_directory_requests_sent_total "
            "%llu\n"
            "# HELP granary_directory_requests_served_total Directory requests served for other silos.\n# "
            "TYPE granary_directory_requests_served_total counter\ngranary_directory_requests_served_total "
            "%llu\n"
            "# HELP granary_directory_lost_registrations_total Re-registrations after a view change that "
            "failed.\n# TYPE granary_directory_lost_registrations_total "
            "counter\ngranary_directory_lost_registrations_total %llu\n"
            "# HELP granary_directory_entries Grain directory entries this silo owns (its hash-ring share).\n"
            "# TYPE granary_directory_entries gauge\ngranary_directory_entries %llu\n"
            "# HELP granary_directory_cache_entries Directory lookups cached on this silo.\n# TYPE "
            "granary_directory_cache_entries gauge\ngranary_directory_cache_entries %llu\n"
            "# HELP granary_rebalance_moves_total Activations this silo started moving to rebalance.\n# TYPE "
            "granary_rebalance_moves_total counter\ngranary_rebalance_moves_total %llu\n"
            "# HELP granary_rebalance_mean_activations Activations per active silo at the last rebalancing "
            "comparison.\n# TYPE granary_rebalance_mean_activations gauge\ngranary_rebalance_mean_activations "
            "%llu\n"
            "# HELP granary_rebalance_calls_per_second Calls per second run on this silo, smoothed (what "
            "--rebalance-by calls evens out; over the last quarter second).\n# TYPE granary_rebalance_calls_per_second gauge\n"
            "granary_rebalance_calls_per_second %llu\n"
            "# HELP granary_rebalance_mean_calls_per_second Calls per second per active silo at the last "
            "comparison by calls (0: rebalancing by count).\n# TYPE granary_rebalance_mean_calls_per_second "
            "gauge\ngranary_rebalance_mean_calls_per_second %llu\n",
            v->n, active, (long long)v->version, (unsigned long long)r.forwarded,
            (unsigned long long)r.forward_retries, (unsigned long long)r.dir_requests_sent,
            (unsigned long long)r.dir_requests_served, (unsigned long long)r.lost_registrations,
            (unsigned long long)r.partition_entries, (unsigned long long)r.cache_entries,
            (unsigned long long)r.rebalance_moves, (unsigned long long)gr__router_mean_load(s->router),
            (unsigned long long)gr__router_cps(s->router), (unsigned long long)gr__router_mean_cps(s->router));
    }
    return rc;
}

/* Whether `host` (a Host header, maybe with :port) is in the comma list. */
static int gr__host_allowed(const char *list, const char *host) {
    char h[256];
    snprintf(h, sizeof h, "%s", host);
    char *colon = h[0] == '[' ? strstr(h, "]:") : strrchr(h, ':');
    if (colon) colon[h[0] == '[' ? 1 : 0] = '\0';
    size_t hl = strlen(h);
    if (!hl) return 0;
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && p[n - 1] == ' ')
            n--;
        if (n && n == hl && !strncasecmp(p, h, n)) return 1;
        p = e ? e + 1 : p + strlen(p);
    }
    return 0;
}

/* The dashboard, /api/ and /v1/: the Host allow-list, then the token (a bearer
 * header, the cookie it set, or ?token= which sets that cookie). 0 when
 * the request may go on; otherwise it was answered here. Probes and
 * /metrics never come here: they must answer whatever happens. */
static int gr__silo_http_guard(gr_silo_t *s, gr__http_req_t *req, const char *path, const char *query) {
    static const char text[] = "text/plain; charset=utf-8";
    char host[256] = "", got[300] = "";
    if (s->cfg.http_allowed_hosts && s->cfg.http_allowed_hosts[0] &&
        (gr__http_header(req, "Host", host, sizeof host) < 0 ||
         !gr__host_allowed(s->cfg.http_allowed_hosts, host))) {
        static const char msg[] = "Host not allowed (--http-allowed-hosts)\n";
        gr__http_respond(req, 403, text, msg, sizeof msg - 1);
        return -1;
    }
    const char *token = s->cfg.http_token;
    if (!token || !token[0]) {
        if ((!strcmp(path, "/api/call") || !strncmp(path, GR__LIT("/v1/"))) && s->cfg.secret &&
            s->cfg.secret[0]) {
            static const char msg[] =
                "calling grains over HTTP on a cluster with a secret needs --http-token\n";
            gr__http_respond(req, 403, text, msg, sizeof msg - 1);
            return -1;
        }
        return 0;
    }
    int ok = 0;
    static const char bearer[] = "Bearer ";
    if (gr__http_header(req, "Authorization", got, sizeof got) > (int)sizeof bearer - 1 &&
        !strncasecmp(got, bearer, sizeof bearer - 1))
        ok = gr__secret_equal(got + sizeof bearer - 1, strlen(got + sizeof bearer - 1), token);
    static const char cname[] = "granary_token=";
    char cookies[4096];
    if (!ok && gr__http_header(req, "Cookie", cookies, sizeof cookies) > 0) {
        /* name=value pairs separated by "; ": the name must match exactly. */
        for (char *c = cookies; c && !ok;) {
            while (*c == ' ')
                c++;
            char *end = strchr(c, ';');
            if (end) *end = '\0';
            if (!strncmp(c, cname, sizeof cname - 1))
                ok = gr__secret_equal(c + sizeof cname - 1, strlen(c + sizeof cname - 1), token);
            c = end ? end + 1 : NULL;
        }
    }
    if (!ok && gr__http_query_param(query, "token", got, sizeof got) >= 0 &&
        gr__secret_equal(got, strlen(got), token)) {
        /* The token's characters were checked at start: the line fits and
         * needs no quoting. */
        char cookie[320];
        int n = snprintf(cookie, sizeof cookie, "Set-Cookie: %s%s; HttpOnly; SameSite=Strict; Path=/", cname,
                         token);
        ok = n > 0 && (size_t)n < sizeof cookie && gr__http_add_header(req, cookie) == 0;
    }
    if (!ok) {
        gr__http_add_header(req, "WWW-Authenticate: Bearer realm=\"granary\"");
        static const char msg[] = "this silo's dashboard, /api/ and /v1/ need its --http-token\n";
        gr__http_respond(req, 401, text, msg, sizeof msg - 1);
        return -1;
    }
    return 0;
}

void gr__silo_http(void *ud, gr__http_req_t *req, const char *path, const char *query) {
    gr_silo_t *s = ud;
    static const char text[] = "text/plain; charset=utf-8";
    gr__buf_t body;
    gr__buf_init(&body);
    int status;
    const char *ctype = text;
    if (!strcmp(path, "/healthz")) {
        /* Answered by the loop itself: a blocked loop cannot answer at all. */
        gr__buf_printf(&body, "ok\n");
        status = 200;
    } else if (!strcmp(path, "/readyz")) {
        status = gr_silo_ready(s) ? 200 : 503;
        char why[400];
        if (status == 200)
            gr__buf_printf(&body, "ready\n");
        else
            gr__buf_printf(&body, "not ready: %s\n", gr__silo_not_ready_why(s, why, sizeof why));
    } else if (!strcmp(path, "/metrics")) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        status = gr__silo_metrics(s, &body) == 0 ? 200 : 503;
    } else if (!strncmp(path, GR__LIT("/v1/"))) {
        /* The grain-call API (silo/httpapi.c), served with or without the dashboard. */
        gr__buf_free(&body);
        gr__httpapi_env_t env = {s->rt, s->router, s->id};
        if (gr__silo_http_guard(s, req, path, query) == 0) gr__httpapi_handle(&env, req, path);
        return;
    } else if (s->dashboard) {
        gr__buf_free(&body);
        if (gr__silo_http_guard(s, req, path, query) == 0 &&
            !gr__dashboard_http(s->dashboard, req, path, query)) {
            static const char nf[] = "not found: try /healthz, /readyz, /metrics or / (the dashboard)\n";
            gr__http_respond(req, 404, text, nf, sizeof nf - 1);
        }
        return;
    } else {
        gr__buf_printf(&body, "not found: try /healthz, /readyz, /metrics%s\n",
                       s->dashboard ? " or / (the dashboard)" : "");
        status = 404;
    }
    gr__http_respond(req, status, ctype, body.data, body.len);
    gr__buf_free(&body);
}
