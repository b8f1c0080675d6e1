/* tools/granary/main.c - the `granary` command: call a grain from a shell, list
 * the members a silo sees and the active grains of the cluster.
 *   granary call [--silo HOST:PORT[,...]] CLASS/KEY METHOD [ARG|-]
 *   granary members [--silo ...]      granary grains [--silo ...]
 *   granary reminder add|remove|list CLASS/KEY [NAME] [--due MS] [--period MS]
 * Exit status: 0 ok, 1 the call failed, 2 usage, 75 failed but retryable. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "granary/client.h"

/* A growable byte buffer: the CLI sees only the public API (it builds
 * against an installed libgranary), so it keeps its own. */
typedef struct cli_buf {
    uint8_t *data;
    size_t len, cap;
} cli_buf_t;

static void cli_buf_init(cli_buf_t *b) { memset(b, 0, sizeof *b); }
static void cli_buf_free(cli_buf_t *b) {
    free(b->data);
    cli_buf_init(b);
}
static int cli_buf_append(cli_buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) return GR_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void cli_usage(FILE *f) {
    fprintf(f, "usage: granary call [OPTIONS] CLASS/KEY METHOD [ARG | -]\n"
               "       granary members [OPTIONS]    the cluster's live silos, as a silo sees them\n"
               "       granary grains [OPTIONS]     active grains by class on every live silo\n"
               "       granary reminder add CLASS/KEY NAME [--due MS] [--period MS] [OPTIONS]\n"
               "       granary reminder remove CLASS/KEY NAME [OPTIONS]\n"
               "       granary reminder list CLASS/KEY [OPTIONS]\n"
               "       granary --version\n\n"
               "call: calls METHOD on grain CLASS/KEY (the key is everything after the first '/')\n"
               "and prints the reply on stdout. ARG '-' reads the argument from stdin.\n"
               "reminder: durable reminders of a grain (docs/reminders.md): add (or replace) NAME,\n"
               "first due in --due MS (default 0), then every --period MS (default 0: once; else at\n"
               "least the silo's --reminder-min-period-ms); remove it; list NAME DUE_IN_MS PERIOD_MS.\n\n"
               "Options (environment variable in brackets):\n"
               "  --silo HOST:PORT[,...]  silos to try in order [GRANARY_SILO] (default 127.0.0.1:7700)\n"
               "  --cluster NAME          cluster name [GRANARY_CLUSTER] (default \"default\")\n"
               "  --secret SECRET         cluster secret [GRANARY_CLUSTER_SECRET]\n"
               "  --timeout MS            call timeout [GRANARY_CALL_TIMEOUT_MS] (default 30000)\n"
               "  --tls                   connect with TLS [GRANARY_TLS=1] (implied by the next three)\n"
               "  --tls-ca FILE           CA bundle the silo's certificate must chain to [GRANARY_TLS_CA]\n"
               "                          (default: the system trust store)\n"
               "  --tls-cert FILE         client certificate, for silos with --tls-client-auth\n"
               "                          [GRANARY_TLS_CLIENT_CERT]\n"
               "  --tls-key FILE          its private key [GRANARY_TLS_CLIENT_KEY]\n"
               "  --tls-server-name NAME  name the silo's certificate must carry [GRANARY_TLS_SERVER_NAME]\n"
               "                          (default: the host given in --silo)\n"
               "  --json                  print {\"ok\":...,\"reply\"|\"error\":...} instead\n"
               "  --retry-for MS          call: retry retryable errors (with backoff, across the --silo\n"
               "                          list, the same idempotency key every time) for up to MS\n"
               "                          [GRANARY_RETRY_FOR_MS] (default 10000; 0: no retries)\n"
               "  --idempotency-key KEY   call: the call's key, 1..128 bytes (default: a random one per\n"
               "                          call when retrying): repeating a call with the same key gets\n"
               "                          the first answer without running it again\n"
               "                          (docs/exactly-once.md)\n"
               "  --help                  show this help\n\n"
               "Exit status: 0 success; 1 the call failed (unknown class or method, application\n"
               "error, ...); 2 usage error; 75 failed with a retryable error (connection,\n"
               "timeout, storage unavailable, overload, shutdown): try again.\n");
}

typedef struct {
    int done;
    int status;
    cli_buf_t reply;
    gr_client_t *client;
} cli_cli_call_t;

static void cli_on_reply(void *ud, int status, const uint8_t *reply, size_t len) {
    cli_cli_call_t *r = ud;
    r->done = 1;
    r->status = status;
    cli_buf_append(&r->reply, reply, len);
    gr_client_close(r->client, NULL, NULL);
}

static void cli_json_print(FILE *f, const uint8_t *p, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\')
            fprintf(f, "\\%c", p[i]);
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            fprintf(f, "\\u%04x", p[i]);
        else
            fputc(p[i], f);
    }
    fputc('"', f);
}

static int cli_read_stdin(cli_buf_t *b) {
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, stdin)) > 0) {
        if (b->len + n > GR_ARG_MAX) return GR_ETOOBIG;
        if (cli_buf_append(b, tmp, n) != 0) return GR_ENOMEM;
    }
    return ferror(stdin) ? GR_EIO : 0;
}

/* One call on a fresh loop and client; the reply lands in r. */
static int cli_call_once(const gr_client_options_t *o, const char *cls, const char *key, const char *method,
                         const void *arg, size_t arg_len, uint32_t timeout, cli_cli_call_t *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    memset(r, 0, sizeof *r);
    cli_buf_init(&r->reply);
    int rc = gr_client_new(&loop, o, &r->client);
    if (rc != 0) {
        uv_loop_close(&loop);
        return rc;
    }
    gr_ref_t ref = {cls, key, strlen(key)};
    rc = gr_client_call(r->client, &ref, method, arg, arg_len, timeout, cli_on_reply, r);
    if (rc != 0) gr_client_close(r->client, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}

static int cli_exit_for(int status) { return status == 0 ? 0 : gr_err_retryable(status) ? 75 : 1; }

static int cli_report_error(const char *what, const cli_cli_call_t *r) {
    fprintf(stderr, "granary %s: %s: %s%s%.*s\n", what, gr_err_name(r->status), gr_strerror(r->status),
            r->reply.len ? ": " : "", (int)r->reply.len, r->reply.data ? (const char *)r->reply.data : "");
    return cli_exit_for(r->status);
}

static int cli_cmd_members(const gr_client_options_t *o, uint32_t timeout, int json) {
    cli_cli_call_t r;
    int rc = cli_call_once(o, "$silo", "", "members", NULL, 0, timeout, &r);
    if (rc != 0) {
        fprintf(stderr, "granary members: %s\n", gr_strerror(rc));
        return 2;
    }
    if (r.status != 0) {
        int e = cli_report_error("members", &r);
        cli_buf_free(&r.reply);
        return e;
    }
    cli_buf_append(&r.reply, "", 1);
    if (!json)
        printf("%-36s %-22s %-14s %s\n", "SILO", "ADDRESS", "STATUS", "HEARTBEAT AGE");
    else
        printf("[");
    int first = 1;
    for (char *line = strtok((char *)r.reply.data, "\n"); line; line = strtok(NULL, "\n")) {
        char id[128], addr[96], st[32];
        long long age;
        if (sscanf(line, "%127s %95s %31s %lld", id, addr, st, &age) != 4) continue;
        if (json)
            printf("%s{\"silo\":\"%s\",\"address\":\"%s\",\"status\":\"%s\",\"heartbeat_age_ms\":%lld}",
                   first ? "" : ",", id, addr, st, age);
        else
            printf("%-36s %-22s %-14s %lld ms\n", id, addr, st, age);
        first = 0;
    }
    if (json) printf("]\n");
    cli_buf_free(&r.reply);
    return 0;
}

/* granary reminder add|remove|list CLASS/KEY [NAME]: the silo's `$silo`
 * control methods, which talk to the reminder table directly. */
static int cli_cmd_reminder(const gr_client_options_t *o, uint32_t timeout, int json, const char *const *pos,
                            int npos, unsigned long long due, unsigned long long period) {
    const char *sub = npos > 0 ? pos[0] : "";
    int add = !strcmp(sub, "add"), rm = !strcmp(sub, "remove"), ls = !strcmp(sub, "list");
    if ((!add && !rm && !ls) || npos < 2 || ((add || rm) && npos != 3) || (ls && npos != 2)) {
        fprintf(stderr,
                "granary reminder: usage: add CLASS/KEY NAME | remove CLASS/KEY NAME | list CLASS/KEY\n");
        return 2;
    }
    const char *slash = strchr(pos[1], '/');
    if (!slash || slash == pos[1]) {
        fprintf(stderr, "granary reminder: grain must be CLASS/KEY, got '%s'\n", pos[1]);
        return 2;
    }
    char arg[256];
    if (add)
        snprintf(arg, sizeof arg, "%s %llu %llu", pos[2], due, period);
    else
        snprintf(arg, sizeof arg, "%s", rm ? pos[2] : "");
    char method[32];
    snprintf(method, sizeof method, "reminder_%s", sub);
    cli_cli_call_t r;
    int rc = cli_call_once(o, "$silo", pos[1], method, arg, strlen(arg), timeout, &r);
    if (rc != 0) {
        fprintf(stderr, "granary reminder: %s\n", gr_strerror(rc));
        return 2;
    }
    if (r.status != 0) {
        int e = cli_report_error("reminder", &r);
        cli_buf_free(&r.reply);
        return e;
    }
    if (!ls) {
        printf(json ? "{\"ok\":true}\n" : "ok\n");
        cli_buf_free(&r.reply);
        return 0;
    }
    cli_buf_append(&r.reply, "", 1);
    if (json)
        printf("[");
    else
        printf("%-32s %14s %12s\n", "NAME", "DUE IN (ms)", "PERIOD (ms)");
    int first = 1;
    for (char *line = strtok((char *)r.reply.data, "\n"); line; line = strtok(NULL, "\n")) {
        char name[129];
        long long in, per;
        if (sscanf(line, "%128s %lld %lld", name, &in, &per) != 3) continue;
        if (json)
            printf("%s{\"name\":\"%s\",\"due_in_ms\":%lld,\"period_ms\":%lld}", first ? "" : ",", name, in,
                   per);
        else
            printf("%-32s %14lld %12lld\n", name, in, per);
        first = 0;
    }
    if (json) printf("]\n");
    cli_buf_free(&r.reply);
    return 0;
}

/* Active grains by class on every live member (each asked directly). */
static int cli_cmd_grains(const gr_client_options_t *o, uint32_t timeout, int json) {
    cli_cli_call_t r;
    if (cli_call_once(o, "$silo", "", "members", NULL, 0, timeout, &r) != 0) return 2;
    if (r.status != 0) {
        int e = cli_report_error("grains", &r);
        cli_buf_free(&r.reply);
        return e;
    }
    cli_buf_append(&r.reply, "", 1);
    char *members = strdup((const char *)r.reply.data);
    cli_buf_free(&r.reply);
    int worst = 0, first = 1;
    if (json)
        printf("[");
    else
        printf("%-36s %-24s %s\n", "SILO", "CLASS", "ACTIVE");
    char *save = NULL;
    for (char *line = strtok_r(members, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[128], addr[96], st[32];
        if (sscanf(line, "%127s %95s %31s", id, addr, st) != 3) continue;
        gr_client_options_t one = *o;
        one.silos = addr;
        cli_cli_call_t g;
        if (cli_call_once(&one, "$silo", "", "grains", NULL, 0, timeout, &g) != 0 || g.status != 0) {
            fprintf(stderr, "granary grains: %s (%s): %s\n", id, addr, gr_err_name(g.status));
            worst = 75;
            cli_buf_free(&g.reply);
            continue;
        }
        cli_buf_append(&g.reply, "", 1);
        char *save2 = NULL;
        for (char *l2 = strtok_r((char *)g.reply.data, "\n", &save2); l2; l2 = strtok_r(NULL, "\n", &save2)) {
            char cls[GR_CLASS_NAME_MAX + 1];
            unsigned long long n;
            if (sscanf(l2, "%128s %llu", cls, &n) != 2) continue;
            if (json)
                printf("%s{\"silo\":\"%s\",\"class\":\"%s\",\"active\":%llu}", first ? "" : ",", id, cls, n);
            else
                printf("%-36s %-24s %llu\n", id, cls, n);
            first = 0;
        }
        cli_buf_free(&g.reply);
    }
    if (json) printf("]\n");
    free(members);
    return worst;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    gr_client_options_t o;
    gr_client_options_init(&o);
    if (getenv("GRANARY_SILO")) o.silos = getenv("GRANARY_SILO");
    if (getenv("GRANARY_CLUSTER")) o.cluster = getenv("GRANARY_CLUSTER");
    if (getenv("GRANARY_CLUSTER_SECRET")) o.secret = getenv("GRANARY_CLUSTER_SECRET");
    o.name = "granary-cli";
    o.tls_ca = getenv("GRANARY_TLS_CA");
    o.tls_cert = getenv("GRANARY_TLS_CLIENT_CERT");
    o.tls_key = getenv("GRANARY_TLS_CLIENT_KEY");
    o.tls_server_name = getenv("GRANARY_TLS_SERVER_NAME");
    o.tls = getenv("GRANARY_TLS") && !strcmp(getenv("GRANARY_TLS"), "1");
    uint32_t timeout = 30000;
    if (getenv("GRANARY_CALL_TIMEOUT_MS"))
        timeout = (uint32_t)strtoul(getenv("GRANARY_CALL_TIMEOUT_MS"), NULL, 10);
    int json = 0;
    uint32_t retry_for = 10000;
    const char *idem = NULL;
    if (getenv("GRANARY_RETRY_FOR_MS"))
        retry_for = (uint32_t)strtoul(getenv("GRANARY_RETRY_FOR_MS"), NULL, 10);
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("granary %s\n", gr_version());
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        cli_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "call") && strcmp(cmd, "members") && strcmp(cmd, "grains") && strcmp(cmd, "reminder")) {
        fprintf(stderr, "granary: unknown command '%s' (see --help)\n", argv[1]);
        return 2;
    }
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    unsigned long long due = 0, period = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--tls")) {
            o.tls = 1;
        } else if (!strcmp(cmd, "reminder") && (!strcmp(a, "--due") || !strcmp(a, "--period"))) {
            char *end;
            unsigned long long v = i + 1 < argc ? strtoull(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || *end || argv[i + 1][0] == '-') {
                fprintf(stderr, "granary reminder: %s needs milliseconds\n", a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--due"))
                due = v;
            else
                period = v;
        } else if (!strcmp(a, "--silo") || !strcmp(a, "--cluster") || !strcmp(a, "--secret") ||
                   !strcmp(a, "--timeout") || !strcmp(a, "--tls-ca") || !strcmp(a, "--tls-cert") ||
                   !strcmp(a, "--tls-key") || !strcmp(a, "--tls-server-name") || !strcmp(a, "--retry-for") ||
                   !strcmp(a, "--idempotency-key")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "granary: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--silo"))
                o.silos = v;
            else if (!strcmp(a, "--cluster"))
                o.cluster = v;
            else if (!strcmp(a, "--secret"))
                o.secret = v;
            else if (!strcmp(a, "--tls-ca"))
                o.tls_ca = v;
            else if (!strcmp(a, "--tls-cert"))
                o.tls_cert = v;
            else if (!strcmp(a, "--tls-key"))
                o.tls_key = v;
            else if (!strcmp(a, "--tls-server-name"))
                o.tls_server_name = v;
            else if (!strcmp(a, "--idempotency-key")) {
                if (!v[0] || strlen(v) > GR_IDEM_KEY_MAX) {
                    fprintf(stderr, "granary: --idempotency-key: 1..%u bytes\n", GR_IDEM_KEY_MAX);
                    return 2;
                }
                idem = v;
            } else if (!strcmp(a, "--retry-for")) {
                char *end;
                unsigned long t = strtoul(v, &end, 10);
                if (*end || !v[0] || v[0] == '-' || t > 3600000ul) {
                    fprintf(stderr, "granary: --retry-for: expected milliseconds (0..3600000), got '%s'\n",
                            v);
                    return 2;
                }
                retry_for = (uint32_t)t;
            } else {
                char *end;
                unsigned long t = strtoul(v, &end, 10);
                if (*end || t == 0 || t > 86400000ul) {
                    fprintf(stderr, "granary: --timeout: expected milliseconds (1..86400000), got '%s'\n", v);
                    return 2;
                }
                timeout = (uint32_t)t;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "granary: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (npos < 3) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, "granary: too many arguments (see --help)\n");
            return 2;
        }
    }
    if (!strcmp(cmd, "reminder")) return cli_cmd_reminder(&o, timeout, json, pos, npos, due, period);
    if (strcmp(cmd, "call") != 0) {
        if (npos) {
            fprintf(stderr, "granary %s: takes no arguments (see --help)\n", cmd);
            return 2;
        }
        return !strcmp(cmd, "members") ? cli_cmd_members(&o, timeout, json)
                                       : cli_cmd_grains(&o, timeout, json);
    }
    if (npos < 2) {
        fprintf(stderr, "granary call: need CLASS/KEY and METHOD (see --help)\n");
        return 2;
    }
    const char *slash = strchr(pos[0], '/');
    if (!slash || slash == pos[0]) {
        fprintf(stderr, "granary call: grain must be CLASS/KEY, got '%s'\n", pos[0]);
        return 2;
    }
    char cls[GR_CLASS_NAME_MAX + 1];
    size_t cl = (size_t)(slash - pos[0]);
    if (cl > GR_CLASS_NAME_MAX) {
        fprintf(stderr, "granary call: class name longer than %u bytes\n", GR_CLASS_NAME_MAX);
        return 2;
    }
    memcpy(cls, pos[0], cl);
    cls[cl] = '\0';
    cli_buf_t arg;
    cli_buf_init(&arg);
    if (pos[2] && !strcmp(pos[2], "-")) {
        int rc = cli_read_stdin(&arg);
        if (rc) {
            fprintf(stderr, "granary call: reading the argument from stdin: %s\n", gr_strerror(rc));
            return 2;
        }
    } else if (pos[2]) {
        cli_buf_append(&arg, pos[2], strlen(pos[2]));
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    cli_cli_call_t r;
    memset(&r, 0, sizeof r);
    cli_buf_init(&r.reply);
    int rc = gr_client_new(&loop, &o, &r.client);
    if (rc != 0) {
        if (rc == GR_ECONFIG)
            fprintf(stderr, "granary: TLS settings unusable (see the line above)\n");
        else
            fprintf(stderr, "granary: bad --silo list '%s': %s\n", o.silos, gr_strerror(rc));
        return 2;
    }
    gr_ref_t ref = {cls, slash + 1, strlen(slash + 1)};
    gr_call_options_t co;
    gr_call_options_init(&co);
    co.timeout_ms = timeout;
    co.retry_for_ms = retry_for;
    co.idempotency_key = idem;
    co.idempotency_key_len = idem ? strlen(idem) : 0;
    rc = gr_client_call_ex(r.client, &ref, pos[1], arg.data, arg.len, &co, cli_on_reply, &r);
    if (rc != 0) {
        fprintf(stderr, "granary call: %s (%s)\n", gr_strerror(rc), gr_err_name(rc));
        gr_client_close(r.client, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 2;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    cli_buf_free(&arg);
    int exit_code = r.status == 0 ? 0 : gr_err_retryable(r.status) ? 75 : 1;
    if (json) {
        printf("{\"ok\":%s,", r.status == 0 ? "true" : "false");
        if (r.status == 0) {
            printf("\"reply\":");
            cli_json_print(stdout, r.reply.data, r.reply.len);
        } else {
            printf("\"error\":\"%s\",\"message\":", gr_err_name(r.status));
            cli_json_print(stdout, r.reply.data, r.reply.len);
            printf(",\"retryable\":%s", gr_err_retryable(r.status) ? "true" : "false");
        }
        printf("}\n");
    } else if (r.status == 0) {
        if (r.reply.len) fwrite(r.reply.data, 1, r.reply.len, stdout);
        fputc('\n', stdout);
    } else {
        fprintf(stderr, "granary call: %s: %s%s%.*s\n", gr_err_name(r.status), gr_strerror(r.status),
                r.reply.len ? ": " : "", (int)r.reply.len, r.reply.data ? (const char *)r.reply.data : "");
    }
    cli_buf_free(&r.reply);
    return exit_code;
}
