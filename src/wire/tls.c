/* src/wire/tls.c - OpenSSL on memory BIOs (see tls.h). Nothing here touches a
 * socket: the engine reads what was fed to its input BIO and writes into its
 * output BIO, and the caller moves the bytes. */
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "wire/tls.h"

struct gr__tls_ctx {
    SSL_CTX *ssl;
    int refs;
    int server;
    int64_t not_after; /* the certificate's expiry (unix seconds), or INT64_MIN */
};

struct gr__tls {
    gr__tls_ctx_t *ctx;
    SSL *ssl;
    BIO *in, *out;  /* ours to write into / read from; the SSL owns both */
    gr__buf_t held; /* plaintext written before the handshake completed */
    int established;
    int failed;
    char error[256];
};

/* OpenSSL's own reason for the last failure, after our words. */
static void gr__tls_why(char *out, size_t size, const char *what, const char *path) {
    unsigned long e = ERR_get_error();
    char reason[160] = "";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(out, size, "%s%s%s%s%s", what, path ? " " : "", path ? path : "", e ? ": " : "", reason);
}

static int64_t gr__cert_not_after(SSL_CTX *ssl) {
    X509 *x = SSL_CTX_get0_certificate(ssl);
    if (!x) return INT64_MIN;
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1) return INT64_MIN;
    return (int64_t)timegm(&tm);
}

int gr__tls_ctx_new(const gr__tls_ctx_opts_t *o, gr__tls_ctx_t **out, char *err, size_t err_size) {
    char dummy[8];
    if (!err || !err_size) err = dummy, err_size = sizeof dummy;
    err[0] = '\0';
    if (o->server && (!o->cert || !o->key)) {
        snprintf(err, err_size, "TLS needs both a certificate and its key (--tls-cert and --tls-key)");
        return GR_ECONFIG;
    }
    if (!o->cert != !o->key) {
        snprintf(err, err_size, "a TLS client certificate needs its key, and a key its certificate");
        return GR_ECONFIG;
    }
    if (o->server && o->verify_peer && !o->ca) {
        snprintf(err, err_size, "verifying client certificates needs the CA that signs them (--tls-ca)");
        return GR_ECONFIG;
    }
    ERR_clear_error();
    SSL_CTX *ssl = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
    if (!ssl) {
        gr__tls_why(err, err_size, "cannot create a TLS context", NULL);
        return GR_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    /* AES-128-GCM first: as strong as the connection needs, and cheaper per
     * record than AES-256 (calls are many small records). */
    SSL_CTX_set_ciphersuites(ssl,
                             "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    /* Memory BIOs accept every byte, so a write never stops half-way; the
     * engine may still move its buffer between calls. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int rc = 0;
    if (o->cert && SSL_CTX_use_certificate_chain_file(ssl, o->cert) != 1) {
        gr__tls_why(err, err_size, "cannot load the TLS certificate", o->cert);
        rc = GR_ECONFIG;
    } else if (o->key && SSL_CTX_use_PrivateKey_file(ssl, o->key, SSL_FILETYPE_PEM) != 1) {
        gr__tls_why(err, err_size, "cannot load the TLS key", o->key);
        rc = GR_ECONFIG;
    } else if (o->cert && SSL_CTX_check_private_key(ssl) != 1) {
        gr__tls_why(err, err_size, "the TLS key does not match the certificate", o->key);
        rc = GR_ECONFIG;
    } else if (o->ca && SSL_CTX_load_verify_locations(ssl, o->ca, NULL) != 1) {
        gr__tls_why(err, err_size, "cannot load the TLS CA bundle", o->ca);
        rc = GR_ECONFIG;
    } else if (!o->ca && !o->server && SSL_CTX_set_default_verify_paths(ssl) != 1) {
        gr__tls_why(err, err_size, "cannot load the system's trust store", NULL);
        rc = GR_ECONFIG;
    }
    if (rc == 0 && o->server) {
        /* No session tickets: every connection is long-lived, and a ticket
         * key would be one more secret to rotate. */
        SSL_CTX_set_num_tickets(ssl, 0);
        SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
        if (o->verify_peer) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
            if (names) SSL_CTX_set_client_CA_list(ssl, names);
            SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    } else if (rc == 0) {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    }
    gr__tls_ctx_t *c = rc == 0 ? gr__calloc(1, sizeof *c) : NULL;
    if (!c) {
        SSL_CTX_free(ssl);
        ERR_clear_error();
        return rc ? rc : GR_ENOMEM;
    }
    c->ssl = ssl;
    c->refs = 1;
    c->server = o->server;
    c->not_after = gr__cert_not_after(ssl);
    ERR_clear_error();
    *out = c;
    return 0;
}

void gr__tls_ctx_ref(gr__tls_ctx_t *ctx) { ctx->refs++; }

void gr__tls_ctx_unref(gr__tls_ctx_t *ctx) {
    if (!ctx || --ctx->refs > 0) return;
    SSL_CTX_free(ctx->ssl);
    gr__free(ctx);
}

int64_t gr__tls_ctx_cert_expiry_s(const gr__tls_ctx_t *ctx) {
    if (ctx->not_after == INT64_MIN) return INT64_MIN;
    return ctx->not_after - (int64_t)time(NULL);
}

int gr__tls_new(gr__tls_ctx_t *ctx, const char *peer_name, gr__tls_t **out) {
    gr__tls_t *t = gr__calloc(1, sizeof *t);
    if (!t) return GR_ENOMEM;
    t->ssl = SSL_new(ctx->ssl);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out) goto oom;
    BIO_set_mem_eof_return(t->in, -1); /* an empty input BIO means "more later", not end of stream */
    SSL_set_bio(t->ssl, t->in, t->out);
    if (ctx->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        unsigned char ip[16];
        if (peer_name &&
            (inet_pton(AF_INET, peer_name, ip) == 1 || inet_pton(AF_INET6, peer_name, ip) == 1)) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), peer_name) != 1) goto oom_bios_owned;
        } else if (peer_name) {
            if (SSL_set1_host(t->ssl, peer_name) != 1 || SSL_set_tlsext_host_name(t->ssl, peer_name) != 1)
                goto oom_bios_owned;
        }
        SSL_set_connect_state(t->ssl);
        SSL_do_handshake(t->ssl); /* writes the ClientHello into `out` */
    }
    gr__tls_ctx_ref(ctx);
    t->ctx = ctx;
    gr__buf_init(&t->held);
    ERR_clear_error();
    *out = t;
    return 0;
oom:
    BIO_free(t->in);
    BIO_free(t->out);
    if (t->ssl) SSL_free(t->ssl);
    ERR_clear_error();
    gr__free(t);
    return GR_ENOMEM;
oom_bios_owned:
    SSL_free(t->ssl); /* frees the BIOs it was given */
    ERR_clear_error();
    gr__free(t);
    return GR_ENOMEM;
}

void gr__tls_free(gr__tls_t *t) {
    if (!t) return;
    SSL_free(t->ssl);
    gr__buf_free(&t->held);
    gr__tls_ctx_unref(t->ctx);
    gr__free(t);
}

/* Record why the connection failed, in words an operator can act on. */
static int gr__tls_fail(gr__tls_t *t, int ssl_err, const char *when) {
    t->failed = 1;
    long v = SSL_get_verify_result(t->ssl);
    unsigned long e = ERR_peek_last_error();
    if (v != X509_V_OK) {
        snprintf(t->error, sizeof t->error, "TLS %s failed: certificate refused: %s", when,
                 X509_verify_cert_error_string(v));
    } else if (e) {
        char reason[160];
        ERR_error_string_n(e, reason, sizeof reason);
        int plain =
            !t->established && (strstr(reason, "wrong version number") || strstr(reason, "http request"));
        snprintf(t->error, sizeof t->error, "TLS %s failed: %s%s", when, reason,
                 plain ? " (the peer does not speak TLS: a plaintext client?)" : "");
    } else {
        snprintf(t->error, sizeof t->error, "TLS %s failed (SSL error %d)", when, ssl_err);
    }
    ERR_clear_error();
    return t->established ? GR_ECONN : GR_EAUTH;
}

static int gr__tls_write_now(gr__tls_t *t, const uint8_t *p, size_t n) {
    ERR_clear_error();
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        int w = SSL_write(t->ssl, p, chunk);
        if (w <= 0) return gr__tls_fail(t, SSL_get_error(t->ssl, w), "write");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gr__tls_feed(gr__tls_t *t, const uint8_t *cipher, size_t n, gr__buf_t *plain) {
    if (t->failed) return GR_ECONN;
    /* SSL_get_error() reads the thread's error queue: anything left there
     * (libpq uses OpenSSL on this thread too) would turn a want-read into a
     * failure. */
    ERR_clear_error();
    if (n > 0 && BIO_write(t->in, cipher, (int)n) != (int)n) {
        ERR_clear_error();
        return GR_ENOMEM;
    }
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
            return gr__tls_fail(t, e, "handshake");
        }
        t->established = 1;
        if (t->held.len) {
            int rc = gr__tls_write_now(t, t->held.data, t->held.len);
            gr__buf_free(&t->held);
            if (rc) return rc;
        }
    }
    for (;;) {
        if (gr__buf_reserve(plain, 16384) != 0) return GR_ENOMEM;
        size_t room = plain->cap - plain->len;
        int r = SSL_read(t->ssl, plain->data + plain->len, room > INT_MAX ? INT_MAX : (int)room);
        if (r > 0) {
            plain->len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            t->failed = 1;
            snprintf(t->error, sizeof t->error, "peer closed the TLS session");
            return GR_ECONN;
        }
        /* A certificate refused after the client's handshake completed
         * (TLS 1.3 sends the server's verdict after Finished) lands here. */
        return gr__tls_fail(t, e, "read");
    }
}

int gr__tls_write(gr__tls_t *t, const uint8_t *plain, size_t n) {
    if (t->failed) return GR_ECONN;
    if (!t->established) return gr__buf_append(&t->held, plain, n);
    return gr__tls_write_now(t, plain, n);
}

size_t gr__tls_pending(const gr__tls_t *t) { return BIO_ctrl_pending(t->out); }

int gr__tls_take(gr__tls_t *t, gr__buf_t *out) {
    size_t n = BIO_ctrl_pending(t->out);
    while (n > 0) {
        if (gr__buf_reserve(out, n) != 0) return GR_ENOMEM;
        int r = BIO_read(t->out, out->data + out->len, n > INT_MAX ? INT_MAX : (int)n);
        if (r <= 0) break;
        out->len += (size_t)r;
        n = BIO_ctrl_pending(t->out);
    }
    return 0;
}

int gr__tls_established(const gr__tls_t *t) { return t->established; }

const char *gr__tls_error(const gr__tls_t *t) { return t->error; }
