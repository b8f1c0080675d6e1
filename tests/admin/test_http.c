/* tests/admin/test_http.c - the HTTP request parser (src/admin/http.c): what it
 * accepts, every way it refuses, and a fuzz of mutated and random requests
 * (run under ASan+UBSan in CI) checking that it never reads past its input
 * and that what it accepts adds up. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/base.h"
#include "admin/http.h"

static int parse(const char *s, gr__http_parsed_t *r) {
    return gr__http_parse((const uint8_t *)s, strlen(s), GR__HTTP_MAX_BODY, r);
}

static void test_accepts(void **st) {
    gr__http_parsed_t r;
    assert_int_equal(parse("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    assert_string_equal(r.method, "GET");
    assert_int_equal(r.target_len, 8);
    assert_memory_equal(r.target, "/healthz", 8);
    assert_int_equal(r.body_len, 0);
    assert_false(r.close);
    const char *post = "POST /v1/grains/Counter/a/incr HTTP/1.1\r\nContent-Length: 5\r\n"
                       "Connection: close\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
    assert_int_equal(parse(post, &r), 0);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "hello", 5);
    assert_true(r.close);
    /* The next pipelined request starts right after the body. */
    assert_memory_equal(post + r.head_len + r.body_len, "GET / HTTP/1.1", 14);
    assert_int_equal(parse("GET / HTTP/1.0\n\n", &r), 0); /* bare LF, HTTP/1.0 */
    assert_true(r.http10);
    assert_int_equal(parse("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", &r), 0);
    assert_true(r.chunked); /* the server refuses it with 411 */
}

static void test_needs_more(void **st) {
    gr__http_parsed_t r;
    assert_int_equal(parse("", &r), GR__EAGAIN);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n", &r), GR__EAGAIN);
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", &r), GR__EAGAIN);
}

static void test_refuses(void **st) {
    gr__http_parsed_t r;
    static const char *bad[] = {
        "GET\r\n\r\n",
        "GET /x\r\n\r\n",
        "GET x HTTP/1.1\r\n\r\n", /* target must start with / */
        "GET / HTTP/2.0\r\n\r\n",
        "G@T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",                               /* space before the colon */
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", /* two lengths */
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01"
        "b\r\n\r\n", /* control byte in a value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], &r) != GR_EPROTO) fail_msg("accepted or mis-refused: %s", bad[i]);
    char big[64];
    snprintf(big, sizeof big, "POST / HTTP/1.1\r\nContent-Length: %u\r\n\r\n", GR__HTTP_MAX_BODY + 1);
    assert_int_equal(parse(big, &r), GR_ETOOBIG);
    assert_true(r.head_len > 0); /* told from the head alone */
    static char head[GR__HTTP_MAX_HEAD + 64];
    memset(head, 'a', sizeof head - 1);
    memcpy(head, "GET / HTTP/1.1\r\nX: ", 19);
    assert_int_equal(parse(head, &r), GR_ETOOBIG);
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* 40,000 mutated and random inputs, each in an exactly-sized heap block so
 * ASan catches a read past the end. */
static void test_fuzz(void **st) {
    static const char *seeds[] = {
        "POST /v1/grains/Counter/a%00b/incr HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nIdempotency-Key: "
        "k\r\n\r\nabc",
        "GET /v1/grains/C/k HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        "GET /metrics HTTP/1.0\n\n",
    };
    int accepted = 0;
    for (int i = 0; i < 40000; i++) {
        const char *seed = seeds[i % 3];
        size_t n = strlen(seed);
        uint8_t tmp[512];
        memcpy(tmp, seed, n);
        if (i % 5 == 4) { /* random bytes */
            n = next() % sizeof tmp;
            for (size_t k = 0; k < n; k++)
                tmp[k] = (uint8_t)next();
        } else {
            int muts = 1 + (int)(next() % 4);
            for (int k = 0; k < muts && n; k++) {
                size_t at = next() % n;
                switch (next() % 3) {
                case 0:
                    tmp[at] = (uint8_t)next();
                    break;
                case 1: /* cut */
                    n = at;
                    break;
                default: /* a digit or CR/LF, the bytes framing depends on */
                    tmp[at] = (uint8_t) "0123456789\r\n:"[next() % 13];
                    break;
                }
            }
        }
        uint8_t *buf = malloc(n ? n : 1);
        memcpy(buf, tmp, n);
        gr__http_parsed_t r;
        int rc = gr__http_parse(buf, n, 64, &r);
        assert_true(rc == 0 || rc == GR__EAGAIN || rc == GR_ETOOBIG || rc == GR_EPROTO);
        if (rc == 0) {
            accepted++;
            assert_true(r.head_len <= n);
            if (!r.chunked) {
                assert_true(r.head_len + r.body_len <= n);
                assert_true(r.body_len <= 64);
            }
            assert_true((const uint8_t *)r.target >= buf &&
                        (const uint8_t *)r.target + r.target_len <= buf + n);
        }
        free(buf);
    }
    print_message("fuzz: %d of 40000 inputs parsed as whole requests\n", accepted);
    assert_true(accepted > 100);
}

static void test_pct_decode(void **st) {
    uint8_t out[16];
    assert_int_equal(gr__http_pct_decode("a%00b", 5, out, sizeof out), 3);
    assert_memory_equal(out, "a\0b", 3);
    assert_int_equal(gr__http_pct_decode("%2F%2f", 6, out, sizeof out), 2);
    assert_int_equal(gr__http_pct_decode("%G0", 3, out, sizeof out), -1);
    assert_int_equal(gr__http_pct_decode("%0", 2, out, sizeof out), -1);
    assert_int_equal(gr__http_pct_decode("abc", 3, out, 2), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts), cmocka_unit_test(test_needs_more), cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_fuzz),    cmocka_unit_test(test_pct_decode),
    };
    return cmocka_run_group_tests_name("silo.http", tests, NULL, NULL);
}
