/* bench/bench_echo.c - the transport's ceiling: a raw libuv TCP echo on
 * loopback, a forked server process and a client keeping W messages of the
 * size of a small Granary request in flight, for a bounded time. The
 * baseline for the cross-silo call benchmark.
 *   bench_echo [--seconds S] [--window W] [--size BYTES] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

static size_t msg_size = 48;
static int window = 64;
static uint64_t deadline_ns, done_msgs;
static size_t pending_bytes;
static char *payload;

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b) {
    static char buf[1 << 16];
    *b = uv_buf_init(buf, sizeof buf);
}

typedef struct {
    uv_write_t req;
    char *data;
} wr_t;

static void written(uv_write_t *w, int status) {
    free(((wr_t *)w)->data);
    free(w);
}

static void send_copy(uv_stream_t *s, const char *p, size_t n) {
    wr_t *w = malloc(sizeof *w);
    w->data = malloc(n);
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    uv_write(&w->req, s, &b, 1, written);
}

/* Server: echo what arrives. */
static void srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    if (n < 0) {
        uv_close((uv_handle_t *)s, NULL);
        return;
    }
    if (n > 0) send_copy(s, b->base, (size_t)n);
}

static void srv_conn(uv_stream_t *server, int status) {
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0) {
        uv_tcp_nodelay(c, 1);
        uv_read_start((uv_stream_t *)c, alloc_cb, srv_read);
    }
}

/* Client: count whole echoed messages, send one more for each. */
static void cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    if (n <= 0) {
        uv_stop(s->loop);
        return;
    }
    pending_bytes += (size_t)n;
    size_t msgs = pending_bytes / msg_size;
    pending_bytes %= msg_size;
    done_msgs += msgs;
    if (uv_hrtime() >= deadline_ns) {
        uv_stop(s->loop);
        return;
    }
    /* Like the silo, batch: one write carries every message this read freed. */
    if (msgs) {
        char *batch = malloc(msgs * msg_size);
        for (size_t i = 0; i < msgs; i++)
            memcpy(batch + i * msg_size, payload, msg_size);
        send_copy(s, batch, msgs * msg_size);
        free(batch);
    }
}

static void cli_connected(uv_connect_t *req, int status) {
    if (status < 0) {
        fprintf(stderr, "bench_echo: connect: %s\n", uv_strerror(status));
        uv_stop(req->handle->loop);
        return;
    }
    uv_tcp_nodelay((uv_tcp_t *)req->handle, 1);
    uv_read_start(req->handle, alloc_cb, cli_read);
    char *batch = calloc((size_t)window, msg_size);
    send_copy(req->handle, batch, (size_t)window * msg_size);
    free(batch);
}

int main(int argc, char **argv) {
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size"))
            msg_size = (size_t)atol(argv[i + 1]);
    }
    if (seconds <= 0 || seconds > 600 || window < 1 || msg_size < 1 || msg_size > 65536) return 2;
    payload = calloc(1, msg_size);
    /* The listening socket is made before the fork (so the parent knows the
     * port) but the server's loop only in the child: a libuv loop shared
     * across fork() shares its epoll set, and the parent closing its copy
     * of the handle unregistered the child's listener (0 round trips). */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t bl = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &bl) != 0) {
        perror("bench_echo: listen");
        return 1;
    }
    struct sockaddr_in bound = a;
    pid_t child = fork();
    if (child == 0) {
        alarm((unsigned)seconds + 10); /* bounded even if the parent dies */
        uv_loop_t srv_loop;
        uv_tcp_t server;
        uv_loop_init(&srv_loop);
        uv_tcp_init(&srv_loop, &server);
        if (uv_tcp_open(&server, lfd) != 0 || uv_listen((uv_stream_t *)&server, 16, srv_conn) != 0) _exit(1);
        uv_run(&srv_loop, UV_RUN_DEFAULT);
        _exit(0);
    }
    close(lfd);
    uv_loop_t *loop = uv_default_loop();
    uv_tcp_t cli;
    uv_tcp_init(loop, &cli);
    uv_connect_t req;
    uint64_t t0 = uv_hrtime();
    deadline_ns = t0 + (uint64_t)(seconds * 1e9);
    uv_tcp_connect(&req, &cli, (struct sockaddr *)&bound, cli_connected);
    uv_run(loop, UV_RUN_DEFAULT);
    double el = (double)(uv_hrtime() - t0) / 1e9;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("%-28s %10.0f round trips/s  (libuv TCP echo, %zu-byte messages, window %d, %.1f s)\n",
           "baseline: raw echo", (double)done_msgs / el, msg_size, window, el);
    return 0;
}
