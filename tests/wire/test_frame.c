/* tests/wire/test_frame.c - the frame codec: round trips, and rejection of
 * truncated, oversized and malformed input without reading out of bounds. */
#include "support.h"
#include "wire/frame.h"

static void test_request_round_trip(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    const uint8_t key[] = {'k', 0, '"', 0xff};
    assert_int_equal(
        gr__frame_encode_request(&b, GR__FRAME_REQUEST, 42, 1500, "Counter", key, sizeof key, "incr", "7", 1),
        0);
    gr__frame_t f;
    size_t used = 0;
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), 0);
    assert_int_equal(used, b.len);
    assert_int_equal(f.type, GR__FRAME_REQUEST);
    assert_int_equal(f.id, 42);
    assert_int_equal(f.u.request.timeout_ms, 1500);
    assert_int_equal(f.u.request.class_len, 7);
    assert_memory_equal(f.u.request.class_name, "Counter", 7);
    assert_int_equal(f.u.request.key_len, sizeof key);
    assert_memory_equal(f.u.request.key, key, sizeof key);
    assert_int_equal(f.u.request.method_len, 4);
    assert_memory_equal(f.u.request.method, "incr", 4);
    assert_int_equal(f.u.request.arg_len, 1);
    gr__buf_free(&b);
}

/* A request carrying a call chain sets the CHAIN flag; the chain survives
 * the round trip; a flagged frame whose chain is empty, truncated or
 * followed by stray bytes is malformed. */
static void test_request_chain(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    const uint8_t chain[] = {0, 3, 'A', 0, 'a', 0, 3, 'B', 0, 'b'};
    assert_int_equal(gr__frame_encode_request_chain(&b, GR__FRAME_REQUEST, 7, 100, "Counter", "k", 1, "get",
                                                    "x", 1, chain, sizeof chain),
                     0);
    b.data[7] |= 2; /* two hops: the flags share the byte */
    gr__frame_t f;
    size_t used = 0;
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), 0);
    assert_int_equal(used, b.len);
    assert_int_equal(f.flags & GR__FRAME_F_HOPS, 2);
    assert_true(f.flags & GR__FRAME_F_CHAIN);
    assert_int_equal(f.u.request.arg_len, 1);
    assert_int_equal(f.u.request.chain_len, sizeof chain);
    assert_memory_equal(f.u.request.chain, chain, sizeof chain);
    /* Without a chain the flag stays clear. */
    gr__buf_t p;
    gr__buf_init(&p);
    assert_int_equal(
        gr__frame_encode_request(&p, GR__FRAME_REQUEST, 8, 100, "Counter", "k", 1, "get", NULL, 0), 0);
    assert_int_equal(gr__frame_decode(p.data, p.len, GR_FRAME_MAX_DEFAULT, &f, &used), 0);
    assert_false(f.flags & GR__FRAME_F_CHAIN);
    assert_int_equal(f.u.request.chain_len, 0);
    /* The flag on a frame without the chain field: malformed. */
    p.data[7] |= GR__FRAME_F_CHAIN;
    assert_int_equal(gr__frame_decode(p.data, p.len, GR_FRAME_MAX_DEFAULT, &f, &used), GR_EPROTO);
    /* A chain length larger than the bytes present: malformed. */
    size_t at = b.len - sizeof chain - 2;
    b.data[at] = 0;
    b.data[at + 1] = (uint8_t)(sizeof chain + 1);
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), GR_EPROTO);
    /* Zero-length chain: malformed. */
    b.data[at + 1] = 0;
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), GR_EPROTO);
    /* Over the limit: refused by the encoder. */
    static uint8_t big[GR__CHAIN_MAX + 1];
    b.len = 0;
    assert_int_equal(gr__frame_encode_request_chain(&b, GR__FRAME_REQUEST, 9, 100, "C", "k", 1, "m", NULL, 0,
                                                    big, sizeof big),
                     GR_ETOOBIG);
    gr__buf_free(&b);
    gr__buf_free(&p);
}

/* An idempotency key sets the IDEM flag and follows the chain; 1..128
 * bytes; a flagged frame with a key of 0 bytes, over 128, or cut short is
 * malformed. */
static void test_request_idem(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    const uint8_t chain[] = {0, 3, 'A', 0, 'a'};
    assert_int_equal(gr__frame_encode_request_full(&b, GR__FRAME_REQUEST, 9, 100, "Counter", "k", 1, "incr",
                                                   "x", 1, chain, sizeof chain, "op-42", 5),
                     0);
    gr__frame_t f;
    size_t used;
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), 0);
    assert_int_equal(used, b.len);
    assert_true(f.flags & GR__FRAME_F_IDEM);
    assert_true(f.flags & GR__FRAME_F_CHAIN);
    assert_int_equal(f.u.request.idem_len, 5);
    assert_memory_equal(f.u.request.idem, "op-42", 5);
    assert_int_equal(f.u.request.chain_len, sizeof chain);
    assert_int_equal(f.u.request.arg_len, 1);
    /* A key of 0 bytes in a flagged frame: rewrite its length byte. */
    b.data[b.len - 6] = 0;
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), GR_EPROTO);
    b.data[b.len - 6] = 200; /* over 128 (and past the end) */
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), GR_EPROTO);
    b.len = 0;
    static char big[GR_IDEM_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    assert_int_equal(gr__frame_encode_request_full(&b, GR__FRAME_REQUEST, 9, 100, "Counter", "k", 1, "incr",
                                                   NULL, 0, NULL, 0, big, GR_IDEM_KEY_MAX),
                     0);
    assert_int_equal(gr__frame_decode(b.data, b.len, GR_FRAME_MAX_DEFAULT, &f, &used), 0);
    assert_int_equal(f.u.request.idem_len, GR_IDEM_KEY_MAX);
    b.len = 0;
    assert_int_equal(gr__frame_encode_request_full(&b, GR__FRAME_REQUEST, 9, 100, "Counter", "k", 1, "incr",
                                                   NULL, 0, NULL, 0, big, GR_IDEM_KEY_MAX + 1),
                     GR_ETOOBIG);
    assert_int_equal(b.len, 0);
    gr__buf_free(&b);
}

static void test_all_types_round_trip(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    assert_int_equal(gr__frame_encode_hello(&b, 1, GR__ROLE_CLIENT, "prod", "s3cret", 6, "cli"), 0);
    assert_int_equal(gr__frame_encode_hello_ok(&b, 1, "silo-a"), 0);
    assert_int_equal(gr__frame_encode_response(&b, GR__FRAME_RESPONSE, 9, GR_EAPP, "boom", 4), 0);
    assert_int_equal(gr__frame_encode_empty(&b, GR__FRAME_PING, 3), 0);
    assert_int_equal(gr__frame_encode_response(&b, GR__FRAME_GOAWAY, 0, GR_ESHUTDOWN, "", 0), 0);
    size_t off = 0, used;
    gr__frame_t f;
    assert_int_equal(gr__frame_decode(b.data + off, b.len - off, 1024, &f, &used), 0);
    assert_int_equal(f.type, GR__FRAME_HELLO);
    assert_int_equal(f.u.hello.version, 1);
    assert_int_equal(f.u.hello.role, GR__ROLE_CLIENT);
    assert_memory_equal(f.u.hello.cluster, "prod", 4);
    assert_memory_equal(f.u.hello.secret, "s3cret", 6);
    assert_memory_equal(f.u.hello.name, "cli", 3);
    off += used;
    assert_int_equal(gr__frame_decode(b.data + off, b.len - off, 1024, &f, &used), 0);
    assert_int_equal(f.type, GR__FRAME_HELLO_OK);
    assert_memory_equal(f.u.hello_ok.name, "silo-a", 6);
    off += used;
    assert_int_equal(gr__frame_decode(b.data + off, b.len - off, 1024, &f, &used), 0);
    assert_int_equal(f.type, GR__FRAME_RESPONSE);
    assert_int_equal(f.u.response.status, GR_EAPP);
    assert_int_equal(f.u.response.body_len, 4);
    off += used;
    assert_int_equal(gr__frame_decode(b.data + off, b.len - off, 1024, &f, &used), 0);
    assert_int_equal(f.type, GR__FRAME_PING);
    assert_int_equal(f.id, 3);
    off += used;
    assert_int_equal(gr__frame_decode(b.data + off, b.len - off, 1024, &f, &used), 0);
    assert_int_equal(f.type, GR__FRAME_GOAWAY);
    assert_int_equal(f.u.response.status, GR_ESHUTDOWN);
    off += used;
    assert_int_equal(off, b.len);
    gr__buf_free(&b);
}

/* Every strict prefix of a valid frame asks for more bytes. */
static void test_truncated_needs_more(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", "key", 3, "m", "arg", 3);
    for (size_t n = 0; n < b.len; n++) {
        gr__frame_t f;
        size_t used = 0;
        /* Exact-size copies so ASan catches any read past the prefix. */
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.data, n);
        assert_int_equal(gr__frame_decode(copy, n, 1024, &f, &used), GR__EAGAIN);
        free(copy);
    }
    gr__buf_free(&b);
}

static void test_oversized_rejected_early(void **st) {
    uint8_t hdr[6];
    gr__put_u32(hdr, 0x7fffffff); /* announces 2 GB */
    gr__put_u16(hdr + 4, GR_FRAME_MAGIC);
    gr__frame_t f;
    size_t used;
    /* Refused from the header alone, before any body arrives. */
    assert_int_equal(gr__frame_decode(hdr, 4, 1024, &f, &used), GR_ETOOBIG);
    gr__buf_t b;
    gr__buf_init(&b);
    uint8_t big[2048] = {0};
    gr__frame_encode_response(&b, GR__FRAME_RESPONSE, 1, 0, big, sizeof big);
    assert_int_equal(gr__frame_decode(b.data, b.len, 1024, &f, &used), GR_ETOOBIG);
    assert_int_equal(gr__frame_decode(b.data, b.len, 4096, &f, &used), 0);
    gr__buf_free(&b);
}

static void test_malformed_rejected(void **st) {
    gr__frame_t f;
    size_t used;
    /* Wrong magic: an HTTP client, say. */
    const char *http = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(gr__frame_decode((const uint8_t *)http, strlen(http), 1 << 20, &f, &used), GR_EPROTO);
    /* Length smaller than the header. */
    uint8_t small[16] = {0, 0, 0, 3, 0x47, 0x52};
    assert_int_equal(gr__frame_decode(small, sizeof small, 1024, &f, &used), GR_EPROTO);
    /* Unknown type. */
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_empty(&b, GR__FRAME_PING, 1);
    b.data[6] = 99;
    assert_int_equal(gr__frame_decode(b.data, b.len, 1024, &f, &used), GR_EPROTO);
    /* Inner lengths that overrun the frame. */
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", "k", 1, "m", "a", 1);
    gr__put_u32(b.data + GR_FRAME_HEADER_SIZE + 8, 1000); /* key_len */
    assert_int_equal(gr__frame_decode(b.data, b.len, 1 << 20, &f, &used), GR_EPROTO);
    /* Trailing bytes inside the frame. */
    b.len = 0;
    gr__frame_encode_empty(&b, GR__FRAME_PING, 1);
    gr__buf_append(&b, "x", 1);
    gr__put_u32(b.data, gr__get_u32(b.data) + 1);
    assert_int_equal(gr__frame_decode(b.data, b.len, 1024, &f, &used), GR_EPROTO);
    /* Key over GR_KEY_MAX. */
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", "k", 1, "m", "", 0);
    gr__put_u32(b.data + GR_FRAME_HEADER_SIZE + 8, GR_KEY_MAX + 1);
    assert_int_equal(gr__frame_decode(b.data, b.len, 1 << 20, &f, &used), GR_ETOOBIG);
    /* Empty class name. */
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", "k", 1, "m", "", 0);
    gr__put_u16(b.data + GR_FRAME_HEADER_SIZE + 4, 0);
    assert_int_equal(gr__frame_decode(b.data, b.len, 1 << 20, &f, &used), GR_ETOOBIG);
    /* Bad hello role. */
    b.len = 0;
    gr__frame_encode_hello(&b, 1, GR__ROLE_CLIENT, "c", "", 0, "n");
    b.data[GR_FRAME_HEADER_SIZE + 2] = 7;
    assert_int_equal(gr__frame_decode(b.data, b.len, 1024, &f, &used), GR_EPROTO);
    gr__buf_free(&b);
}

static void test_encoder_limits(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    static uint8_t key[GR_KEY_MAX + 1];
    assert_int_equal(
        gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", key, sizeof key, "m", NULL, 0),
        GR_ETOOBIG);
    assert_int_equal(gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "", key, 1, "m", NULL, 0),
                     GR_EINVAL);
    assert_int_equal(b.len, 0);
    assert_int_equal(
        gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "C", key, GR_KEY_MAX, "m", NULL, 0), 0);
    gr__buf_free(&b);
}

/* A cheap deterministic fuzz pass: random mutations of valid frames never
 * crash, never report consuming more than was given. ASan watches reads. */
static void test_mutations(void **st) {
    gr__buf_t b;
    gr__buf_init(&b);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 20000; round++) {
        b.len = 0;
        switch (round % 4) {
        case 0:
            gr__frame_encode_request(&b, GR__FRAME_REQUEST, round, 5, "Cls", "key", 3, "meth", "arg", 3);
            break;
        case 1:
            gr__frame_encode_hello(&b, 1, GR__ROLE_SILO, "clu", "sec", 3, "name");
            break;
        case 2:
            gr__frame_encode_response(&b, GR__FRAME_RESPONSE, round, 0, "body", 4);
            break;
        default:
            gr__frame_encode_hello_ok(&b, 1, "silo");
            break;
        }
        for (int m = 0; m < 3; m++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.data[x % b.len] = (uint8_t)(x >> 24);
        }
        size_t n = (size_t)(x >> 40) % (b.len + 1);
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.data, n);
        gr__frame_t f;
        size_t used = 0;
        int rc = gr__frame_decode(copy, n, 4096, &f, &used);
        if (rc == 0)
            assert_true(used <= n);
        else
            assert_true(rc == GR__EAGAIN || rc == GR_EPROTO || rc == GR_ETOOBIG);
        free(copy);
    }
    gr__buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_chain),
        cmocka_unit_test(test_request_idem),
        cmocka_unit_test(test_all_types_round_trip),
        cmocka_unit_test(test_truncated_needs_more),
        cmocka_unit_test(test_oversized_rejected_early),
        cmocka_unit_test(test_malformed_rejected),
        cmocka_unit_test(test_encoder_limits),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests_name("wire.frame", tests, NULL, NULL);
}
