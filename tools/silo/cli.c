/* tools/silo/cli.c - the `silo` command line (libgranary_main): run, migrate, status. One option
 * table drives flag parsing, environment variables and --help, so the three
 * cannot drift apart. Reference: docs/configuration.md. */
#include <dlfcn.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string.h>
#include <strings.h>

#include "granary/silo_main.h"
#include "granary/storage.h"
#include "cli_internal.h"

/* U32: a positive whole number; COUNT: one that may be 0; BYTES: a size
 * with an optional unit (k, M, G: powers of 1000; KiB, MiB, GiB: of 1024). */
typedef enum { GR__OPT_STR, GR__OPT_U32, GR__OPT_BOOL, GR__OPT_COUNT, GR__OPT_BYTES } gr__opt_type_t;

typedef struct gr__cli {
    gr_silo_options_t cfg;
    const char *grains;
    const char *log_level;
    const char *log_format;
    gr_log_level_t level;   /* parsed from log_level */
    gr_log_format_t format; /* parsed from log_format */
    int help;
    int memory_limit_set; /* --memory-limit given (else the cgroup's limit sets the default) */
    uint32_t batch, wait_ms; /* migrate-state */
    const char *rebalance_by; /* count or calls */
} gr__cli_t;

typedef struct gr__opt {
    const char *flag;
    const char *env;
    const char *metavar;
    gr__opt_type_t type;
    size_t offset;
    unsigned commands; /* bit 0 run, bit 1 migrate, bit 2 status, bit 3 migrate-state */
    const char *help;
} gr__opt_t;

#define GR__RUN 1u
#define GR__MIGRATE 2u
#define GR__STATUS 4u
#define GR__MIGSTATE 8u
#define GR__ALL 15u
#define GR__C(field) offsetof(gr__cli_t, cfg.field)
#define GR__X(field) offsetof(gr__cli_t, field)

static const gr__opt_t gr__opts[] = {
    {"--database", "GRANARY_DATABASE_URL", "URL", GR__OPT_STR, GR__C(database_url), GR__ALL,
     "PostgreSQL connection URL or libpq key=value string (also read from DATABASE_URL)"},
    {"--memory", "GRANARY_MEMORY", NULL, GR__OPT_BOOL, GR__C(memory_storage), GR__RUN,
     "keep grain state in memory instead of PostgreSQL (dev mode: state is lost on exit)"},
    {"--listen", "GRANARY_LISTEN", "HOST:PORT", GR__OPT_STR, GR__C(listen), GR__RUN,
     "address for client connections (default 127.0.0.1:7700)"},
    {"--advertise", "GRANARY_ADVERTISE", "HOST", GR__OPT_STR, GR__C(advertise), GR__RUN,
     "address other silos use to reach this one (default $POD_IP, else the listen host)"},
    {"--http", "GRANARY_HTTP", "HOST:PORT", GR__OPT_STR, GR__C(http), GR__RUN,
     "serve /healthz, /readyz, /metrics and the dashboard (/) over HTTP here (default: off; 0.0.0.0:7780 in "
     "pods)"},
    {"--no-dashboard", "GRANARY_NO_DASHBOARD", NULL, GR__OPT_BOOL, GR__C(no_dashboard), GR__RUN,
     "serve only probes and metrics on the HTTP port: no dashboard page, no /api/ (default: served)"},
    {"--http-token", "GRANARY_HTTP_TOKEN", "TOKEN", GR__OPT_STR, GR__C(http_token), GR__RUN,
     "token the dashboard and /api/ require (Authorization: Bearer TOKEN, or ?token=TOKEN once, which sets a "
     "cookie); probes and /metrics stay open; prefer the env var (default: none, and /api/call is then "
     "refused "
     "when --secret is set)"},
    {"--http-allowed-hosts", "GRANARY_HTTP_ALLOWED_HOSTS", "H1,H2", GR__OPT_STR, GR__C(http_allowed_hosts),
     GR__RUN, "Host header names the dashboard and /api/ answer, against DNS rebinding (default: any)"},
    {"--cluster", "GRANARY_CLUSTER", "NAME", GR__OPT_STR, GR__C(cluster), GR__RUN | GR__STATUS | GR__MIGSTATE,
     "cluster (service) name; state rows and handshakes are scoped by it (default \"default\")"},
    {"--secret", "GRANARY_CLUSTER_SECRET", "SECRET", GR__OPT_STR, GR__C(secret), GR__RUN,
     "secret every client must present (and silos, unless --silo-secret is set) (default: none); prefer the "
     "env var"},
    {"--silo-secret", "GRANARY_SILO_SECRET", "SECRET", GR__OPT_STR, GR__C(silo_secret), GR__RUN,
     "credential silos present to each other; a client holding only --secret cannot act as a silo "
     "(default: --secret, which lets any client claim the silo role); prefer the env var"},
    {"--tls-cert", "GRANARY_TLS_CERT", "FILE", GR__OPT_STR, GR__C(tls_cert), GR__RUN,
     "PEM certificate chain: the grain port speaks TLS and silos dial each other with TLS presenting it "
     "(default: plaintext); reread on SIGHUP"},
    {"--tls-key", "GRANARY_TLS_KEY", "FILE", GR__OPT_STR, GR__C(tls_key), GR__RUN,
     "PEM private key of --tls-cert; reread on SIGHUP"},
    {"--tls-ca", "GRANARY_TLS_CA", "FILE", GR__OPT_STR, GR__C(tls_ca), GR__RUN,
     "PEM CA bundle other silos' certificates (and, with --tls-client-auth, clients') must chain to "
     "(default: the system trust store); reread on SIGHUP"},
    {"--tls-client-auth", "GRANARY_TLS_CLIENT_AUTH", NULL, GR__OPT_BOOL, GR__C(tls_client_auth), GR__RUN,
     "mutual TLS: refuse every connection without a certificate signed by --tls-ca (default: off)"},
    {"--tls-server-name", "GRANARY_TLS_SERVER_NAME", "NAME", GR__OPT_STR, GR__C(tls_server_name), GR__RUN,
     "DNS name other silos' certificates must carry (default: each silo's advertised address, checked "
     "against the certificate's IP SANs)"},
    {"--accept-secret", "GRANARY_ACCEPT_CLUSTER_SECRET", "SECRET", GR__OPT_STR, GR__C(accept_secret), GR__RUN,
     "a second client secret accepted (never sent): rotate --secret without refused clients "
     "(docs/security.md) (default: none); prefer the env var"},
    {"--accept-silo-secret", "GRANARY_ACCEPT_SILO_SECRET", "SECRET", GR__OPT_STR, GR__C(accept_silo_secret),
     GR__RUN,
     "a second silo secret accepted from peers (never sent): rotate --silo-secret with no refused silo links "
     "(default: none); prefer the env var"},
    {"--silo-id", "GRANARY_SILO_ID", "ID", GR__OPT_STR, GR__C(silo_id), GR__RUN,
     "this silo's id (default: ADVERTISE:PORT-STARTTIME; $POD_NAME is used when set)"},
    {"--grains", "GRANARY_GRAINS", "FILE.so", GR__OPT_STR, GR__X(grains), GR__RUN | GR__MIGSTATE,
     "shared object whose granary_grains() returns the grain classes to host"},
    {"--batch", "GRANARY_MIGRATE_STATE_BATCH", "N", GR__OPT_U32, GR__X(batch), GR__MIGSTATE,
     "migrate-state: rows upgraded per statement, at most 10000 (default 500)"},
    {"--wait-ms", "GRANARY_MIGRATE_STATE_WAIT_MS", "MS", GR__OPT_COUNT, GR__X(wait_ms), GR__MIGSTATE,
     "migrate-state: how long to keep retrying rows whose grain is active (default 60000; 0: one pass)"},
    {"--pg-pool", "GRANARY_PG_POOL", "N", GR__OPT_U32, GR__C(pg_pool_size), GR__RUN,
     "PostgreSQL connections (default 4)"},
    {"--pg-timeout-ms", "GRANARY_PG_TIMEOUT_MS", "MS", GR__OPT_U32, GR__C(pg_op_timeout_ms), GR__RUN,
     "fail a storage operation that waited this long for a connection (default 5000)"},
    {"--idle-ms", "GRANARY_IDLE_MS", "MS", GR__OPT_U32, GR__C(idle_deactivate_ms), GR__RUN,
     "deactivate grains idle this long, saving dirty state (default 600000)"},
    {"--call-timeout-ms", "GRANARY_CALL_TIMEOUT_MS", "MS", GR__OPT_U32, GR__C(call_timeout_ms), GR__RUN,
     "timeout of calls that name none (default 30000)"},
    {"--max-queue", "GRANARY_MAX_QUEUE", "N", GR__OPT_U32, GR__C(max_queue_per_grain), GR__RUN,
     "queued calls per grain before GR_EOVERLOAD (default 10000)"},
    {"--max-activations", "GRANARY_MAX_ACTIVATIONS", "N", GR__OPT_COUNT, GR__C(max_activations), GR__RUN,
     "activations kept at most: the least recently used idle ones go first (state saved), then new ones get "
     "GR_EOVERLOAD (default 0: no limit)"},
    {"--memory-limit", "GRANARY_MEMORY_LIMIT", "SIZE", GR__OPT_BYTES, GR__C(memory_limit), GR__RUN,
     "resident memory to stay under, e.g. 512MiB: idle grains are evicted from 90 % of it, new activations "
     "refused at it (default: 80 % of the container's cgroup memory limit if it has one, else none; 0: "
     "none)"},
    {"--no-migrate", "GRANARY_NO_MIGRATE", NULL, GR__OPT_BOOL, GR__C(no_migrate), GR__RUN,
     "no live migration: a graceful stop deactivates every grain (state saved) and the next silo reads it from "
     "storage; nothing is rebalanced (default: activations move live to the silo that hosts them next)"},
    {"--rebalance-rate", "GRANARY_REBALANCE_RATE", "N", GR__OPT_U32, GR__C(rebalance_rate), GR__RUN,
     "activations this silo moves per second at most toward an even spread by count when silos join "
     "(default 1000; 0: no rebalancing)"},
    {"--rebalance-by", "GRANARY_REBALANCE_BY", "WHAT", GR__OPT_STR, GR__X(rebalance_by), GR__RUN,
     "what rebalancing evens out: count (activations per silo, least recently used move first) or calls "
     "(calls per second per silo: one busiest activation per round and short silo) (default count)"},
    {"--rebalance-window-ms", "GRANARY_REBALANCE_WINDOW_MS", "MS", GR__OPT_U32, GR__C(rebalance_window_ms),
     GR__RUN, "an activation that arrived by migration is not moved again within (default 60000)"},
    {"--state-ttl-page-rows", "GRANARY_STATE_TTL_PAGE_ROWS", "N", GR__OPT_COUNT, GR__C(state_ttl_page_rows),
     GR__RUN,
     "stored rows of classes with a state_ttl_s the TTL sweep looks at per second, at most 10000 (default 1000; "
     "0: no sweep on this silo)"},
    {"--max-connections", "GRANARY_MAX_CONNECTIONS", "N", GR__OPT_U32, GR__C(max_connections), GR__RUN,
     "open client connections before new ones are refused (default 4096)"},
    {"--max-inflight", "GRANARY_MAX_INFLIGHT", "N", GR__OPT_U32, GR__C(max_inflight_per_conn), GR__RUN,
     "pipelined calls per connection before GR_EOVERLOAD (default 10000)"},
    {"--max-frame-bytes", "GRANARY_MAX_FRAME_BYTES", "N", GR__OPT_U32, GR__C(max_frame_bytes), GR__RUN,
     "largest frame body accepted, 1024..1114112 (default 1114112)"},
    {"--handshake-timeout-ms", "GRANARY_HANDSHAKE_TIMEOUT_MS", "MS", GR__OPT_U32, GR__C(handshake_timeout_ms),
     GR__RUN, "close connections that send no HELLO within (default 5000)"},
    {"--max-preauth-connections", "GRANARY_MAX_PREAUTH_CONNECTIONS", "N", GR__OPT_U32,
     GR__C(max_preauth_connections), GR__RUN,
     "connections that have not completed their handshake; more are refused at once, and they never count "
     "against --max-connections (default 256)"},
    {"--frame-timeout-ms", "GRANARY_FRAME_TIMEOUT_MS", "MS", GR__OPT_U32, GR__C(frame_timeout_ms), GR__RUN,
     "close a connection whose frame stays incomplete this long while it is being read (default 10000)"},
    {"--max-conn-bytes", "GRANARY_MAX_CONN_BYTES", "BYTES", GR__OPT_U32, GR__C(max_conn_bytes), GR__RUN,
     "request bytes in flight on one connection before the silo stops reading it (default 67108864)"},
    {"--max-buffered-bytes", "GRANARY_MAX_BUFFERED_BYTES", "BYTES", GR__OPT_U32, GR__C(max_buffered_bytes),
     GR__RUN,
     "request bytes in flight on the whole silo before new requests get GR_EOVERLOAD (default 268435456)"},
    {"--drain-timeout-ms", "GRANARY_DRAIN_TIMEOUT_MS", "MS", GR__OPT_U32, GR__C(drain_timeout_ms), GR__RUN,
     "give up a graceful stop after this long and exit 1 (default 25000)"},
    {"--heartbeat-ms", "GRANARY_HEARTBEAT_MS", "MS", GR__OPT_U32, GR__C(heartbeat_ms), GR__RUN,
     "membership heartbeat and view refresh interval (default 200)"},
    {"--lease-ms", "GRANARY_LEASE_MS", "MS", GR__OPT_U32, GR__C(lease_ms), GR__RUN,
     "a silo silent this long is declared dead; we fence ourselves too (default 1200)"},
    {"--reminder-poll-ms", "GRANARY_REMINDER_POLL_MS", "MS", GR__OPT_U32, GR__C(reminder_poll_ms), GR__RUN,
     "how often due reminders are looked for: their firing precision (default 1000)"},
    {"--reminder-min-period-ms", "GRANARY_REMINDER_MIN_PERIOD_MS", "MS", GR__OPT_U32,
     GR__C(reminder_min_period_ms), GR__RUN, "shortest reminder period accepted (default 1000)"},
    {"--log-level", "GRANARY_LOG_LEVEL", "LEVEL", GR__OPT_STR, GR__X(log_level), GR__ALL,
     "debug, info, warn or error (default info)"},
    {"--log-format", "GRANARY_LOG_FORMAT", "FORMAT", GR__OPT_STR, GR__X(log_format), GR__ALL,
     "text or json (default text)"},
    {"--help", NULL, NULL, GR__OPT_BOOL, GR__X(help), GR__ALL, "show this help and exit"},
};

/* The options of `command` (GR__ALL: every one, for plain --help). */
static void gr__usage(FILE *f, const char *prog, unsigned command) {
    if (command == GR__MIGRATE || command == GR__STATUS || command == GR__MIGSTATE) {
        fprintf(f, "usage: %s %s [OPTIONS]    %s\n\nOptions (each also as its environment variable):\n", prog,
                command == GR__MIGRATE ? "migrate" : command == GR__STATUS ? "status" : "migrate-state CLASS",
                command == GR__MIGRATE   ? "create or upgrade the schema (idempotent)"
                : command == GR__STATUS ? "show the schema version, members and stored grains"
                                        : "upgrade every stored row of CLASS to its state_version, online and "
                                          "resumable (docs/lifecycle.md)");
        for (size_t i = 0; i < (sizeof gr__opts / sizeof gr__opts[0]); i++) {
            const gr__opt_t *o = &gr__opts[i];
            if (!(o->commands & command)) continue;
            char left[64];
            snprintf(left, sizeof left, "%s%s%s", o->flag, o->metavar ? " " : "",
                     o->metavar ? o->metavar : "");
            fprintf(f, "  %-28s %s\n", left, o->help);
            if (o->env) fprintf(f, "  %-28s   env: %s\n", "", o->env);
        }
        return;
    }
    fprintf(f,
            "usage: %s [run] [OPTIONS]        host grains (the default command)\n"
            "       %s migrate --database URL  create or upgrade the schema (idempotent)\n"
            "       %s status --database URL   show the schema version and stored grains\n"
            "       %s migrate-state CLASS --database URL --grains FILE.so\n"
            "                                  upgrade CLASS's stored rows through its upgrade_state\n"
            "       %s --version\n\n"
            "Every option can also be set by its environment variable; a flag wins over\n"
            "the environment. Options:\n",
            prog, prog, prog, prog, prog);
    for (size_t i = 0; i < (sizeof gr__opts / sizeof gr__opts[0]); i++) {
        const gr__opt_t *o = &gr__opts[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->flag, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(f, "  %-28s %s\n", left, o->help);
        if (o->env) fprintf(f, "  %-28s   env: %s\n", "", o->env);
    }
    fprintf(f, "\nExit status: 0 success (also after a graceful stop on SIGTERM/SIGINT),\n"
               "1 runtime failure (database unreachable for migrate, drain timeout; migrate-state: rows left,\n"
               "  see its message), "
               "2 usage or configuration error (also: the silo id is a live member's), 3 declared dead by "
               "the cluster.\n");
}

static int gr__set(gr__cli_t *cli, const gr__opt_t *o, const char *value, const char *source) {
    void *field = (char *)cli + o->offset;
    switch (o->type) {
    case GR__OPT_STR:
        *(const char **)field = value;
        return 0;
    case GR__OPT_BOOL:
        if (!value || !strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes")) {
            *(int *)field = 1;
            return 0;
        }
        if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no") || !value[0]) {
            *(int *)field = 0;
            return 0;
        }
        fprintf(stderr, "silo: %s: expected true or false, got '%s'\n", source, value);
        return GR_ECONFIG;
    case GR__OPT_COUNT: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || !strchr("0123456789", value[0]) || v > UINT32_MAX) {
            fprintf(stderr, "silo: %s: expected a whole number (0: no limit), got '%s'\n", source, value);
            return GR_ECONFIG;
        }
        *(uint32_t *)field = (uint32_t)v;
        return 0;
    }
    case GR__OPT_BYTES: {
        static const struct {
            const char *unit;
            unsigned long long mult;
        } units[] = {{"", 1},
                     {"b", 1},
                     {"k", 1000ull},
                     {"kb", 1000ull},
                     {"m", 1000000ull},
                     {"mb", 1000000ull},
                     {"g", 1000000000ull},
                     {"gb", 1000000000ull},
                     {"kib", 1ull << 10},
                     {"mib", 1ull << 20},
                     {"gib", 1ull << 30},
                     {"ki", 1ull << 10},
                     {"mi", 1ull << 20},
                     {"gi", 1ull << 30}};
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        unsigned long long mult = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0] && end != value && !mult; i++)
            if (!strcasecmp(end, units[i].unit)) mult = units[i].mult;
        /* strtoull would skip blanks and take "-5" as a huge number. */
        if (errno || end == value || !strchr("0123456789", value[0]) || !mult ||
            (v && mult > UINT64_MAX / v)) {
            fprintf(stderr, "silo: %s: expected a size such as 512MiB, 2G or 1048576 (0: none), got '%s'\n",
                    source, value);
            return GR_ECONFIG;
        }
        *(uint64_t *)field = v * mult;
        cli->memory_limit_set = 1;
        return 0;
    }
    case GR__OPT_U32: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || v == 0 || v > UINT32_MAX) {
            fprintf(stderr, "silo: %s: expected a positive whole number, got '%s'\n", source, value);
            return GR_ECONFIG;
        }
        *(uint32_t *)field = (uint32_t)v;
        if (o->offset == GR__C(pg_pool_size)) cli->cfg.pg_pool_size = (unsigned)v;
        return 0;
    }
    }
    return GR_ECONFIG;
}

/* pg_pool_size is unsigned, not uint32_t, in the public struct: identical on
 * every platform we build for, which this guards. */
_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "unsigned must be 32 bits");

static int gr__parse(gr__cli_t *cli, unsigned command, int argc, char **argv) {
    /* Environment first, then flags override it. */
    for (size_t i = 0; i < (sizeof gr__opts / sizeof gr__opts[0]); i++) {
        const gr__opt_t *o = &gr__opts[i];
        const char *v = o->env ? getenv(o->env) : NULL;
        if (v && (o->commands & command) && gr__set(cli, o, v, o->env) != 0) return GR_ECONFIG;
    }
    if (!cli->cfg.database_url && getenv("DATABASE_URL")) cli->cfg.database_url = getenv("DATABASE_URL");
    if (!cli->cfg.advertise && getenv("POD_IP") && getenv("POD_IP")[0]) cli->cfg.advertise = getenv("POD_IP");
    if (!cli->cfg.silo_id && getenv("POD_NAME") && getenv("POD_NAME")[0])
        cli->cfg.silo_id = getenv("POD_NAME");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
        const gr__opt_t *o = NULL;
        for (size_t k = 0; k < (sizeof gr__opts / sizeof gr__opts[0]); k++)
            if (strlen(gr__opts[k].flag) == alen && !strncmp(gr__opts[k].flag, a, alen)) o = &gr__opts[k];
        if (!strcmp(a, "-h")) o = &gr__opts[(sizeof gr__opts / sizeof gr__opts[0]) - 1];
        if (!o) {
            fprintf(stderr, "silo: unknown option '%s' (see --help)\n", a);
            return GR_ECONFIG;
        }
        if (!(o->commands & command)) {
            fprintf(stderr, "silo: option %s does not apply to this command (see --help)\n", o->flag);
            return GR_ECONFIG;
        }
        const char *v = NULL;
        if (o->type != GR__OPT_BOOL) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else {
                fprintf(stderr, "silo: option %s needs a value (%s)\n", o->flag, o->metavar);
                return GR_ECONFIG;
            }
        } else if (eq) {
            v = eq + 1;
        }
        if (gr__set(cli, o, v, o->flag) != 0) return GR_ECONFIG;
    }
    gr_log_level_t lvl = GR_LOG_LEVEL_INFO;
    if (cli->log_level && gr_log_parse_level(cli->log_level, &lvl) != 0) {
        fprintf(stderr, "silo: --log-level: expected debug, info, warn or error, got '%s'\n", cli->log_level);
        return GR_ECONFIG;
    }
    gr_log_format_t fmt = GR_LOG_FORMAT_TEXT;
    if (cli->log_format) {
        if (!strcmp(cli->log_format, "json"))
            fmt = GR_LOG_FORMAT_JSON;
        else if (strcmp(cli->log_format, "text") != 0) {
            fprintf(stderr, "silo: --log-format: expected text or json, got '%s'\n", cli->log_format);
            return GR_ECONFIG;
        }
    }
    cli->level = lvl;
    cli->format = fmt;
    gr_log_setup(lvl, fmt, NULL);
    return 0;
}

/* ---- silo migrate ---- */

static int gr__cmd_migrate(gr__cli_t *cli) {
    if (!cli->cfg.database_url) {
        fprintf(stderr, "silo migrate: --database URL (or GRANARY_DATABASE_URL) is required\n");
        return 2;
    }
    char err[1024];
    int rc = gr_storage_pg_migrate(cli->cfg.database_url, stdout, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "silo migrate: %s\n", err);
        return 1;
    }
    printf("schema is at version %d\n", gr_storage_pg_schema_version());
    return 0;
}

/* ---- silo status ---- */

static int gr__cmd_status(gr__cli_t *cli) {
    if (!cli->cfg.database_url) {
        fprintf(stderr, "silo status: --database URL (or GRANARY_DATABASE_URL) is required\n");
        return 2;
    }
    PGconn *c = PQconnectdb(cli->cfg.database_url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "silo status: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    int rc = 0;
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM granary_schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "silo status: schema not found (run `silo migrate`): %s", PQresultErrorMessage(r));
        rc = 1;
    } else {
        printf("schema version: %s (this binary knows %d)\n", PQgetvalue(r, 0, 0),
               gr_storage_pg_schema_version());
    }
    PQclear(r);
    if (rc == 0) {
        const char *p[1] = {cli->cfg.cluster ? cli->cfg.cluster : "default"};
        r = PQexecParams(
            c,
            "SELECT silo_id, address || ':' || port, status, "
            "(extract(epoch FROM (now() - heartbeat_at)) * 1000)::bigint, started_at "
            "FROM granary_silo WHERE cluster = $1 AND (status <> 'dead' OR "
            "heartbeat_at > now() - interval '10 minutes') ORDER BY status <> 'dead' DESC, silo_id",
            1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            printf("cluster %s: members (dead ones from the last 10 minutes)\n", p[0]);
            printf("  %-36s %-22s %-14s %12s  %s\n", "SILO", "ADDRESS", "STATUS", "HEARTBEAT", "STARTED");
            for (int i = 0; i < PQntuples(r); i++)
                printf("  %-36s %-22s %-14s %9s ms  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                       PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
            if (PQntuples(r) == 0) printf("  (none)\n");
        }
        PQclear(r);
        r = PQexecParams(c,
                         "SELECT grain_class, count(*), max(updated_at) FROM granary_grain_state "
                         "WHERE service = $1 GROUP BY grain_class ORDER BY grain_class",
                         1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "silo status: %s", PQresultErrorMessage(r));
            rc = 1;
        } else {
            printf("cluster %s: stored grains by class\n", p[0]);
            printf("  %-24s %10s  %s\n", "CLASS", "GRAINS", "LAST WRITE");
            for (int i = 0; i < PQntuples(r); i++)
                printf("  %-24s %10s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
            if (PQntuples(r) == 0) printf("  (none)\n");
        }
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

/* ---- silo run ---- */

typedef struct gr__run {
    uv_loop_t loop;
    gr_silo_t *silo;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t exit_deadline; /* initialised once the process must go */
    int exiting;
    int closing;
    int dead;
    int signals;
    int exit_code;
} gr__run_t;

/* Bounds how long a silo that must go (declared dead, or a graceful stop
 * that timed out) may spend closing. */
#define GR__EXIT_CLOSE_MS 3000

static void gr__run_closed(void *ud) {
    gr__run_t *r = ud;
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sighup, NULL);
    if (r->exiting) uv_close((uv_handle_t *)&r->exit_deadline, NULL);
}

static void gr__run_exit_deadline(uv_timer_t *t) {
    gr__run_t *r = t->data;
    gr_log(GR_LOG_LEVEL_ERROR, "still closing after %d ms: exiting %d now", GR__EXIT_CLOSE_MS, r->exit_code);
    _exit(r->exit_code);
}

/* Close the silo; a clean close when it is quick, _exit(code) otherwise:
 * whatever the close still waits for (a stalled connection, a slow peer, a
 * grain that never answers), the process ends. */
static void gr__run_close_or_exit(gr__run_t *r, int code) {
    if (r->closing) return; /* a second reason to go (dead while stopping): the first one's code stands */
    r->closing = 1;
    r->exit_code = code;
    if (code != 0) {
        r->exiting = 1;
        uv_timer_init(&r->loop, &r->exit_deadline);
        r->exit_deadline.data = r;
        uv_timer_start(&r->exit_deadline, gr__run_exit_deadline, GR__EXIT_CLOSE_MS, 0);
    }
    gr_silo_close(r->silo, gr__run_closed, r);
}

static void gr__run_stopped(gr_silo_t *silo, int status, void *ud) {
    gr__run_t *r = ud;
    (void)silo;
    gr_log(GR_LOG_LEVEL_INFO, "graceful stop %s; exiting %d", status == 0 ? "complete" : "timed out",
           status == 0 ? 0 : 1);
    gr__run_close_or_exit(r, status == 0 ? 0 : 1);
}

static void gr__run_dead(gr_silo_t *silo, void *ud) {
    gr__run_t *r = ud;
    if (gr_silo_join_refused(silo)) {
        gr_log(GR_LOG_LEVEL_ERROR, "not joining: this silo id is a live member's; exiting with status 2");
        r->dead = 1;
        gr__run_close_or_exit(r, 2);
        return;
    }
    gr_log(GR_LOG_LEVEL_ERROR,
           "declared dead by the cluster: exiting with status 3 (a new incarnation must rejoin)");
    /* Another incarnation may already own our grains, so this process must
     * go soon. */
    r->dead = 1;
    gr__run_close_or_exit(r, 3);
}

static void gr__on_signal(uv_signal_t *h, int signum) {
    gr__run_t *r = h->data;
    if (r->dead) return; /* already on its way out with status 3 */
    if (++r->signals > 1) {
        gr_log(GR_LOG_LEVEL_WARN, "second signal (%s): exiting now",
               signum == SIGTERM ? "SIGTERM" : "SIGINT");
        _exit(128 + signum);
    }
    gr_log(GR_LOG_LEVEL_INFO, "%s received: stopping gracefully (send again to exit at once)",
           signum == SIGTERM ? "SIGTERM" : "SIGINT");
    if (gr_silo_stop(r->silo, gr__run_stopped, r) != 0) _exit(1);
}

/* SIGHUP: read the TLS files again (cert-manager renewed them). */
static void gr__on_sighup(uv_signal_t *h, int signum) {
    gr__run_t *r = h->data;
    char err[512] = "";
    int rc = gr_silo_reload_tls(r->silo, err, sizeof err);
    if (rc == 0)
        gr_log(GR_LOG_LEVEL_INFO, "SIGHUP: TLS certificate, key and CA reloaded; new connections use them");
    else if (rc == GR_ESTATE)
        gr_log(GR_LOG_LEVEL_INFO, "SIGHUP: nothing to reload (TLS is not configured)");
    else
        gr_log(GR_LOG_LEVEL_ERROR, "SIGHUP: TLS reload failed, still using the previous files: %s", err);
}

int gr__grains_of(const char *prog, const char *path, const gr_class_t *const **out) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s: --grains %s: %s\n", prog, path, dlerror());
        return GR_ECONFIG;
    }
    void *sym = dlsym(h, GR_GRAINS_SYMBOL);
    if (!sym) {
        fprintf(stderr, "%s: --grains %s: no function %s() in it\n", prog, path, GR_GRAINS_SYMBOL);
        return GR_ECONFIG;
    }
    gr_grains_fn fn;
    memcpy(&fn, &sym, sizeof fn); /* object pointer to function pointer, the POSIX way */
    /* The library stays loaded for the life of the process: classes point into it. */
    *out = fn();
    return 0;
}

static int gr__load_grains(gr_silo_t *silo, const char *path) {
    const gr_class_t *const *classes = NULL;
    if (gr__grains_of("silo", path, &classes) != 0) return GR_ECONFIG;
    int n = 0;
    for (; classes && classes[n]; n++) {
        int rc = gr_silo_register(silo, classes[n]);
        if (rc != 0) {
            fprintf(stderr, "silo: --grains %s: class '%s': %s\n", path,
                    classes[n]->name ? classes[n]->name : "(null)", gr_strerror(rc));
            return GR_ECONFIG;
        }
    }
    if (n == 0) {
        fprintf(stderr, "silo: --grains %s: %s() returned no classes\n", path, GR_GRAINS_SYMBOL);
        return GR_ECONFIG;
    }
    return 0;
}

/* A database that refuses this silo for good (an unknown role or
 * database, a wrong or missing password, no pg_hba.conf entry) will not
 * heal by retrying: say so and exit 2 at once (a pod then restarts with
 * backoff, visibly). One that does not answer (down, starting, out of
 * reach) is no reason to stop: the silo retries it as usual. Returns 0 to
 * go on, 2 to exit. */
static int gr__preflight_database(const char *url) {
    static const char *const keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {url, "5", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1); /* the URL expanded, its timeout bounded */
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        const char *e = PQerrorMessage(c);
        /* Only what a retry cannot fix: "too many connections for role" or an
         * LDAP/RADIUS server that is down ("... authentication failed") heal. */
        static const char *const lasting[] = {"password authentication failed", "no password supplied",
                                              "no pg_hba.conf entry", "does not exist", NULL};
        for (int i = 0; lasting[i] && !rc; i++)
            if (strstr(e, lasting[i])) rc = 2;
        if (rc)
            fprintf(stderr,
                    "silo: --database: the server refuses this silo: %s"
                    "silo: this does not heal by retrying: fix the URL's role, password or database, or the "
                    "server's pg_hba.conf\n",
                    e);
    }
    PQfinish(c);
    return rc;
}

/* 80 % of the container's memory limit (cgroup v2 memory.max, else v1
 * memory.limit_in_bytes), or 0 when there is none: the default of
 * --memory-limit, leaving room for what is not grains (buffers, libpq). */
static uint64_t gr__cgroup_memory_default(void) {
    static const char *const files[] = {"/sys/fs/cgroup/memory.max",
                                        "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) continue;
        char buf[64] = "";
        int got = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        if (!got || !strncmp(buf, "max", 3)) return 0;
        unsigned long long v = strtoull(buf, NULL, 10);
        return v && v < (1ull << 50) ? v / 10 * 8 : 0; /* v1 says "none" with a huge number */
    }
    return 0;
}

static int gr__cmd_run(gr__cli_t *cli, const gr_class_t *const *classes) {
    gr__run_t r;
    memset(&r, 0, sizeof r);
    uv_loop_init(&r.loop);
    char err[512] = "";
    if (!cli->memory_limit_set) cli->cfg.memory_limit = gr__cgroup_memory_default();
    if (cli->rebalance_by && strcmp(cli->rebalance_by, "count") != 0 && strcmp(cli->rebalance_by, "calls") != 0) {
        fprintf(stderr, "silo: --rebalance-by: expected count or calls, got '%s'\n", cli->rebalance_by);
        uv_loop_close(&r.loop);
        return 2;
    }
    cli->cfg.rebalance_by_calls = cli->rebalance_by && !strcmp(cli->rebalance_by, "calls");
    int rc = gr_silo_new(&r.loop, &cli->cfg, &r.silo, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "silo: %s\n", err[0] ? err : gr_strerror(rc));
        uv_loop_close(&r.loop);
        return 2;
    }
    if (!cli->cfg.memory_storage && gr__preflight_database(cli->cfg.database_url) != 0) {
        gr_silo_close(r.silo, NULL, NULL);
        uv_run(&r.loop, UV_RUN_DEFAULT);
        uv_loop_close(&r.loop);
        return 2;
    }
    gr_log_setup(cli->level, cli->format, gr_silo_id(r.silo));
    if (cli->cfg.memory_limit || cli->cfg.max_activations)
        gr_log(GR_LOG_LEVEL_INFO, "memory bounds: %llu bytes resident%s, %u activations (0: no limit)",
               (unsigned long long)cli->cfg.memory_limit,
               cli->memory_limit_set ? "" : " (80 % of the container's limit)", cli->cfg.max_activations);
    for (int i = 0; rc == 0 && classes && classes[i]; i++) {
        rc = gr_silo_register(r.silo, classes[i]);
        if (rc != 0) fprintf(stderr, "silo: class '%s': %s\n", classes[i]->name, gr_strerror(rc));
    }
    if (rc == 0 && cli->grains) rc = gr__load_grains(r.silo, cli->grains);
    if (rc == 0 && !classes && !cli->grains) {
        fprintf(stderr, "silo: no grain classes: pass --grains FILE.so (see --help)\n");
        rc = GR_ECONFIG;
    }
    if (rc == 0) {
        rc = gr_silo_start(r.silo, err, sizeof err);
        if (rc != 0) fprintf(stderr, "silo: %s\n", err);
    }
    if (rc != 0) {
        gr_silo_close(r.silo, NULL, NULL);
        uv_run(&r.loop, UV_RUN_DEFAULT);
        uv_loop_close(&r.loop);
        return 2;
    }
    gr_silo_on_dead(r.silo, gr__run_dead, &r);
    uv_signal_init(&r.loop, &r.sigterm);
    uv_signal_init(&r.loop, &r.sigint);
    r.sigterm.data = r.sigint.data = &r;
    uv_signal_start(&r.sigterm, gr__on_signal, SIGTERM);
    uv_signal_start(&r.sigint, gr__on_signal, SIGINT);
    uv_signal_init(&r.loop, &r.sighup);
    r.sighup.data = &r;
    uv_signal_start(&r.sighup, gr__on_sighup, SIGHUP);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_loop_close(&r.loop);
    return r.exit_code;
}

int gr_silo_main(int argc, char **argv, const gr_class_t *const *classes) {
    const char *prog = argc > 0 ? argv[0] : "silo";
    const char *slash = strrchr(prog, '/');
    if (slash) prog = slash + 1;
    signal(SIGPIPE, SIG_IGN); /* a peer closing mid-write is an error code, not a death */
    unsigned command = GR__RUN;
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (!strcmp(argv[1], "run"))
            command = GR__RUN;
        else if (!strcmp(argv[1], "migrate"))
            command = GR__MIGRATE;
        else if (!strcmp(argv[1], "status"))
            command = GR__STATUS;
        else if (!strcmp(argv[1], "migrate-state"))
            command = GR__MIGSTATE;
        else if (!strcmp(argv[1], "help")) {
            gr__usage(stdout, prog, GR__ALL);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown command '%s' (run, migrate, status, migrate-state; see --help)\n", prog,
                    argv[1]);
            return 2;
        }
        first = 2;
    }
    const char *class_name = NULL;
    if (command == GR__MIGSTATE && argc > 2 && argv[2][0] != '-') {
        class_name = argv[2];
        first = 3;
    }
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("granary silo %s\n", gr_version());
        return 0;
    }
    gr__cli_t cli;
    memset(&cli, 0, sizeof cli);
    gr_silo_options_init(&cli.cfg);
    cli.batch = 500;
    cli.wait_ms = 60000;
    if (gr__parse(&cli, command, argc - first, argv + first) != 0) return 2;
    if (cli.help) {
        /* `silo --help` and `silo run --help` list everything; `silo migrate
         * --help` only what migrate takes. */
        gr__usage(stdout, prog, first == 2 ? command : GR__ALL);
        return 0;
    }
    switch (command) {
    case GR__MIGRATE:
        return gr__cmd_migrate(&cli);
    case GR__STATUS:
        return gr__cmd_status(&cli);
    case GR__MIGSTATE:
        return gr__cmd_migrate_state(cli.cfg.database_url, cli.cfg.cluster, cli.grains, class_name, cli.batch,
                                     cli.wait_ms, classes);
    default:
        return gr__cmd_run(&cli, classes);
    }
}
