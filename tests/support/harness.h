/* tests/support/harness.h - a cluster of real silo processes and a checked
 * load, shared by the cluster tests and the chaos harness.
 *
 * The load: W workers send plain `incr` with an idempotency key per
 * operation to M counters and retry each operation (same key: it counts
 * once) until it is acknowledged, so at the end every counter must equal
 * exactly its acknowledged operations. */
#ifndef GR_TEST_HARNESS_H
#define GR_TEST_HARNESS_H

#include <sys/types.h>
#include <uv.h>

#include "granary/client.h"

#define GR_H_MAX_SILOS 8
#define GR_H_MAX_KEYS 256
#define GR_H_MAX_WORKERS 64

typedef struct gr_h_silo {
    pid_t pid;
    int port;
    char db[512];
    char host[32];            /* its address (default 127.0.0.1) */
    char netns[32];           /* run inside this network namespace ("": none) */
    const char *grains;       /* --grains module relative to the build dir (NULL: examples/counter.so) */
    const char *const *extra; /* more flags, NULL-terminated (or NULL) */
} gr_h_silo_t;

typedef struct gr_h_cluster {
    char name[64];
    char secret[32];
    char log_path[1024];
    const char *pg_url; /* for membership queries */
    /* "": plaintext. Else a directory made by gr_h_make_certs(): every silo
     * runs mutual TLS (its certificate, --tls-client-auth, peers checked for
     * the name granary-silo) and gr_h_client() presents client.crt. */
    char tls_dir[512];
    gr_h_silo_t silos[GR_H_MAX_SILOS];
} gr_h_cluster_t;

void gr_h_cluster_init(gr_h_cluster_t *c, const char *name, const char *pg_url, const char *log_path);
/* Start silo i (a free port the first time, the same port after) with
 * database URL db (NULL: pg_url). 0, or -1 if it did not listen in 10 s. */
int gr_h_start_silo(gr_h_cluster_t *c, int i, const char *db);
int gr_h_count_active(const gr_h_cluster_t *c);
/* Wait for n active silos, running loop meanwhile (NULL: sleep). 0 or -1. */
int gr_h_wait_active(const gr_h_cluster_t *c, uv_loop_t *loop, int n, uint64_t timeout_ms);
/* SIGTERM silo i and run loop until it exits; its status, or -1 on timeout. */
int gr_h_sigterm_and_wait(gr_h_cluster_t *c, uv_loop_t *loop, int i, uint64_t *took_ms);
/* SIGKILL silo i and reap it. */
void gr_h_kill(gr_h_cluster_t *c, int i);
void gr_h_kill_all(gr_h_cluster_t *c);
/* Certificates for a TLS cluster (tests/support/make_certs.sh) in a fresh
 * temporary directory, written to dir; 0 or -1. */
int gr_h_make_certs(char *dir, size_t size);
/* A client for "host:port,..." in this cluster (NULL on failure). */
gr_client_t *gr_h_client(const gr_h_cluster_t *c, uv_loop_t *loop, const char *list);
/* "127.0.0.1:P1,127.0.0.1:P2,..." of silos first..first+n-1 (wrapping over n_total). */
void gr_h_silo_list(const gr_h_cluster_t *c, int first, int n_total, char *out, size_t size);
uint64_t gr_h_now_ms(void);

/* A burst: n calls of `method` on n fresh grains cls/PREFIX-0.. sent at once
 * through c (n in flight), then wait (running loop, at most timeout_ms) for
 * every answer. Returns how many did not succeed (timed out or failed); the
 * first failure is described in err. Each call's reply must be "1" (a
 * fresh counter's first incr). */
int gr_h_burst(uv_loop_t *loop, gr_client_t *c, const char *cls, const char *prefix, int n,
               uint64_t timeout_ms, char *err, size_t err_size);

/* Bursts of 1, 32, 256, 257 (one past a full storage batch), 1024 and 4096
 * calls in flight, each on fresh grains TAG<N>-0..; 0, or -1 at the first
 * size with a failure (err says which and how). */
int gr_h_burst_sweep(uv_loop_t *loop, gr_client_t *c, const char *cls, const char *tag, char *err,
                     size_t err_size);

typedef struct gr_h_summary {
    uint64_t attempted, acknowledged, retryable_errors, other_errors, lost, duplicated;
    uint64_t max_latency_ms, p99_latency_ms, longest_unavailable_ms;
    /* The history checker (gr_h_load_verify): acknowledged operations with
     * their invocation and completion times, per key. */
    uint64_t history_ops, gets;
    uint64_t stale_reads;    /* an operation saw less than one that completed before it started */
    uint64_t doubled_values; /* two first-try incrs acknowledged with the same value */
    uint64_t out_of_range;   /* final value outside [acknowledged, attempted] increments */
    char first_violation[256];
    char first_other_error[256];
} gr_h_summary_t;

typedef struct gr_h_load gr_h_load_t;

/* Clients: one per silo in silos[0..n_clients-1], each listing all of them
 * starting at a different one. */
gr_h_load_t *gr_h_load_new(gr_h_cluster_t *c, uv_loop_t *loop, int n_clients, int workers, int keys);
/* Add the `hot` workload before starting: `workers` more workers on `keys`
 * hot counters (hot-0..), each operation a get or an incr_once at random,
 * spread over every client (so through every silo). 0, or -1 if the limits
 * (GR_H_MAX_WORKERS, GR_H_MAX_KEYS in all) do not allow it. */
int gr_h_load_add_hot(gr_h_load_t *l, int workers, int keys);
void gr_h_load_start(gr_h_load_t *l);
/* Stop issuing and wait (running the loop) until every operation in flight
 * is acknowledged; 0, or -1 if some did not finish within timeout_ms. */
int gr_h_load_stop(gr_h_load_t *l, uint64_t timeout_ms);
/* Read every counter back (retrying, 30 s in all) and compare, then check
 * the recorded history per key (docs/reliability.md, "the checker"): real-time
 * order (an operation that starts after another was acknowledged sees a value
 * at least as new, strictly newer for an incr), no value acknowledged to two
 * first-try incrs, and the final value between the acknowledged and the
 * attempted increments. 0 when nothing was lost or duplicated, no check
 * failed and no non-retryable error happened. */
int gr_h_load_verify(gr_h_load_t *l, gr_h_summary_t *out);
void gr_h_summary_print(const gr_h_summary_t *s, const char *label);
void gr_h_load_free(gr_h_load_t *l);

#endif
