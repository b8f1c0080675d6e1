/* tests/runtime/runtime_fixture.h - what the runtime tests share
 * (test_runtime.c: calls and turns; test_runtime_state.c: state, timers,
 * workers, reminders, keys): their grain classes and the fixture, one loop
 * with one memory provider and two runtimes ("silo-a", "silo-b"). */
#ifndef GR_TEST_RUNTIME_FIXTURE_H
#define GR_TEST_RUNTIME_FIXTURE_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "granary/grain.h"
#include "runtime/runtime.h"
#include "support.h"

typedef struct {
    gr_grain_t *g;
    gr_msg_t *m;
} later_t;

typedef struct {
    int busy;
    later_t later; /* the call a timer will answer (one at a time: turns do not overlap) */
    int ticks;
    int seen[256];
    int nseen;
} tdata_t;

typedef struct {
    uv_loop_t loop;
    gr_storage_t *st;
    gr_runtime_t *rt, *rt2;
} fx_t;

typedef struct {
    int done;
    int status;
    char reply[2048];
    size_t len;
    int order;
} res_t;

typedef struct {
    int done, status;
    int64_t version;
    uint32_t format;
    size_t len;
} sread_t;

extern int activations, deactivations, busy_violations; /* by the classes' hooks */
extern int completions;                                 /* completion order, for ordering assertions */

int setup(void **state);
void tick(gr_grain_t *g, void *ud);
void on_done(void *ud, int status, const uint8_t *reply, size_t len);
gr_runtime_t *make_rt(fx_t *fx, const char *id, uint32_t max_queue);
void closed(void *ud);
int teardown(void **state);
void call(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method, const char *arg,
          uint32_t timeout, res_t *r);
sread_t storage_row(fx_t *fx, const char *cls, const char *key);
void call_key(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method,
              const char *idem, res_t *r);
extern const gr_method_t ring_methods[];
extern int upgrades;                      /* upgrade_state calls of the Doc classes */
extern char reminded[64];                 /* the last reminder name on_reminder saw */
extern char fake_seen[256];               /* what the fake reminder service was last asked */
extern const gr__reminder_ops_t fake_ops; /* a reminder service that only records */
extern const gr_class_t doc_v1;
extern const gr_class_t doc_v2;
extern const gr_class_t doc_v3;

#endif
