/* tests/support/support.h - helpers shared by the test programs: a bounded
 * loop runner, the throwaway PostgreSQL's URL, and real child processes. */
#ifndef GR_TEST_SUPPORT_H
#define GR_TEST_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/types.h>
#include <uv.h>

/* Run `loop` until *flag becomes non-zero or `timeout_ms` passes; returns
 * the flag (0 on timeout). Never blocks longer than the timeout. */
int gr_test_run_until(uv_loop_t *loop, const int *flag, uint64_t timeout_ms);

/* The start of a test program that runs silo processes: needs the pg
 * fixture's database, ignores SIGPIPE, truncates the log at
 * GRANARY_BUILD_DIR/log_name (its path copied to log_path) and migrates the
 * database with the real `silo migrate`. 0, or 1 (with a message). */
int gr_test_process_setup(const char *log_name, char *log_path, size_t size);

/* Milliseconds on a monotonic-enough clock (for test deadlines). */
uint64_t gr_test_now_ms(void);

/* Run `loop` for `ms` milliseconds. */
void gr_test_run_for(uv_loop_t *loop, uint64_t ms);

/* Close every handle left on `loop`, run it dry and close it; fails the test
 * if the loop cannot be closed. */
void gr_test_loop_close(uv_loop_t *loop);

/* The fixture of tests that drive one runtime in-process: *loop initialised,
 * a memory provider and a runtime with silo id `silo_id` on it, `classes`
 * (NULL-terminated) registered. gr_test_rt_close closes the runtime, then the
 * provider, then the loop, asserting that each closed; a test closes what
 * it built on top (a router, a gateway) first. */
struct gr_storage;
struct gr_runtime;
struct gr_class;
void gr_test_rt_open(uv_loop_t *loop, struct gr_storage **storage, struct gr_runtime **rt,
                     const char *silo_id, const struct gr_class *const *classes);
void gr_test_rt_close(uv_loop_t *loop, struct gr_storage *storage, struct gr_runtime *rt);

/* The URL of the throwaway PostgreSQL that the CTest fixture started
 * (GRANARY_TEST_PG_DIR/url), or NULL when there is none. Static buffer. */
const char *gr_test_pg_url(void);
/* The start of a test program that needs the pg fixture's database: its URL,
 * after applying the migrations if `migrate`; NULL (with a message on stderr)
 * when the program does not run under ctest or the migration fails. */
const char *gr_test_pg_ready(int migrate);

/* Run SQL on the test database with psql-free blocking libpq; returns the
 * first column of the first row as a malloc'd string (or NULL). */
char *gr_test_sql(const char *url, const char *sql);

/* Start a child process with argv (argv[0] a path), stdout/stderr appended
 * to log_path (may be NULL: inherit). Returns the pid or -1. */
pid_t gr_test_spawn(const char *const argv[], const char *log_path);

/* Wait up to timeout_ms for the child to exit; returns its exit status
 * (128+signal if killed), or -1 on timeout. */
int gr_test_wait(pid_t pid, uint64_t timeout_ms);

/* Print the last `lines` lines of a log file to stderr, so that a failing
 * test shows what the processes it started were doing. */
void gr_test_print_tail(const char *path, int lines);

/* Wait until something accepts TCP connections on 127.0.0.1:port (or the
 * numeric IPv4 host:port). */
int gr_test_wait_port(int port, uint64_t timeout_ms);
int gr_test_wait_addr(const char *host, int port, uint64_t timeout_ms);

/* A free TCP port on 127.0.0.1 below the kernel's ephemeral range (bound then
 * released), never the same one twice in a process. */
int gr_test_free_port(void);

/* Path of a build artefact: GRANARY_BUILD_DIR/rel. Static buffer per call slot. */
const char *gr_test_build_path(const char *rel);

/* A call's completion captured for a test: gr_test_on_reply is a
 * gr_call_cb whose ud is a gr_test_reply_t (reply cut at 255 bytes). */
typedef struct gr_test_reply {
    int done;
    int status;
    char reply[256];
    size_t len;
} gr_test_reply_t;
void gr_test_on_reply(void *ud, int status, const uint8_t *reply, size_t len);

/* Raw TCP to 127.0.0.1:port with a 5 s read timeout (asserts on failure). */
int gr_test_raw_connect(int port);
void gr_test_send_all(int fd, const void *p, size_t n);
/* Read frames until one of `type` arrives; returns its status (RESPONSE,
 * GOAWAY) or 0, or INT32_MIN with *closed set if the peer closed first. */
int32_t gr_test_read_until(int fd, uint8_t type, int *closed);
/* 1 if the peer closed the connection (read returns 0). */
int gr_test_peer_closed(int fd);

/* A TCP proxy on 127.0.0.1 (a free port) to 127.0.0.1:upstream_port, run by
 * `loop` (the test must keep running it). cut() closes every proxied
 * connection and refuses new ones until restore(): a network partition
 * between a silo and its database, without touching anyone else. */
typedef struct gr_test_proxy gr_test_proxy_t;
gr_test_proxy_t *gr_test_proxy_start(uv_loop_t *loop, int upstream_port);
int gr_test_proxy_port(const gr_test_proxy_t *p);
void gr_test_proxy_cut(gr_test_proxy_t *p);
void gr_test_proxy_restore(gr_test_proxy_t *p);

/* Stall (1) or resume (0) the proxy: bytes stop moving in both directions
 * but every connection stays open, as in a partition that drops packets
 * (TCP retransmits, so nothing is lost when it heals). */
void gr_test_proxy_stall(gr_test_proxy_t *px, int stalled);
void gr_test_proxy_close(gr_test_proxy_t *p); /* frees after the loop runs its close callbacks */

/* GET http://127.0.0.1:port/path; body (NUL-terminated) into body; returns
 * the status code or -1. */
int gr_test_http_get(int port, const char *path, char *body, size_t size);

#endif
