/* tests/base/test_common.c - the error table, address parsing, the
 * deadline queue, escaping and the allocator hook. */
#include "base/base.h"
#include "support.h"

static void test_errors(void **st) {
    assert_string_equal(gr_err_name(GR_ETIMEDOUT), "GR_ETIMEDOUT");
    assert_string_equal(gr_strerror(0), "success");
    assert_string_equal(gr_err_name(12345), "GR_UNKNOWN");
    /* The table is in decreasing order (GR_ERRNO_MIN is derived from its
     * last entry), every entry has a name and a message, and only the
     * retired -19 is a hole. */
    static const int codes[] = {
#define GR__CODE(n, v, m) v,
        GR_ERRNO_MAP(GR__CODE)
#undef GR__CODE
    };
    for (size_t i = 1; i < GR__ARRAY_SIZE(codes); i++)
        assert_true(codes[i] < codes[i - 1]);
    assert_int_equal(codes[GR__ARRAY_SIZE(codes) - 1], GR_ERRNO_MIN);
    for (int e = -1; e >= GR_ERRNO_MIN; e--) {
        int known = e != -19;
        assert_int_equal(strcmp(gr_err_name(e), "GR_UNKNOWN") != 0, known);
        assert_int_equal(strcmp(gr_strerror(e), "unknown error") != 0, known);
    }
    assert_string_equal(gr_err_name(GR__EAGAIN), "GR_UNKNOWN"); /* internal, outside the table */
    assert_int_equal(gr_err_retryable(GR_ECONN), 1);
    assert_int_equal(gr_err_retryable(GR_ENOCLASS), 0);
}

static void test_hostport(void **st) {
    char host[64];
    int port;
    assert_int_equal(gr__parse_hostport("127.0.0.1:7700", 14, host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7700);
    assert_int_equal(gr__parse_hostport("[::1]:80", 8, host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(gr__parse_hostport("nohost", 6, host, sizeof host, &port), GR_EINVAL);
    assert_int_equal(gr__parse_hostport(":80", 3, host, sizeof host, &port), GR_EINVAL);
    assert_int_equal(gr__parse_hostport("h:99999", 7, host, sizeof host, &port), GR_EINVAL);
    assert_int_equal(gr__parse_hostport("h:8x", 4, host, sizeof host, &port), GR_EINVAL);
    struct sockaddr_storage ss;
    assert_int_equal(gr__make_addr("127.0.0.1", 1, &ss), 0);
    assert_int_equal(gr__make_addr("example.com", 1, &ss), GR_EINVAL);
}

static void test_dlq(void **st) {
    gr__dlq_t q = {0};
    gr__dlq_node_t a = {0}, b = {0}, c = {0};
    assert_int_equal(gr__dlq_insert(&q, &a, 100), 1);
    assert_int_equal(gr__dlq_insert(&q, &b, 300), 0);
    assert_int_equal(gr__dlq_insert(&q, &c, 50), 1); /* out of order goes first */
    assert_int_equal(gr__dlq_next_in(&q, 0), 50);
    assert_ptr_equal(gr__dlq_pop_expired(&q, 60), &c);
    assert_null(gr__dlq_pop_expired(&q, 60));
    gr__dlq_remove(&q, &b);
    gr__dlq_remove(&q, &b); /* removing twice is harmless */
    assert_ptr_equal(gr__dlq_pop_expired(&q, 1000), &a);
    assert_int_equal(gr__dlq_next_in(&q, 0), UINT64_MAX);
}

static void test_escape_and_names(void **st) {
    char out[16];
    gr__escape("a\0\"b", 4, out, sizeof out);
    assert_string_equal(out, "a\\x00\\x22b");
    gr__escape("0123456789abcdefghij", 20, out, sizeof out);
    assert_string_equal(out, "0123456789ab...");
    assert_int_equal(gr__valid_class_name("Counter"), 1);
    assert_int_equal(gr__valid_class_name("a/b"), 0);
    assert_int_equal(gr__valid_class_name(""), 0);
    assert_int_equal(gr__valid_class_name("has space"), 0);
}

static int fail_after = -1;
static void *counting_malloc(size_t n) {
    return fail_after == 0 ? NULL : (fail_after > 0 ? fail_after-- : 0, malloc(n));
}
static void *counting_realloc(void *p, size_t n) { return fail_after == 0 ? NULL : realloc(p, n); }
static void *counting_calloc(size_t n, size_t m) {
    return fail_after == 0 ? NULL : (fail_after > 0 ? fail_after-- : 0, calloc(n, m));
}

static void test_json_strings(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    /* Quotes, backslashes and control bytes escaped; UTF-8 kept; a stray
     * byte, an overlong form and a surrogate become U+FFFD. */
    const char in[] = "a\"b\\c\n\x01\x7f \xc3\xa9 \xe2\x86\x92 \xff \xc0\xaf \xed\xa0\x80 \xf0\x9f\x98\x80";
    assert_int_equal(gr__buf_json_str(&b, in, sizeof in - 1), 0);
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data, "\"a\\\"b\\\\c\\n\\u0001\\u007f \xc3\xa9 \xe2\x86\x92 \\ufffd "
                                        "\\ufffd\\ufffd \\ufffd\\ufffd\\ufffd \xf0\x9f\x98\x80\"");
    b.len = 0;
    assert_int_equal(gr__buf_json_str(&b, "x\0y\xe2\x86", 5),
                     0); /* NUL inside, truncated sequence at the end */
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    assert_string_equal((char *)b.data, "\"x\\u0000y\\ufffd\\ufffd\"");
    gr__buf_free(&b);
    /* The same rule into a fixed buffer (log lines), cut at a whole character. */
    char out[16];
    assert_int_equal(gr__json_escape(out, sizeof out, "a\"\x01\xc3\xa9", 5), 11);
    assert_string_equal(out, "a\\\"\\u0001\xc3\xa9");
    assert_int_equal(gr__json_escape(out, 8, "ab\x01", 3), 2); /* \u0001 does not fit in the rest */
    assert_string_equal(out, "ab");
    assert_int_equal(gr__json_escape(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
}

static void test_allocator_hook(void **st) {
    assert_int_equal(gr_replace_allocator(NULL, realloc, calloc, free), GR_EINVAL);
    assert_int_equal(gr_replace_allocator(counting_malloc, counting_realloc, counting_calloc, free), 0);
    fail_after = 0;
    assert_null(gr__malloc(10));
    gr__buf_t b;
    gr__buf_init(&b);
    assert_int_equal(gr__buf_append(&b, "x", 1), GR_ENOMEM);
    fail_after = -1;
    assert_int_equal(gr__buf_append(&b, "x", 1), 0);
    gr__buf_free(&b);
    gr_replace_allocator(malloc, realloc, calloc, free);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_dlq),          cmocka_unit_test(test_escape_and_names),
        cmocka_unit_test(test_json_strings), cmocka_unit_test(test_allocator_hook),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
