/* tests/silo/silo_fixture.h - what the process tests of one silo share
 * (test_silo.c; test_silo_edges.c: hostile input, limits, HTTP): starting
 * the real `silo` binary, running commands, clients and a checked load. */
#ifndef GR_TEST_SILO_FIXTURE_H
#define GR_TEST_SILO_FIXTURE_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/client.h"
#include "support.h"
#include "harness.h"
#include "admin/http.h"
#include "wire/frame.h"

typedef gr_test_reply_t res_t;
#define on_done gr_test_on_reply
typedef struct {
    pid_t pid;
    int port;
} silo_t;

typedef struct {
    int acked[64];
    int failed;
    int outstanding;
} load_t;

typedef struct {
    load_t *load;
    int key;
} ticket_t;

extern char log_path[1024];
/* Each case runs its silos in a cluster of its own: state rows and
 * membership are scoped by the cluster name, so cases cannot interfere. */
extern char cluster[64];

int new_cluster(void **st);
int start_silo(silo_t *s, int port, const char *const *extra);
int run_cmd(const char *const argv[], uint64_t timeout_ms);
int run_capture_fds(const char *const argv[], char *out, size_t out_size, int with_stderr);
int run_capture(const char *const argv[], char *out, size_t out_size);
gr_client_t *client_to(uv_loop_t *loop, int port);
int call_once(int port, const char *secret, const char *key, const char *method, res_t *r);
void run_load(int port, int nkeys, int incrs, load_t *load);

#endif
