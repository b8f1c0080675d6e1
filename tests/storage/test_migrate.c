/* tests/storage/test_migrate.c - migrations apply, are recorded, and
 * re-running them (also concurrently) changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string.h>

#include "granary/error.h"
#include "granary/storage.h"
#include "support.h"

static void test_migrate_twice(void **st) {
    const char *url = gr_test_pg_url();
    char err[512];
    assert_int_equal(gr_storage_pg_migrate(url, NULL, err, sizeof err), 0);
    char *v = gr_test_sql(url, "SELECT max(version) FROM granary_schema_version");
    assert_non_null(v);
    assert_int_equal(atoi(v), gr_storage_pg_schema_version());
    free(v);
    char *rows1 = gr_test_sql(url, "SELECT count(*) FROM granary_schema_version");
    assert_int_equal(gr_storage_pg_migrate(url, NULL, err, sizeof err), 0);
    char *rows2 = gr_test_sql(url, "SELECT count(*) FROM granary_schema_version");
    assert_string_equal(rows1, rows2);
    free(rows1);
    free(rows2);
    /* The table has the promised primary key (no duplicate grain rows). */
    char *pk = gr_test_sql(
        url, "SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) "
             "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
             "WHERE i.indrelid = 'granary_grain_state'::regclass AND i.indisprimary");
    assert_non_null(pk);
    assert_string_equal(pk, "grain_key,grain_class,service");
    free(pk);
}

/* Two migrators at once (two pods' init containers): both succeed. */
static void test_migrate_concurrently(void **st) {
    const char *url = gr_test_pg_url();
    /* Every table of every migration, so all of them run again at once. */
    gr_test_sql(url, "DROP TABLE IF EXISTS granary_grain_state, granary_silo, granary_reminder, "
                     "granary_membership_version, granary_activation, granary_reply, granary_state_upgrade, "
                     "granary_schema_version");
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char err[512];
            _exit(gr_storage_pg_migrate(url, NULL, err, sizeof err) == 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(gr_test_wait(kids[i], 30000), 0);
    char *n = gr_test_sql(url, "SELECT count(*) FROM granary_schema_version");
    assert_int_equal(atoi(n), gr_storage_pg_schema_version());
    free(n);
}

static void test_migrate_bad_url(void **st) {
    char err[512];
    char url[128];
    snprintf(url, sizeof url, "postgresql://granary@127.0.0.1:%d/x?connect_timeout=2", gr_test_free_port());
    assert_int_equal(gr_storage_pg_migrate(url, NULL, err, sizeof err), GR_ESTORAGE);
    assert_non_null(strstr(err, "cannot connect"));
}

int main(void) {
    if (!gr_test_pg_url()) {
        fprintf(stderr, "no test database: run under ctest (the pg fixture starts one)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_twice),
        cmocka_unit_test(test_migrate_concurrently),
        cmocka_unit_test(test_migrate_bad_url),
    };
    return cmocka_run_group_tests_name("persistence.migrate", tests, NULL, NULL);
}
