/* tests/cluster/test_ring.c - the hash ring: determinism, balance, and
 * minimal movement when a member leaves. */
#include "base/base.h"
#include "cluster/ring.h"
#include "support.h"

static void test_empty_and_single(void **st) {
    gr__ring_t r;
    assert_int_equal(gr__ring_build(&r, NULL, 0), 0);
    assert_int_equal(gr__ring_owner(&r, 123), -1);
    gr__ring_free(&r);
    const char *one[] = {"a"};
    assert_int_equal(gr__ring_build(&r, one, 1), 0);
    for (uint64_t h = 0; h < 1000; h++)
        assert_int_equal(gr__ring_owner(&r, h * 0x9e3779b97f4a7c15ull), 0);
    gr__ring_free(&r);
}

static void test_order_independent_and_balanced(void **st) {
    const char *abc[] = {"silo-a", "silo-b", "silo-c"};
    const char *cab[] = {"silo-c", "silo-a", "silo-b"};
    gr__ring_t r1, r2;
    assert_int_equal(gr__ring_build(&r1, abc, 3), 0);
    assert_int_equal(gr__ring_build(&r2, cab, 3), 0);
    int count[3] = {0};
    for (int i = 0; i < 30000; i++) {
        char key[16];
        int n = snprintf(key, sizeof key, "k%d", i);
        uint64_t h = gr__grain_hash("Counter", key, (size_t)n);
        int o1 = gr__ring_owner(&r1, h), o2 = gr__ring_owner(&r2, h);
        assert_string_equal(abc[o1], cab[o2]);
        count[o1]++;
    }
    /* Each of three silos owns a fair share (within 30% of 10000). */
    for (int m = 0; m < 3; m++) {
        assert_true(count[m] > 7000);
        assert_true(count[m] < 13000);
    }
    gr__ring_free(&r1);
    gr__ring_free(&r2);
}

static void test_leave_moves_only_its_grains(void **st) {
    const char *abc[] = {"silo-a", "silo-b", "silo-c"};
    const char *ab[] = {"silo-a", "silo-b"};
    gr__ring_t r3, r2;
    gr__ring_build(&r3, abc, 3);
    gr__ring_build(&r2, ab, 2);
    for (int i = 0; i < 10000; i++) {
        char key[16];
        int n = snprintf(key, sizeof key, "g%d", i);
        uint64_t h = gr__grain_hash("Counter", key, (size_t)n);
        int before = gr__ring_owner(&r3, h), after = gr__ring_owner(&r2, h);
        if (before != 2) assert_int_equal(before, after); /* only silo-c's grains move */
    }
    gr__ring_free(&r3);
    gr__ring_free(&r2);
}

static void test_class_is_part_of_the_id(void **st) {
    assert_int_not_equal(gr__grain_hash("A", "bc", 2), gr__grain_hash("Ab", "c", 1));
    assert_int_not_equal(gr__grain_hash("A", "", 0), gr__grain_hash("B", "", 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_single),
        cmocka_unit_test(test_order_independent_and_balanced),
        cmocka_unit_test(test_leave_moves_only_its_grains),
        cmocka_unit_test(test_class_is_part_of_the_id),
    };
    return cmocka_run_group_tests_name("directory.ring", tests, NULL, NULL);
}
