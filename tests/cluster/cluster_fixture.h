/* tests/cluster/cluster_fixture.h - what the cluster tests share
 * (test_cluster.c; test_cluster_http.c: the HTTP API and mutual TLS): the
 * cluster of real silo processes (tests/support/harness.h), one-off calls
 * and the checked load. */
#ifndef GR_TEST_CLUSTER_FIXTURE_H
#define GR_TEST_CLUSTER_FIXTURE_H
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/client.h"
#include "support.h"
#include "admin/http.h"
#include "wire/frame.h"

#include "harness.h"

#define NKEYS 24
#define NWORKERS 12
#define now_ms gr_h_now_ms
typedef gr_test_reply_t res_t;
#define on_res gr_test_on_reply

extern char log_path[1024];
extern gr_h_cluster_t cl;
extern gr_h_silo_t *silos;

int new_cluster(void **st);
int kill_all(void **st);
void start_silo(int i, const char *db);
int count_active(void);
void wait_active_on(uv_loop_t *loop, int n);
void wait_active(int n);
gr_client_t *client_for(uv_loop_t *loop, const char *silos_list, const char *secret);
int call_sync(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
              res_t *r);
int call_retry(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
               res_t *r, uint64_t ms);
gr_h_load_t *load_start(uv_loop_t *loop, int nsilos);
void load_finish(gr_h_load_t *l, const char *label);
int sigterm_and_wait(uv_loop_t *loop, int i, uint64_t *took_ms);
void key_hosted_on(uv_loop_t *loop, gr_client_t *via, int i, const char *prefix, char *key, size_t size);
/* Start silos 0 and 1 (loop initialised) and wait until both are active in each other's view. */
void start_two_silos(uv_loop_t *loop);

#endif
