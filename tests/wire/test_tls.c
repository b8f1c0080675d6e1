/* tests/wire/test_tls.c - the memory-BIO TLS engine, two ends pumped into
 * each other in memory: handshakes, data both ways at record and frame sizes,
 * and every refusal (unknown CA, wrong name, missing or rogue client
 * certificate, plaintext to a TLS port), with certificates made by
 * tests/support/make_certs.sh for this run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base.h"
#include "wire/tls.h"

static char dir[256];

static const char *path(const char *name) {
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static gr__tls_ctx_t *server_ctx(int mtls, const char *cert, const char *key, const char *ca) {
    gr__tls_ctx_opts_t o = {
        .server = 1, .cert = path(cert), .key = path(key), .ca = path(ca), .verify_peer = mtls};
    gr__tls_ctx_t *c = NULL;
    char err[300];
    int rc = gr__tls_ctx_new(&o, &c, err, sizeof err);
    if (rc) fail_msg("server ctx: %s", err);
    return c;
}

static gr__tls_ctx_t *client_ctx(const char *ca, const char *cert, const char *key) {
    gr__tls_ctx_opts_t o = {
        .server = 0, .cert = cert ? path(cert) : NULL, .key = key ? path(key) : NULL, .ca = path(ca)};
    gr__tls_ctx_t *c = NULL;
    char err[300];
    int rc = gr__tls_ctx_new(&o, &c, err, sizeof err);
    if (rc) fail_msg("client ctx: %s", err);
    return c;
}

/* Move ciphertext both ways until neither side has any; the first failure
 * (and which side had it) is returned. Plaintext lands in *_plain. */
typedef struct {
    gr__tls_t *s, *c;
    gr__buf_t s_plain, c_plain;
    int s_rc, c_rc;
} pair_t;

static void pump(pair_t *p) {
    for (int round = 0; round < 100; round++) {
        int moved = 0;
        gr__buf_t b;
        gr__buf_init(&b);
        assert_int_equal(gr__tls_take(p->c, &b), 0);
        if (b.len && !p->s_rc) {
            moved = 1;
            p->s_rc = gr__tls_feed(p->s, b.data, b.len, &p->s_plain);
        }
        b.len = 0;
        assert_int_equal(gr__tls_take(p->s, &b), 0);
        if (b.len && !p->c_rc) {
            moved = 1;
            p->c_rc = gr__tls_feed(p->c, b.data, b.len, &p->c_plain);
        }
        gr__buf_free(&b);
        if (!moved) return;
    }
    fail_msg("the handshake did not settle in 100 rounds");
}

static void pair_open(pair_t *p, gr__tls_ctx_t *sc, gr__tls_ctx_t *cc, const char *name) {
    memset(p, 0, sizeof *p);
    assert_int_equal(gr__tls_new(sc, NULL, &p->s), 0);
    assert_int_equal(gr__tls_new(cc, name, &p->c), 0);
    pump(p);
}

static void pair_close(pair_t *p) {
    gr__tls_free(p->s);
    gr__tls_free(p->c);
    gr__buf_free(&p->s_plain);
    gr__buf_free(&p->c_plain);
}

static void test_round_trips(void **st) {
    gr__tls_ctx_t *sc = server_ctx(1, "silo.crt", "silo.key", "ca.crt");
    gr__tls_ctx_t *cc = client_ctx("ca.crt", "client.crt", "client.key");
    pair_t p;
    /* Written before the handshake: held, then sent once it completes. */
    memset(&p, 0, sizeof p);
    assert_int_equal(gr__tls_new(sc, NULL, &p.s), 0);
    assert_int_equal(gr__tls_new(cc, "127.0.0.1", &p.c), 0);
    assert_int_equal(gr__tls_write(p.c, (const uint8_t *)"hello", 5), 0);
    pump(&p);
    assert_int_equal(p.s_rc, 0);
    assert_int_equal(p.c_rc, 0);
    assert_true(gr__tls_established(p.s) && gr__tls_established(p.c));
    assert_int_equal(p.s_plain.len, 5);
    assert_memory_equal(p.s_plain.data, "hello", 5);
    /* 1 byte, one record (16 KiB), a record and one byte, a full frame (1 MiB + 64 KiB). */
    static const size_t sizes[] = {1, 16384, 16385, 1114112};
    static uint8_t big[1114112];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        p.s_plain.len = p.c_plain.len = 0;
        assert_int_equal(gr__tls_write(p.c, big, sizes[k]), 0);
        assert_int_equal(gr__tls_write(p.s, big, sizes[k]), 0);
        pump(&p);
        assert_int_equal(p.s_rc, 0);
        assert_int_equal(p.c_rc, 0);
        assert_int_equal(p.s_plain.len, sizes[k]);
        assert_int_equal(p.c_plain.len, sizes[k]);
        assert_memory_equal(p.s_plain.data, big, sizes[k]);
        assert_memory_equal(p.c_plain.data, big, sizes[k]);
    }
    pair_close(&p);
    /* By DNS name too (and SNI). */
    pair_open(&p, sc, cc, "granary-silo");
    assert_int_equal(p.c_rc, 0);
    assert_true(gr__tls_established(p.s));
    pair_close(&p);
    assert_true(gr__tls_ctx_cert_expiry_s(sc) > 29 * 86400);
    gr__tls_ctx_unref(sc);
    gr__tls_ctx_unref(cc);
}

static void test_refusals(void **st) {
    gr__tls_ctx_t *sc = server_ctx(0, "silo.crt", "silo.key", "ca.crt");
    gr__tls_ctx_t *msc = server_ctx(1, "silo.crt", "silo.key", "ca.crt");
    gr__tls_ctx_t *cc = client_ctx("ca.crt", "client.crt", "client.key");
    gr__tls_ctx_t *nocert = client_ctx("ca.crt", NULL, NULL);
    gr__tls_ctx_t *rogue = client_ctx("ca.crt", "rogue-client.crt", "rogue-client.key");
    gr__tls_ctx_t *other_ca = client_ctx("ca2.crt", NULL, NULL);
    pair_t p;
    /* The silo's certificate is not signed by the CA the client trusts. */
    pair_open(&p, sc, other_ca, "127.0.0.1");
    assert_int_equal(p.c_rc, GR_EAUTH);
    assert_non_null(strstr(gr__tls_error(p.c), "certificate refused"));
    pair_close(&p);
    /* The name is not in its certificate. */
    pair_open(&p, sc, cc, "10.9.9.9");
    assert_int_equal(p.c_rc, GR_EAUTH);
    pair_close(&p);
    pair_open(&p, sc, cc, "other-name");
    assert_int_equal(p.c_rc, GR_EAUTH);
    assert_non_null(strstr(gr__tls_error(p.c), "hostname mismatch"));
    pair_close(&p);
    /* Without mutual TLS a client needs no certificate. */
    pair_open(&p, sc, nocert, "127.0.0.1");
    assert_int_equal(p.c_rc, 0);
    assert_true(gr__tls_established(p.s));
    pair_close(&p);
    /* With it: none, or one from a CA the silo does not trust, is refused. */
    pair_open(&p, msc, nocert, "127.0.0.1");
    assert_int_equal(p.s_rc, GR_EAUTH);
    assert_false(gr__tls_established(p.s));
    pair_close(&p);
    pair_open(&p, msc, rogue, "127.0.0.1");
    assert_int_equal(p.s_rc, GR_EAUTH);
    assert_non_null(strstr(gr__tls_error(p.s), "certificate"));
    pair_close(&p);
    pair_open(&p, msc, cc, "127.0.0.1");
    assert_int_equal(p.s_rc, 0);
    assert_true(gr__tls_established(p.s));
    pair_close(&p);
    /* Plaintext (a HELLO frame) at a TLS port. */
    gr__tls_t *s;
    gr__buf_t plain;
    gr__buf_init(&plain);
    assert_int_equal(gr__tls_new(sc, NULL, &s), 0);
    static const uint8_t hello[] = {0, 0, 0, 40, 'G', 'R', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(gr__tls_feed(s, hello, sizeof hello, &plain), GR_EAUTH);
    assert_int_equal(plain.len, 0);
    assert_int_equal(gr__tls_feed(s, hello, sizeof hello, &plain), GR_ECONN); /* failed for good */
    gr__tls_free(s);
    gr__buf_free(&plain);
    gr__tls_ctx_unref(sc);
    gr__tls_ctx_unref(msc);
    gr__tls_ctx_unref(cc);
    gr__tls_ctx_unref(nocert);
    gr__tls_ctx_unref(rogue);
    gr__tls_ctx_unref(other_ca);
}

/* Bad files are a configuration error that names the file; a connection
 * outlives the last reference to its configuration (a reload). */
static void test_config_errors_and_refs(void **st) {
    char err[300];
    gr__tls_ctx_t *c = NULL;
    gr__tls_ctx_opts_t o = {.server = 1, .cert = path("missing.crt"), .key = path("silo.key")};
    assert_int_equal(gr__tls_ctx_new(&o, &c, err, sizeof err), GR_ECONFIG);
    assert_non_null(strstr(err, "missing.crt"));
    o.cert = path("silo.crt");
    o.key = path("client.key");
    assert_int_equal(gr__tls_ctx_new(&o, &c, err, sizeof err), GR_ECONFIG);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "client.key"));
    o.key = path("silo.key");
    o.verify_peer = 1;
    assert_int_equal(gr__tls_ctx_new(&o, &c, err, sizeof err), GR_ECONFIG);
    assert_non_null(strstr(err, "--tls-ca"));
    o.key = NULL;
    o.verify_peer = 0;
    assert_int_equal(gr__tls_ctx_new(&o, &c, err, sizeof err), GR_ECONFIG);

    gr__tls_ctx_t *sc = server_ctx(0, "silo.crt", "silo.key", "ca.crt");
    gr__tls_ctx_t *cc = client_ctx("ca.crt", NULL, NULL);
    pair_t p;
    pair_open(&p, sc, cc, "127.0.0.1");
    gr__tls_ctx_unref(sc); /* replaced by a reload: the live connection keeps it */
    gr__tls_ctx_unref(cc);
    assert_int_equal(gr__tls_write(p.c, (const uint8_t *)"after", 5), 0);
    pump(&p);
    assert_int_equal(p.s_plain.len, 5);
    pair_close(&p);
}

int main(void) {
    const char *src = getenv("GRANARY_SOURCE_DIR");
    snprintf(dir, sizeof dir, "/tmp/granary-tls-test.XXXXXX");
    if (!src || !mkdtemp(dir)) {
        fprintf(stderr, "test_tls: GRANARY_SOURCE_DIR unset or no temp dir\n");
        return 1;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/support/make_certs.sh' '%s'", src, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls: making certificates failed (%s)\n", cmd);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_config_errors_and_refs),
    };
    int rc = cmocka_run_group_tests_name("wire.tls", tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "test_tls: could not remove %s\n", dir);
    return rc;
}
