/* tests/runtime/test_api_limits.c - the public API's answers at its edges
 * (issue 14): a limit breached is GR_ETOOBIG (a class or method name one byte
 * over), a reserved or impossible value GR_EINVAL (state versions with bit 30
 * or 31, a storage format with the reply-log bit), and NULL handles GR_EINVAL
 * instead of a crash. */
#include <stdio.h>
#include <string.h>

#include "granary/granary.h"
#include "support.h"

static void m_nop(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, NULL, 0); }

static void on_write(void *ud, int status, int64_t v, const char *detail) {}

static void test_limits_and_reserved_values(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_storage_t *storage;
    assert_int_equal(gr_storage_memory_new(&loop, &storage), 0);
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    gr_runtime_t *rt;
    assert_int_equal(gr_runtime_new(&loop, storage, &o, &rt), 0);

    char long_name[GR_CLASS_NAME_MAX + 2];
    memset(long_name, 'C', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0'; /* GR_CLASS_NAME_MAX + 1 bytes */
    static const gr_method_t methods[] = {{"nop", m_nop}, {NULL, NULL}};
    gr_class_t c = {.name = long_name, .methods = methods};
    assert_int_equal(gr_runtime_register(rt, &c), GR_ETOOBIG);
    long_name[GR_CLASS_NAME_MAX] = '\0'; /* exactly the limit: fine */
    assert_int_equal(gr_runtime_register(rt, &c), 0);

    char long_method[GR_METHOD_NAME_MAX + 2];
    memset(long_method, 'm', sizeof long_method - 1);
    long_method[sizeof long_method - 1] = '\0';
    gr_method_t lm[] = {{long_method, m_nop}, {NULL, NULL}};
    gr_class_t c2 = {.name = "LongMethod", .methods = lm};
    assert_int_equal(gr_runtime_register(rt, &c2), GR_ETOOBIG);

    gr_class_t v30 = {.name = "V30", .methods = methods, .state_version = 1u << 30};
    gr_class_t v31 = {.name = "V31", .methods = methods, .state_version = 1u << 31};
    assert_int_equal(gr_runtime_register(rt, &v30), GR_EINVAL);
    assert_int_equal(gr_runtime_register(rt, &v31), GR_EINVAL);

    char over[GR_CLASS_NAME_MAX + 2];
    memset(over, 'S', sizeof over - 1);
    over[sizeof over - 1] = '\0';
    assert_int_equal(gr_storage_write(storage, over, "k", 1, "x", 1, 0, 0, on_write, NULL), GR_ETOOBIG);
    assert_int_equal(gr_storage_write(storage, "S", "k", 1, "x", 1, 1u << 30, 0, on_write, NULL), GR_EINVAL);
    assert_int_equal(gr_storage_write(storage, "S", "k", 1, "x", 1, 1u << 31, 0, on_write, NULL), GR_EINVAL);

    assert_int_equal(gr_state_set(NULL, "x", 1), GR_EINVAL);
    assert_int_equal(gr_state_write(NULL, NULL, NULL), GR_EINVAL);
    assert_int_equal(gr_state_clear(NULL), GR_EINVAL);
    assert_int_equal(gr_timer_stop(NULL, 1), GR_EINVAL);

    int closed = 0;
    gr_runtime_close(rt, NULL, NULL);
    gr_test_run_for(&loop, 50);
    gr_storage_close(storage, NULL, NULL);
    gr_test_run_for(&loop, 50);
    (void)closed;
    gr_test_loop_close(&loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_limits_and_reserved_values)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
