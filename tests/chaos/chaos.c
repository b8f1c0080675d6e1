/* tests/chaos/chaos.c - the fault harness. Starts its own PostgreSQL and N
 * silo processes, runs the checked load (tests/support/harness.h: K workers
 * doing idempotent persisted increments on M counters, retrying each until it
 * is acknowledged), injects faults on a schedule drawn from a seed, and at
 * the end compares every counter with its acknowledged increments.
 *
 *   chaos SCENARIO [--seed N] [--seconds S] [--silos N] [--workers K] [--counters M] [--hot H] [--tls]
 * --tls: mutual TLS on every link (clients and silo-to-silo), certificates
 * made for the run (tests/support/make_certs.sh).
 *   SCENARIO: rolling | scale-down | scale-up | kill | db-restart | db-partition |
 *             partition | pause | mixed
 * `partition` runs every silo in a network namespace of its own (veth pair,
 * its own address) and takes one off the network; it exits 77 (skipped)
 * when namespaces cannot be made (not root, no iproute2).
 *
 * The hot workload runs beside it: H workers (default 8, 0: none) on 4 hot
 * counters, each operation a get or a keyed incr through a different silo.
 * Every acknowledged operation goes into a history with its invocation and
 * completion times, and the history checker (harness.h) checks real-time
 * order (no stale read), no value returned twice, and the final values.
 *
 * Beside the load, every run checks that the grain features survive the
 * faults: a durable reminder registered before the first fault must still
 * be firing after the last one, and a stateless worker and call-cycle
 * detection must answer (features_check).
 *
 * Prints one summary line; exits 1 on any lost or duplicated acknowledged
 * write or non-retryable error, 2 on bad usage. Loopback only; every loop is
 * bounded in time. docs/reliability.md describes the scenarios. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"

#define GR__PRINTF_T(a, b) __attribute__((format(printf, a, b)))
#include "support.h"

typedef struct {
    const char *scenario;
    uint64_t seed;
    double seconds;
    int silos, workers, counters, hot;
    char pgdir[512];
    char url[512];
    gr_h_cluster_t cl;
    uv_loop_t loop;
    gr_test_proxy_t *proxy[GR_H_MAX_SILOS]; /* partition: each silo reaches the database through its own */
    int up[GR_H_MAX_SILOS];
    uint64_t rng;
    int faults;
    int netns;             /* silos live in namespaces (partition scenario) */
    int net_octet;         /* 10.<net_octet>.<i+1>.0/24 per silo */
    char old_forward[8];   /* ip_forward before we set it */
    uint64_t features_end; /* fcall() gives up by then */
    /* Live migration (docs/migration.md, on by default): each silo's
     * /metrics port (not in namespaces), and the activations the silos
     * took over live, read from each before it stops and at the end. */
    int http_port[GR_H_MAX_SILOS];
    char http_arg[GR_H_MAX_SILOS][32];
    const char *extra[GR_H_MAX_SILOS][3];
    uint64_t moved_in;
} chaos_t;

static chaos_t *g_chaos; /* for the atexit cleanup of namespaces only */

/* What the harness is doing now, for the watchdog's message. */
static const char *volatile g_phase = "starting";
static uint64_t g_started_ms;

/* The last line of defence against a hang: every wait below is bounded,
 * and their sum stays under this. If it fires anyway, say what we were
 * waiting for and exit 1 (atexit kills the silos and removes namespaces),
 * well before CTest's own timeout would kill us without a word. */
static void watchdog(int sig) {
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg, "chaos: WATCHDOG: still %s after %llu s; giving up: FAIL\n", g_phase,
                     (unsigned long long)((gr_h_now_ms() - g_started_ms) / 1000));
    if (write(1, msg, (size_t)n) < 0) _exit(1);
    exit(1);
}

static void phase(const char *what) { g_phase = what; }

static uint64_t rnd(chaos_t *c) {
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

static void logf_(const char *what) {
    printf("[chaos %llu] %s\n", (unsigned long long)gr_h_now_ms() % 1000000, what);
    fflush(stdout);
}

static int pg_script(const char *cmd, const char *dir, const char *mode) {
    char line[1536];
    snprintf(line, sizeof line, "bash '%s/scripts/pg.sh' %s '%s' %s >/dev/null", getenv("GRANARY_SOURCE_DIR"),
             cmd, dir, mode ? mode : "");
    return system(line);
}

static const char *db_for(chaos_t *c, int i) {
    static char url[GR_H_MAX_SILOS][256];
    if (c->netns) { /* through the host side of its own veth */
        snprintf(url[i], sizeof url[i], "postgresql://granary@10.%d.%d.1:%d/granary", c->net_octet, i + 1,
                 atoi(strrchr(c->url, ':') + 1));
        return url[i];
    }
    if (!c->proxy[i]) return c->url;
    snprintf(url[i], sizeof url[i], "postgresql://granary@127.0.0.1:%d/granary",
             gr_test_proxy_port(c->proxy[i]));
    return url[i];
}

static int start(chaos_t *c, int i) {
    char msg[96];
    snprintf(msg, sizeof msg, "start silo %d", i);
    logf_(msg);
    if (gr_h_start_silo(&c->cl, i, db_for(c, i)) != 0) return -1;
    c->up[i] = 1;
    return 0;
}

static int n_up(chaos_t *c) {
    int n = 0;
    for (int i = 0; i < GR_H_MAX_SILOS; i++)
        n += c->up[i];
    return n;
}

static int reap(chaos_t *c);
static int reaped_badly;

/* Keep the load running; notice silos that ended by themselves. */
static void pause_ms(chaos_t *c, uint64_t ms) {
    gr_test_run_for(&c->loop, ms);
    if (reap(c) != 0) reaped_badly = 1;
}

/* A silo may end by itself: exit 3 is the designed outcome when the others
 * declared it dead (its link to the database was cut or slow for a lease);
 * like Kubernetes, the harness starts a new incarnation. Anything else is a
 * failure. */
static int reap(chaos_t *c) {
    for (int i = 0; i < c->silos; i++) {
        if (!c->up[i] || c->cl.silos[i].pid <= 0) continue;
        int st = gr_test_wait(c->cl.silos[i].pid, 0);
        if (st < 0) continue;
        char msg[128];
        snprintf(msg, sizeof msg, "silo %d exited by itself with %d%s", i, st,
                 st == 3 ? " (declared dead by the cluster): restarting it" : "");
        logf_(msg);
        c->cl.silos[i].pid = 0;
        c->up[i] = 0;
        if (st != 3 || start(c, i) != 0) return -1;
    }
    return 0;
}

/* Add silo i's activations taken over live to the run's count. */
static void harvest(chaos_t *c, int i) {
    static char body[1 << 20];
    static const char name[] = "granary_migrations_total{direction=\"in\",result=\"ok\"} ";
    if (!c->http_port[i] || !c->up[i] || gr_test_http_get(c->http_port[i], "/metrics", body, sizeof body) != 200)
        return;
    const char *p = strstr(body, name);
    if (p) c->moved_in += strtoull(p + sizeof name - 1, NULL, 10);
}

static int stop(chaos_t *c, int i) {
    char msg[96];
    harvest(c, i);
    snprintf(msg, sizeof msg, "SIGTERM silo %d", i);
    logf_(msg);
    uint64_t took;
    int st = gr_h_sigterm_and_wait(&c->cl, &c->loop, i, &took);
    c->up[i] = 0;
    c->faults++;
    snprintf(msg, sizeof msg, "silo %d drained and exited %d in %llu ms", i, st, (unsigned long long)took);
    logf_(msg);
    return st == 0 ? 0 : -1;
}

static void kill9(chaos_t *c, int i) {
    char msg[64];
    harvest(c, i);
    snprintf(msg, sizeof msg, "SIGKILL silo %d", i);
    logf_(msg);
    gr_h_kill(&c->cl, i);
    c->up[i] = 0;
    c->faults++;
}

static int random_up(chaos_t *c) {
    int n = n_up(c);
    if (!n) return -1;
    int k = (int)(rnd(c) % (uint64_t)n);
    for (int i = 0; i < GR_H_MAX_SILOS; i++)
        if (c->up[i] && k-- == 0) return i;
    return -1;
}

/* ---- scenarios: each runs until the deadline, keeping the load going ---- */

static int sc_rolling(chaos_t *c, uint64_t end) {
    /* A Kubernetes rolling update: replace each silo by a new process on the
     * same address, one at a time, round after round. */
    while (gr_h_now_ms() < end) {
        for (int i = 0; i < c->silos && gr_h_now_ms() < end; i++) {
            if (stop(c, i) != 0 || start(c, i) != 0) return -1;
            gr_h_wait_active(&c->cl, &c->loop, n_up(c), 5000);
            pause_ms(c, 300 + rnd(c) % 400);
        }
    }
    return 0;
}

static int sc_scale_down(chaos_t *c, uint64_t end) {
    uint64_t step = (end - gr_h_now_ms()) / (uint64_t)c->silos;
    for (int i = c->silos - 1; i >= 1; i--) {
        pause_ms(c, step);
        if (stop(c, i) != 0) return -1;
    }
    while (gr_h_now_ms() < end)
        pause_ms(c, 100);
    return 0;
}

static int sc_scale_up(chaos_t *c, uint64_t end) {
    /* Starts with one silo (see main); grows to `silos`. */
    uint64_t step = (end - gr_h_now_ms()) / (uint64_t)c->silos;
    for (int i = 1; i < c->silos; i++) {
        pause_ms(c, step);
        if (start(c, i) != 0) return -1;
        c->faults++;
    }
    while (gr_h_now_ms() < end)
        pause_ms(c, 100);
    return 0;
}

static int sc_kill(chaos_t *c, uint64_t end) {
    while (gr_h_now_ms() < end) {
        pause_ms(c, 1000 + rnd(c) % 1500);
        int i = random_up(c);
        if (i < 0 || n_up(c) < 2) continue;
        kill9(c, i);
        pause_ms(c, 300 + rnd(c) % 700);
        if (start(c, i) != 0) return -1;
    }
    return 0;
}

static int sc_db_restart(chaos_t *c, uint64_t end) {
    int round = 0;
    while (gr_h_now_ms() < end) {
        pause_ms(c, 1000 + rnd(c) % 1000);
        const char *mode = round++ % 2 ? "immediate" : "fast";
        char msg[64];
        snprintf(msg, sizeof msg, "restart PostgreSQL (%s)", mode);
        logf_(msg);
        /* pg.sh blocks; the silos keep running meanwhile in their own processes. */
        if (pg_script("restart", c->pgdir, mode) != 0) return -1;
        c->faults++;
    }
    return 0;
}

/* Partition one random silo at a time with cut(), heal it 2.5 s later (past
 * the lease: it fenced itself and the others declared it dead), then it must
 * learn it was declared dead and exit 3; a new incarnation starts. */
static int partition_rounds(chaos_t *c, uint64_t end, int (*cut)(chaos_t *, int), int (*heal)(chaos_t *, int),
                            const char *what) {
    while (gr_h_now_ms() < end) {
        pause_ms(c, 1000 + rnd(c) % 1000);
        int i = random_up(c);
        if (i < 0 || n_up(c) < 2) continue;
        char msg[128];
        snprintf(msg, sizeof msg, "cut silo %d (%s) from %s", i, c->cl.silos[i].host, what);
        logf_(msg);
        if (cut(c, i) != 0) return -1;
        c->faults++;
        c->up[i] = 0; /* this one is expected to die: reap() leaves it to us */
        pause_ms(c, 2500);
        if (heal(c, i) != 0) return -1;
        logf_("link restored");
        uint64_t t0 = gr_h_now_ms();
        int st = -1;
        while (gr_h_now_ms() - t0 < 8000 && (st = gr_test_wait(c->cl.silos[i].pid, 0)) < 0)
            pause_ms(c, 50);
        snprintf(msg, sizeof msg, "partitioned silo %d exited with %d", i, st);
        logf_(msg);
        if (st != 3) return -1;
        c->cl.silos[i].pid = 0;
        if (start(c, i) != 0) return -1;
    }
    return 0;
}

static int proxy_cut(chaos_t *c, int i) {
    gr_test_proxy_cut(c->proxy[i]);
    return 0;
}

static int proxy_heal(chaos_t *c, int i) {
    gr_test_proxy_restore(c->proxy[i]);
    return 0;
}

static int sc_db_partition(chaos_t *c, uint64_t end) {
    return partition_rounds(c, end, proxy_cut, proxy_heal, "PostgreSQL");
}

static int sc_pause(chaos_t *c, uint64_t end);

static int sc_mixed(chaos_t *c, uint64_t end) {
    while (gr_h_now_ms() < end) {
        uint64_t slice = gr_h_now_ms() + 3000;
        if (slice > end) slice = end;
        int rc;
        switch (rnd(c) % 5) {
        case 0: {
            int i = random_up(c);
            rc = i >= 0 && n_up(c) > 1 ? stop(c, i) : 0;
            if (rc == 0 && i >= 0 && !c->up[i]) rc = start(c, i);
            break;
        }
        case 1:
            rc = sc_kill(c, slice);
            break;
        case 2:
            rc = sc_db_restart(c, slice);
            break;
        case 3:
            rc = sc_pause(c, slice);
            break;
        default:
            rc = sc_db_partition(c, slice);
            break;
        }
        if (rc != 0) return rc;
    }
    return 0;
}

/* ---- network namespaces: one per silo, like pods ---- */

/* ---- grain features under faults ---- */

typedef struct {
    int done, status;
    char reply[512];
} fcall_t;

static void fcall_done(void *ud, int status, const uint8_t *r, size_t n) {
    fcall_t *f = ud;
    f->done = 1;
    f->status = status;
    snprintf(f->reply, sizeof f->reply, "%.*s", (int)(n < sizeof f->reply - 1 ? n : sizeof f->reply - 1),
             (const char *)r);
}

/* One call through every silo's address, retried on retryable errors for
 * up to 15 s (faults may still be settling). Returns the final status. */
static int fcall(chaos_t *c, const char *cls, const char *key, const char *method, const char *arg,
                 fcall_t *f) {
    char list[1024];
    gr_h_silo_list(&c->cl, 0, c->silos, list, sizeof list);
    gr_client_t *cl = gr_h_client(&c->cl, &c->loop, list);
    uint64_t end = gr_h_now_ms() + 15000;
    if (end > c->features_end) end = c->features_end;
    do {
        memset(f, 0, sizeof *f);
        gr_ref_t ref = {cls, key, strlen(key)};
        if (!cl || gr_client_call(cl, &ref, method, arg, arg ? strlen(arg) : 0, 5000, fcall_done, f) != 0) {
            f->status = GR_EINVAL;
            break;
        }
        gr_test_run_until(&c->loop, &f->done, 6000);
        if (!f->done) f->status = GR_ETIMEDOUT; /* the client's own 5 s timeout did not fire */
        if (f->status == 0 || !gr_err_retryable(f->status)) break;
        pause_ms(c, 200);
    } while (gr_h_now_ms() < end);
    if (cl) gr_client_close(cl, NULL, NULL);
    return f->status;
}

/* Before the faults: a reminder (period 1 s) on Counter/chaos-reminder. */
static int features_setup(chaos_t *c) {
    fcall_t f;
    phase("registering the reminder (features_setup)");
    c->features_end = gr_h_now_ms() + 15000;
    int st = fcall(c, "Counter", "chaos-reminder", "remind", "tick 0 1000", &f);
    if (st != 0) fprintf(stderr, "chaos: registering the reminder failed: %s %s\n", gr_err_name(st), f.reply);
    return st == 0 ? 0 : -1;
}

/* After the faults: the reminder still fires (its counter moves within
 * 12 s: a firing caught by the last fault may wait out its 5 s deadline
 * first), a stateless worker answers, and a call cycle is refused. */
static int features_check(chaos_t *c) {
    fcall_t f;
    phase("checking the reminder, a stateless worker and a call cycle (features_check)");
    c->features_end = gr_h_now_ms() + 40000; /* for all the calls below together */
    if (fcall(c, "Counter", "chaos-reminder", "get", NULL, &f) != 0) return -1;
    long before = atol(f.reply), now = before;
    uint64_t end = gr_h_now_ms() + 12000;
    while (now == before && gr_h_now_ms() < end) {
        pause_ms(c, 500);
        if (fcall(c, "Counter", "chaos-reminder", "get", NULL, &f) == 0) now = atol(f.reply);
    }
    int ok_rem = now > before;
    if (!ok_rem) /* what each silo's reminder service says */
        for (int i = 0; i < c->silos; i++) {
            if (!c->cl.silos[i].pid) continue;
            char one[64];
            snprintf(one, sizeof one, "%s:%d", c->cl.silos[i].host, c->cl.silos[i].port);
            gr_client_t *cl = gr_h_client(&c->cl, &c->loop, one);
            memset(&f, 0, sizeof f);
            gr_ref_t ref = {"$silo", "", 0};
            if (cl && gr_client_call(cl, &ref, "reminder_stats", NULL, 0, 3000, fcall_done, &f) == 0)
                gr_test_run_until(&c->loop, &f.done, 4000);
            printf("silo %d reminders: %s %s", i, gr_err_name(f.status), f.reply);
            if (cl) gr_client_close(cl, NULL, NULL);
        }
    int ok_worker =
        fcall(c, "Checksum", "chaos", "sum", "abc", &f) == 0 && !strcmp(f.reply, "e16801510db89efd");
    /* Right after a view change the directory may still be settling (a
     * call can reach a fresh activation instead of the waiting one, and then
     * there is no cycle to see); the cycle must be refused once it settles. */
    int ok_cycle = 0, st = 0;
    for (int attempt = 0; attempt < 10 && !ok_cycle && gr_h_now_ms() < c->features_end; attempt++) {
        if (attempt) pause_ms(c, 500);
        st = fcall(c, "Counter", "chaos-cycle-a", "relay", "chaos-cycle-b relay chaos-cycle-a incr", &f);
        ok_cycle = st == GR_EAPP && strstr(f.reply, "GR_EDEADLOCK") != NULL;
    }
    if (!ok_cycle) printf("call cycle answer: %s %s\n", gr_err_name(st), f.reply);
    printf("grain features after the faults: reminder fired %ld times in all and %s; stateless worker %s; "
           "call cycle %s\n",
           now, ok_rem ? "still fires" : "STOPPED", ok_worker ? "ok" : "FAILED",
           ok_cycle ? "refused" : "NOT REFUSED");
    return ok_rem && ok_worker && ok_cycle ? 0 : -1;
}

static int sh(const char *fmt, ...) GR__PRINTF_T(1, 2);
static int sh(const char *fmt, ...) {
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char quiet[600];
    snprintf(quiet, sizeof quiet, "%s >/dev/null 2>&1", cmd);
    return system(quiet);
}

/* Written directly, not through sh(): sh() appends ">/dev/null", and a
 * second stdout redirection wins, so "echo 1 > ip_forward >/dev/null" wrote
 * nothing. Machines that had forwarding on already passed; a fresh one (off)
 * left the silos unable to reach each other and the load waiting forever. */
static int write_ip_forward(const char *value) {
    FILE *f = fopen("/proc/sys/net/ipv4/ip_forward", "w");
    if (!f) return -1;
    int ok = fputs(value, f) >= 0;
    ok &= fclose(f) == 0;
    if (!ok) return -1;
    char now[8] = "";
    f = fopen("/proc/sys/net/ipv4/ip_forward", "r");
    if (!f || !fgets(now, sizeof now, f)) ok = 0;
    if (f) fclose(f);
    return ok && now[0] == value[0] ? 0 : -1;
}

static void ns_names(const chaos_t *c, int i, char *ns, char *host_if, char *ns_if) {
    int id = (int)(getpid() % 100000);
    sprintf(ns, "grc%d_%d", id, i);
    sprintf(host_if, "gh%d_%d", id, i);
    sprintf(ns_if, "gn%d_%d", id, i);
}

static void netns_teardown(void) {
    chaos_t *c = g_chaos;
    if (!c || !c->netns) return;
    gr_h_kill_all(&c->cl);
    for (int i = 0; i < c->silos; i++) {
        char ns[32], hi[32], ni[32];
        ns_names(c, i, ns, hi, ni);
        sh("ip link del %s", hi);
        sh("ip netns del %s", ns);
    }
    if (c->old_forward[0]) write_ip_forward(c->old_forward);
    c->netns = 0;
}

/* Namespaces grcPID_i (and their host-side links ghPID_i) of chaos runs that
 * are gone: a run killed from outside (CTest's timeout, a SIGKILL) cannot
 * clean up after itself, so the next run does. */
static void remove_stale_namespaces(void) {
    FILE *f = popen("ip netns list 2>/dev/null", "r");
    if (!f) return;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        int pid, i;
        if (sscanf(line, "grc%d_%d", &pid, &i) != 2 || pid == (int)(getpid() % 100000)) continue;
        if (kill(pid, 0) == 0) continue; /* still running (pids are < 100000 here) */
        sh("ip link del gh%d_%d", pid, i);
        sh("ip netns del grc%d_%d", pid, i);
    }
    pclose(f);
}

/* Silo i gets namespace ns_i with 10.O.(i+1).2, the host side 10.O.(i+1).1;
 * the host forwards between the silos' subnets. */
static int netns_setup(chaos_t *c) {
    remove_stale_namespaces();
    /* 10.O.0.0/16 must be unused on this host: a second address 10.O.1.1 on
     * another interface (a run killed before its cleanup, another test) sent
     * the silos' database traffic nowhere, and the run failed. */
    c->net_octet = 0;
    for (int k = 0; k < 50 && !c->net_octet; k++) {
        int o = 200 + (int)((getpid() + k) % 50);
        if (sh("ip -o addr show | grep -q ' 10\\.%d\\.'", o) != 0) c->net_octet = o;
    }
    if (!c->net_octet) return -1;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_forward", "r");
    if (!f || !fgets(c->old_forward, sizeof c->old_forward, f)) c->old_forward[0] = '\0';
    if (f) fclose(f);
    c->old_forward[strcspn(c->old_forward, "\n")] = '\0';
    g_chaos = c;
    c->netns = 1;
    atexit(netns_teardown);
    if (write_ip_forward("1") != 0) {
        fprintf(stderr, "chaos: cannot enable IPv4 forwarding between the namespaces\n");
        return -1;
    }
    for (int i = 0; i < c->silos; i++) {
        char ns[32], hi[32], ni[32];
        ns_names(c, i, ns, hi, ni);
        int o = c->net_octet, n = i + 1;
        if (sh("ip netns add %s", ns) || sh("ip link add %s type veth peer name %s", hi, ni) ||
            sh("ip link set %s netns %s", ni, ns) || sh("ip addr add 10.%d.%d.1/24 dev %s", o, n, hi) ||
            sh("ip link set %s up", hi) ||
            sh("ip netns exec %s ip addr add 10.%d.%d.2/24 dev %s", ns, o, n, ni) ||
            sh("ip netns exec %s ip link set %s up", ns, ni) ||
            sh("ip netns exec %s ip link set lo up", ns) ||
            sh("ip netns exec %s ip route add default via 10.%d.%d.1", ns, o, n))
            return -1;
        snprintf(c->cl.silos[i].netns, sizeof c->cl.silos[i].netns, "%s", ns);
        snprintf(c->cl.silos[i].host, sizeof c->cl.silos[i].host, "10.%d.%d.2", o, n);
    }
    return 0;
}

static int link_set(chaos_t *c, int i, const char *state) {
    char ns[32], hi[32], ni[32];
    ns_names(c, i, ns, hi, ni);
    return sh("ip link set %s %s", hi, state);
}

static int link_down(chaos_t *c, int i) { return link_set(c, i, "down"); }
static int link_up(chaos_t *c, int i) { return link_set(c, i, "up"); }

static int sc_net_partition(chaos_t *c, uint64_t end) {
    return partition_rounds(c, end, link_down, link_up, "the network (database and silos)");
}

/* A GC-like pause: the process stops (SIGSTOP) with its connections open
 * and requests arriving in their buffers, and resumes (SIGCONT) after the
 * others declared it dead and took its grains. Whatever it had queued must
 * not be answered from its old activations (the lease check at every reply),
 * then it learns it is dead and exits 3. */
static int proc_stop(chaos_t *c, int i) { return kill(c->cl.silos[i].pid, SIGSTOP); }
static int proc_cont(chaos_t *c, int i) { return kill(c->cl.silos[i].pid, SIGCONT); }

static int sc_pause(chaos_t *c, uint64_t end) {
    return partition_rounds(c, end, proc_stop, proc_cont, "the CPU (SIGSTOP, a GC-like pause)");
}

static void usage(void) {
    fprintf(stderr,
            "usage: chaos rolling|scale-down|scale-up|kill|db-restart|db-partition|partition|pause|mixed "
            "[--seed N] [--seconds S] [--silos N] [--workers K] [--counters M] [--hot H] [--tls]\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage();
        return 2;
    }
    static chaos_t c; /* static: the atexit cleanup may look at it after main returns */
    memset(&c, 0, sizeof c);
    c.scenario = argv[1];
    c.seed = 1;
    c.seconds = 10;
    c.silos = 3;
    c.workers = 12;
    c.counters = 24;
    c.hot = 8;
    int tls = 0;
    for (int i = 2; i < argc; i += 2) {
        if (!strcmp(argv[i], "--tls")) {
            tls = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
            return 2;
        }
        if (!strcmp(argv[i], "--seed"))
            c.seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--seconds"))
            c.seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--silos"))
            c.silos = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--workers"))
            c.workers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--counters"))
            c.counters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hot"))
            c.hot = atoi(argv[i + 1]);
        else {
            usage();
            return 2;
        }
    }
    int (*run)(chaos_t *, uint64_t) = NULL;
    if (!strcmp(c.scenario, "rolling"))
        run = sc_rolling;
    else if (!strcmp(c.scenario, "scale-down"))
        run = sc_scale_down;
    else if (!strcmp(c.scenario, "scale-up"))
        run = sc_scale_up;
    else if (!strcmp(c.scenario, "kill"))
        run = sc_kill;
    else if (!strcmp(c.scenario, "db-restart"))
        run = sc_db_restart;
    else if (!strcmp(c.scenario, "db-partition"))
        run = sc_db_partition;
    else if (!strcmp(c.scenario, "partition"))
        run = sc_net_partition;
    else if (!strcmp(c.scenario, "mixed"))
        run = sc_mixed;
    else if (!strcmp(c.scenario, "pause"))
        run = sc_pause;
    if (!run || c.seconds <= 0 || c.seconds > 3600 || c.silos < 2 || c.silos > GR_H_MAX_SILOS ||
        c.workers < 1 || c.workers > GR_H_MAX_WORKERS || c.counters < 1 || c.counters > GR_H_MAX_KEYS - 4 ||
        c.hot < 0 || c.workers + c.hot > GR_H_MAX_WORKERS || !getenv("GRANARY_SOURCE_DIR")) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_started_ms = gr_h_now_ms();
    signal(SIGALRM, watchdog);
    /* Start-up (<= 45 s), the scenario (its seconds plus one fault round,
     * <= 15 s), the load's stop (<= 20 s), the read-back (<= 30 s), the
     * feature checks (<= 40 s): under seconds + 150, and CTest's timeout is
     * seconds + 172 (tests/CMakeLists.txt). */
    alarm((unsigned)c.seconds + 150);
    c.rng = c.seed * 0x9e3779b97f4a7c15ull + 1;
    printf("chaos %s: seed %llu, %.0f s, %d silos, %d workers, %d counters\n", c.scenario,
           (unsigned long long)c.seed, c.seconds, c.silos, c.workers, c.counters);

    if (!strcmp(c.scenario, "partition")) {
        if (geteuid() != 0 || netns_setup(&c) != 0) {
            netns_teardown();
            printf(
                "chaos partition: SKIP: cannot create network namespaces here (needs root and iproute2)\n");
            return 77;
        }
        /* The database listens on every silo's host-side address too. */
        char opts[512] = "-c listen_addresses='127.0.0.1", hba[128];
        for (int i = 0; i < c.silos; i++)
            snprintf(opts + strlen(opts), sizeof opts - strlen(opts), ",10.%d.%d.1", c.net_octet, i + 1);
        strncat(opts, "'", sizeof opts - strlen(opts) - 1);
        snprintf(hba, sizeof hba, "host all all 10.%d.0.0/16 trust", c.net_octet);
        setenv("GR_PG_OPTS", opts, 1);
        setenv("GR_PG_HBA", hba, 1);
    }
    /* Our own PostgreSQL: restarting it must not disturb anything else. */
    phase("starting PostgreSQL and the silos");
    snprintf(c.pgdir, sizeof c.pgdir, "%s/chaos-pg-%d", gr_test_build_path("."), (int)getpid());
    if (pg_script("start", c.pgdir, NULL) != 0) {
        fprintf(stderr, "chaos: cannot start PostgreSQL\n");
        return 1;
    }
    char urlfile[600];
    snprintf(urlfile, sizeof urlfile, "%s/url", c.pgdir);
    FILE *f = fopen(urlfile, "r");
    if (!f || !fgets(c.url, sizeof c.url, f)) {
        fprintf(stderr, "chaos: no database URL\n");
        return 1;
    }
    fclose(f);
    c.url[strcspn(c.url, "\n")] = '\0';
    const char *migrate[] = {gr_test_build_path("silo"), "migrate", "--database", c.url, NULL};
    char log[700];
    snprintf(log, sizeof log, "%s/chaos-%s.log", gr_test_build_path("."), c.scenario);
    unlink(log);
    int rc = gr_test_wait(gr_test_spawn(migrate, log), 30000) == 0 ? 0 : -1;

    uv_loop_init(&c.loop);
    char name[64];
    snprintf(name, sizeof name, "chaos-%s-%llu", c.scenario, (unsigned long long)c.seed);
    gr_h_cluster_init(&c.cl, name, c.url, log);
    if (tls && gr_h_make_certs(c.cl.tls_dir, sizeof c.cl.tls_dir) != 0) {
        fprintf(stderr, "chaos: cannot make certificates\n");
        rc = -1;
    }
    if (tls) printf("chaos %s: mutual TLS on every link (%s)\n", c.scenario, c.cl.tls_dir);
    if (!strcmp(c.scenario, "db-partition") || !strcmp(c.scenario, "mixed")) {
        int pgport = atoi(strrchr(c.url, ':') + 1);
        for (int i = 0; i < c.silos; i++)
            c.proxy[i] = gr_test_proxy_start(&c.loop, pgport);
    }
    int initial = !strcmp(c.scenario, "scale-up") ? 1 : c.silos;
    /* Every silo's port is fixed up front so the clients' lists cover the
     * silos a scale-up adds later. */
    for (int i = 0; i < c.silos; i++) {
        c.cl.silos[i].port = gr_test_free_port();
        if (c.netns) continue;
        c.http_port[i] = gr_test_free_port();
        snprintf(c.http_arg[i], sizeof c.http_arg[i], "127.0.0.1:%d", c.http_port[i]);
        c.extra[i][0] = "--http";
        c.extra[i][1] = c.http_arg[i];
        c.extra[i][2] = NULL;
        c.cl.silos[i].extra = c.extra[i];
    }
    if (c.netns) /* names set up before the cluster struct was reset: set them again */
        for (int i = 0; i < c.silos; i++) {
            char ns[32], hi[32], ni[32];
            ns_names(&c, i, ns, hi, ni);
            snprintf(c.cl.silos[i].netns, sizeof c.cl.silos[i].netns, "%s", ns);
            snprintf(c.cl.silos[i].host, sizeof c.cl.silos[i].host, "10.%d.%d.2", c.net_octet, i + 1);
        }
    for (int i = 0; rc == 0 && i < initial; i++)
        rc = start(&c, i);
    if (rc == 0) rc = gr_h_wait_active(&c.cl, &c.loop, initial, 15000);
    gr_h_load_t *load = NULL;
    if (rc == 0) {
        rc = features_setup(&c);
        load = gr_h_load_new(&c.cl, &c.loop, c.silos, c.workers, c.counters);
        if (!load || (c.hot && gr_h_load_add_hot(load, c.hot, 4) != 0)) {
            fprintf(stderr, "chaos: cannot set up the load\n");
            rc = -1;
        } else {
            gr_h_load_start(load);
        }
        pause_ms(&c, 1000);
        phase("running the scenario");
        if (rc == 0) rc = run(&c, gr_h_now_ms() + (uint64_t)(c.seconds * 1000));
        if (reaped_badly) rc = -1;
        if (rc != 0) logf_("scenario step failed");
    }
    gr_h_summary_t sum;
    memset(&sum, 0, sizeof sum);
    int verdict = -1;
    if (load) {
        logf_("stopping the load; waiting for every operation to be acknowledged");
        phase("waiting for the load's operations in flight to be acknowledged");
        int stopped = gr_h_load_stop(load, 20000);
        if (stopped != 0) logf_("some operations were still unacknowledged after 20 s");
        phase("reading every counter back (verify)");
        verdict = gr_h_load_verify(load, &sum);
        if (stopped != 0) verdict = -1;
        gr_h_load_free(load);
        if (rc == 0 && features_check(&c) != 0) rc = -1;
    }
    char label[128];
    snprintf(label, sizeof label, "chaos %s seed %llu (%d faults)", c.scenario, (unsigned long long)c.seed,
             c.faults);
    gr_h_summary_print(&sum, label);
    for (int i = 0; i < c.silos; i++)
        harvest(&c, i);
    printf("%s: live migration and rebalancing on: %llu activations taken over live\n", label,
           (unsigned long long)c.moved_in);
    /* A deploy and a scale-up move grains live: none moving means the
     * scenario did not test what it says. */
    if ((!strcmp(c.scenario, "rolling") || !strcmp(c.scenario, "scale-up") || !strcmp(c.scenario, "scale-down")) &&
        c.moved_in == 0) {
        printf("%s: no activation moved live\n", label);
        rc = -1;
    }
    gr_h_kill_all(&c.cl);
    netns_teardown();
    for (int i = 0; i < c.silos; i++)
        if (c.proxy[i]) gr_test_proxy_close(c.proxy[i]);
    gr_test_run_for(&c.loop, 50);
    uv_loop_close(&c.loop);
    pg_script("stop", c.pgdir, NULL);
    if (c.cl.tls_dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c.cl.tls_dir);
        if (system(cmd) != 0) fprintf(stderr, "chaos: could not remove %s\n", c.cl.tls_dir);
    }
    int ok = rc == 0 && verdict == 0;
    printf("%s: %s\n", label, ok ? "PASS" : "FAIL");
    fflush(stdout);
    return ok ? 0 : 1;
}
