/* tests/cluster/test_directory.c - the directory's maps (src/cluster/
 * directory.c) on their own: first live registration wins, a dead holder
 * is replaced, only the holder unregisters, ids are bytes (NUL inside,
 * the longest id a grain can have), and a view change drops exactly the
 * entries of dead silos, at 10,000 entries. */
#include <stdio.h>

#include "base/base.h"
#include "cluster/directory.h"
#include "support.h"

/* Alive: every silo whose id does not start with "dead". */
static int alive(void *ud, const char *silo) {
    (void)ud;
    return strncmp(silo, "dead", 4) != 0;
}

static void test_first_live_registration_wins(void **st) {
    gr__dir_map_t m = {0};
    char winner[GR__SILO_ID_MAX + 1];
    static const uint8_t id[] = {'C', 0, 'k', 0, 'x'}; /* class '\0' key, a NUL in the key */
    assert_int_equal(gr__dir_register(&m, id, sizeof id, "a", alive, NULL, winner), 0);
    assert_string_equal(winner, "a");
    assert_int_equal(gr__dir_register(&m, id, sizeof id, "b", alive, NULL, winner), 0);
    assert_string_equal(winner, "a"); /* a holds it and is alive */
    assert_string_equal(gr__dir_lookup(&m, id, sizeof id), "a");
    assert_null(gr__dir_lookup(&m, id, sizeof id - 1)); /* a prefix is another id */
    gr__dir_unregister(&m, id, sizeof id, "b");         /* not the holder: no effect */
    assert_string_equal(gr__dir_lookup(&m, id, sizeof id), "a");
    gr__dir_unregister(&m, id, sizeof id, "a");
    assert_null(gr__dir_lookup(&m, id, sizeof id));
    assert_int_equal(m.n, 0);
    /* A dead holder loses the grain to the next registration. */
    assert_int_equal(gr__dir_put(&m, id, sizeof id, "dead-1"), 0);
    assert_int_equal(gr__dir_register(&m, id, sizeof id, "c", alive, NULL, winner), 0);
    assert_string_equal(winner, "c");
    assert_int_equal(m.n, 1);
    gr__dir_clear(&m);
    assert_int_equal(m.n, 0);
    assert_null(m.entries);
}

static void test_longest_id_and_silo(void **st) {
    gr__dir_map_t m = {0};
    size_t len = GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX;
    uint8_t *id = malloc(len), *other = malloc(len);
    for (size_t i = 0; i < len; i++)
        id[i] = (uint8_t)(i * 7);
    memcpy(other, id, len);
    other[len - 1] ^= 1; /* differs in the last byte only */
    char silo[GR__SILO_ID_MAX + 1];
    memset(silo, 's', GR__SILO_ID_MAX);
    silo[GR__SILO_ID_MAX] = '\0';
    assert_int_equal(gr__dir_put(&m, id, len, silo), 0);
    assert_string_equal(gr__dir_lookup(&m, id, len), silo);
    assert_null(gr__dir_lookup(&m, other, len));
    assert_int_equal(gr__dir_put(&m, id, len, "short"), 0); /* replace in place */
    assert_string_equal(gr__dir_lookup(&m, id, len), "short");
    assert_int_equal(m.n, 1);
    gr__dir_clear(&m);
    free(id);
    free(other);
}

static void test_retain_alive_at_scale(void **st) {
    gr__dir_map_t m = {0};
    char id[32], silo[32];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(id, sizeof id, "Counter%c%d", 0, i);
        snprintf(silo, sizeof silo, i % 3 == 0 ? "dead-%d" : "live-%d", i % 7);
        assert_int_equal(gr__dir_put(&m, id, (size_t)n, silo), 0);
    }
    assert_int_equal(m.n, 10000);
    size_t dropped = gr__dir_retain_alive(&m, alive, NULL);
    assert_int_equal(dropped, 3334); /* i % 3 == 0 for i in 0..9999 */
    assert_int_equal(m.n, 10000 - 3334);
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(id, sizeof id, "Counter%c%d", 0, i);
        const char *h = gr__dir_lookup(&m, id, (size_t)n);
        if (i % 3 == 0)
            assert_null(h);
        else
            assert_non_null(h);
    }
    assert_int_equal(gr__dir_retain_alive(&m, alive, NULL), 0); /* nothing more to drop */
    gr__dir_clear(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_live_registration_wins),
        cmocka_unit_test(test_longest_id_and_silo),
        cmocka_unit_test(test_retain_alive_at_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
