/* tests/support/support.c - see support.h. */
#include "support.h"
#include "granary/grain.h"
#include "granary/storage.h"
#include "wire/frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static uint64_t now_ms(void);
uint64_t gr_test_now_ms(void) { return now_ms(); }

int gr_test_process_setup(const char *log_name, char *log_path, size_t size) {
    if (!gr_test_pg_url()) {
        fprintf(stderr, "no test database: run under ctest (the pg fixture starts one)\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(log_path, size, "%s", gr_test_build_path(log_name));
    unlink(log_path);
    const char *migrate[] = {gr_test_build_path("silo"), "migrate", "--database", gr_test_pg_url(), NULL};
    if (gr_test_wait(gr_test_spawn(migrate, log_path), 30000) != 0) {
        fprintf(stderr, "silo migrate failed (see %s)\n", log_path);
        return 1;
    }
    return 0;
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_deadline(uv_timer_t *t) { *(int *)t->data = 1; }

int gr_test_run_until(uv_loop_t *loop, const int *flag, uint64_t timeout_ms) {
    uv_timer_t t;
    int expired = 0;
    uv_timer_init(loop, &t);
    t.data = &expired;
    /* From now, not from the loop's last update (a caller may have spent
     * longer than timeout_ms outside the loop). Repeating: a timer that
     * fires in UV_RUN_ONCE's first phase leaves the poll after it without a
     * timeout, which on a loop with idle sockets blocks for ever. */
    uv_update_time(loop);
    uv_timer_start(&t, on_deadline, timeout_ms, 10);
    while (!*flag && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

void gr_test_run_for(uv_loop_t *loop, uint64_t ms) {
    int never = 0;
    gr_test_run_until(loop, &never, ms);
}

static void close_walk(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void gr_test_loop_close(uv_loop_t *loop) {
    for (int i = 0; i < 100 && uv_loop_alive(loop); i++)
        uv_run(loop, UV_RUN_NOWAIT);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

const char *gr_test_pg_url(void) {
    static char url[512];
    const char *dir = getenv("GRANARY_TEST_PG_DIR");
    if (!dir) return NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/url", dir);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    if (!fgets(url, sizeof url, f)) url[0] = '\0';
    fclose(f);
    url[strcspn(url, "\r\n")] = '\0';
    return url[0] ? url : NULL;
}

char *gr_test_sql(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    char *out = NULL;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
            out = strdup(PQgetvalue(r, 0, 0));
        else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            fprintf(stderr, "gr_test_sql: %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "gr_test_sql: connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return out;
}

/* Every child is killed when the test program exits, pass or fail, so a
 * failed assertion never leaves a silo running. */
static pid_t gr__children[256];
static int gr__nchildren;

static void gr__kill_children(void) {
    for (int i = 0; i < gr__nchildren; i++)
        if (gr__children[i] > 0) kill(gr__children[i], SIGKILL);
}

pid_t gr_test_spawn(const char *const argv[], const char *log_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (log_path) {
        posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
    }
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    if (gr__nchildren == 0) atexit(gr__kill_children);
    if (gr__nchildren < 256) gr__children[gr__nchildren++] = pid;
    return pid;
}

int gr_test_wait(pid_t pid, uint64_t timeout_ms) {
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            for (int i = 0; i < gr__nchildren; i++)
                if (gr__children[i] == pid) gr__children[i] = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0) return -1;
        if (now_ms() >= end) return -1;
        usleep(5000);
    }
}

void gr_test_print_tail(const char *path, int lines) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f), start = size > 65536 ? size - 65536 : 0;
    fseek(f, start, SEEK_SET);
    char *buf = malloc((size_t)(size - start) + 1);
    size_t n = buf ? fread(buf, 1, (size_t)(size - start), f) : 0;
    fclose(f);
    if (!buf) return;
    buf[n] = '\0';
    const char *p = buf + n;
    for (int seen = 0; p > buf; p--)
        if (p[-1] == '\n' && ++seen > lines) break;
    fprintf(stderr, "---- last %d lines of %s ----\n%s---- end of %s ----\n", lines, path, p, path);
    free(buf);
}

int gr_test_wait_addr(const char *host, int port, uint64_t timeout_ms) {
    uint64_t end = now_ms() + timeout_ms;
    while (now_ms() < end) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &sa.sin_addr);
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (ok) return 0;
        usleep(10000);
    }
    return -1;
}

int gr_test_wait_port(int port, uint64_t timeout_ms) {
    return gr_test_wait_addr("127.0.0.1", port, timeout_ms);
}

/* Below the kernel's ephemeral range, as scripts/ports.sh: a silo that
 * restarts on its port (or one that starts late: a scale-up, or after its
 * neighbour's /metrics port was picked) must not find it taken by some
 * client's outgoing connection, which only ever uses ephemeral ports (a
 * chaos run on a clean clone failed that way). Never the same port twice in
 * one process; bindable when picked. */
int gr_test_free_port(void) {
    static int given[512];
    static size_t n_given;
    static uint64_t rng;
    if (!rng) rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
    int lo = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &lo) != 1) lo = 32768;
        fclose(f);
    }
    int base = lo > 12000 ? lo - 11000 : 30000;
    for (int tries = 0; tries < 200; tries++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        int port = base + (int)(rng % 10000);
        int dup = 0;
        for (size_t i = 0; i < n_given && i < sizeof given / sizeof given[0]; i++)
            dup |= given[i] == port;
        if (dup) continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)port);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (fd >= 0) close(fd);
        if (!ok) continue;
        given[n_given++ % (sizeof given / sizeof given[0])] = port;
        return port;
    }
    /* Nothing free below the range: let the kernel choose. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t l = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &l);
    close(fd);
    return ntohs(sa.sin_port);
}

const char *gr_test_build_path(const char *rel) {
    static char bufs[8][1024];
    static int slot;
    char *b = bufs[slot++ % 8];
    const char *dir = getenv("GRANARY_BUILD_DIR");
    snprintf(b, 1024, "%s/%s", dir ? dir : ".", rel);
    return b;
}

/* ---- raw sockets ---- */

int gr_test_raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Read frames until one of `type` arrives or the peer closes; returns the
 * frame's status (RESPONSE/GOAWAY) or 0, or INT32_MIN when closed first. */
int32_t gr_test_read_until(int fd, uint8_t type, int *closed) {
    /* Bytes after the frame returned stay buffered for the next call on the
     * same descriptor: a peer may send several frames in one segment. */
    static uint8_t buf[1 << 16];
    static size_t len;
    static int last_fd = -1;
    if (fd != last_fd) {
        len = 0;
        last_fd = fd;
    }
    *closed = 0;
    for (;;) {
        gr__frame_t f;
        size_t used;
        while (gr__frame_decode(buf, len, sizeof buf, &f, &used) == 0) {
            int32_t st =
                (f.type == GR__FRAME_RESPONSE || f.type == GR__FRAME_GOAWAY) ? f.u.response.status : 0;
            uint8_t t = f.type;
            memmove(buf, buf + used, len - used);
            len -= used;
            if (t == type) return st;
        }
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n <= 0) {
            *closed = 1;
            last_fd = -1;
            return INT32_MIN;
        }
        len += (size_t)n;
    }
}

void gr_test_send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        assert_true(k > 0);
        b += k;
        n -= (size_t)k;
    }
}

int gr_test_peer_closed(int fd) {
    char c;
    return read(fd, &c, 1) == 0;
}

/* ---- the partition proxy ---- */

typedef struct gr__pxside {
    uv_tcp_t tcp;
    struct gr__pxpair *pair;
} gr__pxside_t;

typedef struct gr__pxpair {
    gr__pxside_t a, b; /* a: the silo's side, b: the database's */
    struct gr__pxpair *next;
    gr_test_proxy_t *px;
    uv_connect_t connect;
    int open; /* handles not yet closed */
    int closing;
    int connected; /* upstream connected: reading (unless stalled) */
} gr__pxpair_t;

struct gr_test_proxy {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port, upstream;
    int cut, stalled;
    int closing, listener_closed;
    gr__pxpair_t *pairs;
};

/* The proxy goes once its listener and every pair have closed. */
static void gr__px_maybe_free(gr_test_proxy_t *px) {
    if (px->closing && px->listener_closed && !px->pairs) free(px);
}

static void gr__px_side_closed(uv_handle_t *h) {
    gr__pxpair_t *pp = ((gr__pxside_t *)h->data)->pair;
    if (--pp->open > 0) return;
    gr_test_proxy_t *px = pp->px;
    gr__pxpair_t **q = &px->pairs;
    while (*q && *q != pp)
        q = &(*q)->next;
    if (*q) *q = pp->next;
    free(pp);
    gr__px_maybe_free(px);
}

static void gr__px_close_pair(gr__pxpair_t *pp) {
    if (pp->closing) return;
    pp->closing = 1;
    uv_close((uv_handle_t *)&pp->a.tcp, gr__px_side_closed);
    uv_close((uv_handle_t *)&pp->b.tcp, gr__px_side_closed);
}

static void gr__px_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
    b->base = malloc(65536);
    b->len = b->base ? 65536 : 0;
}

typedef struct {
    uv_write_t req;
    char *data;
} gr__pxw_t;

static void gr__px_written(uv_write_t *req, int status) {
    gr__pxw_t *w = (gr__pxw_t *)req;
    free(w->data);
    free(w);
}

static void gr__px_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    gr__pxside_t *side = s->data;
    gr__pxpair_t *pp = side->pair;
    if (n < 0 || pp->px->cut) {
        free(buf->base);
        gr__px_close_pair(pp);
        return;
    }
    if (n == 0) {
        free(buf->base);
        return;
    }
    gr__pxside_t *other = side == &pp->a ? &pp->b : &pp->a;
    gr__pxw_t *w = malloc(sizeof *w);
    w->data = buf->base;
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&other->tcp, &out, 1, gr__px_written) != 0) {
        free(w->data);
        free(w);
        gr__px_close_pair(pp);
    }
}

static void gr__px_connected(uv_connect_t *req, int status) {
    gr__pxpair_t *pp = req->data;
    if (status < 0 || pp->closing) {
        gr__px_close_pair(pp);
        return;
    }
    pp->connected = 1;
    if (pp->px->stalled) return; /* started by gr_test_proxy_stall(px, 0) */
    uv_read_start((uv_stream_t *)&pp->a.tcp, gr__px_alloc, gr__px_read);
    uv_read_start((uv_stream_t *)&pp->b.tcp, gr__px_alloc, gr__px_read);
}

static void gr__px_accept(uv_stream_t *server, int status) {
    gr_test_proxy_t *px = server->data;
    if (status < 0) return;
    gr__pxpair_t *pp = calloc(1, sizeof *pp);
    pp->px = px;
    pp->a.pair = pp->b.pair = pp;
    uv_tcp_init(px->loop, &pp->a.tcp);
    uv_tcp_init(px->loop, &pp->b.tcp);
    pp->a.tcp.data = &pp->a;
    pp->b.tcp.data = &pp->b;
    pp->open = 2;
    pp->next = px->pairs;
    px->pairs = pp;
    if (uv_accept(server, (uv_stream_t *)&pp->a.tcp) != 0 || px->cut) {
        gr__px_close_pair(pp); /* partitioned: the connection dies at once */
        return;
    }
    struct sockaddr_in up;
    uv_ip4_addr("127.0.0.1", px->upstream, &up);
    pp->connect.data = pp;
    if (uv_tcp_connect(&pp->connect, &pp->b.tcp, (struct sockaddr *)&up, gr__px_connected) != 0)
        gr__px_close_pair(pp);
}

gr_test_proxy_t *gr_test_proxy_start(uv_loop_t *loop, int upstream_port) {
    gr_test_proxy_t *px = calloc(1, sizeof *px);
    px->loop = loop;
    px->upstream = upstream_port;
    uv_tcp_init(loop, &px->listener);
    px->listener.data = px;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&px->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&px->listener, 64, gr__px_accept), 0);
    struct sockaddr_in bound;
    int bl = sizeof bound;
    uv_tcp_getsockname(&px->listener, (struct sockaddr *)&bound, &bl);
    px->port = ntohs(bound.sin_port);
    return px;
}

int gr_test_proxy_port(const gr_test_proxy_t *px) { return px->port; }

void gr_test_proxy_cut(gr_test_proxy_t *px) {
    px->cut = 1;
    for (gr__pxpair_t *pp = px->pairs; pp; pp = pp->next)
        gr__px_close_pair(pp);
}

void gr_test_proxy_restore(gr_test_proxy_t *px) { px->cut = 0; }

void gr_test_proxy_stall(gr_test_proxy_t *px, int stalled) {
    px->stalled = stalled;
    for (gr__pxpair_t *pp = px->pairs; pp; pp = pp->next) {
        if (!pp->connected || pp->closing) continue;
        for (int i = 0; i < 2; i++) {
            uv_stream_t *s = (uv_stream_t *)(i ? &pp->b.tcp : &pp->a.tcp);
            if (stalled)
                uv_read_stop(s);
            else
                uv_read_start(s, gr__px_alloc, gr__px_read);
        }
    }
}

static void gr__px_listener_closed(uv_handle_t *h) {
    gr_test_proxy_t *px = h->data;
    px->listener_closed = 1;
    gr__px_maybe_free(px);
}

void gr_test_proxy_close(gr_test_proxy_t *px) {
    px->closing = 1;
    gr_test_proxy_cut(px);
    uv_close((uv_handle_t *)&px->listener, gr__px_listener_closed);
}

int gr_test_http_get(int port, const char *path, char *body, size_t size) {
    int fd = gr_test_raw_connect(port);
    char req[512];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    gr_test_send_all(fd, req, (size_t)n);
    static char resp[1 << 20];
    size_t len = 0;
    ssize_t k;
    while (len < sizeof resp - 1 && (k = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)k;
    close(fd);
    resp[len] = '\0';
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) return -1;
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, size, "%s", b ? b + 4 : "");
    return status;
}

void gr_test_on_reply(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_test_reply_t *r = ud;
    r->done = 1;
    r->status = status;
    r->len = len;
    size_t n = len < sizeof r->reply - 1 ? len : sizeof r->reply - 1;
    if (n) memcpy(r->reply, reply, n);
    r->reply[n] = '\0';
}

static int gr__test_closed;
static void gr__test_on_closed(void *ud) { gr__test_closed++; }

void gr_test_rt_open(uv_loop_t *loop, gr_storage_t **storage, gr_runtime_t **rt, const char *silo_id,
                     const gr_class_t *const *classes) {
    uv_loop_init(loop);
    assert_int_equal(gr_storage_memory_new(loop, storage), 0);
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    if (silo_id) o.silo_id = silo_id;
    assert_int_equal(gr_runtime_new(loop, *storage, &o, rt), 0);
    for (size_t i = 0; classes && classes[i]; i++)
        assert_int_equal(gr_runtime_register(*rt, classes[i]), 0);
}

void gr_test_rt_close(uv_loop_t *loop, gr_storage_t *storage, gr_runtime_t *rt) {
    gr__test_closed = 0;
    gr_runtime_close(rt, gr__test_on_closed, NULL);
    gr_test_run_for(loop, 50);
    gr_storage_close(storage, gr__test_on_closed, NULL);
    gr_test_run_for(loop, 50);
    assert_int_equal(gr__test_closed, 2);
    gr_test_loop_close(loop);
}

const char *gr_test_pg_ready(int migrate) {
    const char *url = gr_test_pg_url();
    if (!url) {
        fprintf(stderr, "GRANARY_TEST_PG_DIR not set: run under ctest (the pg fixture)\n");
        return NULL;
    }
    char err[512];
    if (migrate && gr_storage_pg_migrate(url, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return NULL;
    }
    return url;
}
