/* src/wire/tls.h - TLS for the silo's and the client's streams, without a
 * blocking call or a thread: OpenSSL works on memory BIOs, and the caller
 * carries ciphertext between its libuv socket and the engine. The framed
 * protocol (HELLO first) runs unchanged inside; see docs/security.md.
 *
 * A connection's life: gr__tls_new(); every chunk read from the socket goes
 * to gr__tls_feed(), which appends the plaintext it yields; plaintext to send
 * goes to gr__tls_write() (held until the handshake is done); after either,
 * gr__tls_take() hands over the ciphertext to write to the socket. */
#ifndef GR_WIRE_TLS_H
#define GR_WIRE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* A configuration shared by many connections (an SSL_CTX): reference
 * counted, so a reload can replace it while connections made with the old
 * one live on. */
typedef struct gr__tls_ctx gr__tls_ctx_t;

typedef struct gr__tls_ctx_opts {
    int server;       /* 1: accepts connections (needs cert and key); 0: dials */
    const char *cert; /* PEM certificate chain; a dialer presents it for mutual TLS (may be NULL) */
    const char *key;  /* PEM private key of cert */
    const char *ca;   /* PEM CA bundle peers are verified against; a dialer without one uses the
                         system's trust store; a server needs it for verify_peer */
    int verify_peer;  /* server: require a client certificate signed by ca (mutual TLS) */
} gr__tls_ctx_opts_t;

/* Load a configuration. Returns 0, GR_ECONFIG (unreadable or mismatched
 * files: the reason, with OpenSSL's, in err) or GR_ENOMEM. *out holds one
 * reference. */
int gr__tls_ctx_new(const gr__tls_ctx_opts_t *o, gr__tls_ctx_t **out, char *err, size_t err_size);
void gr__tls_ctx_ref(gr__tls_ctx_t *ctx);
/* Drop a reference (NULL is ignored); the last one frees. */
void gr__tls_ctx_unref(gr__tls_ctx_t *ctx);
/* Seconds until the certificate of ctx expires (negative: expired), or
 * INT64_MIN without a certificate. */
int64_t gr__tls_ctx_cert_expiry_s(const gr__tls_ctx_t *ctx);

typedef struct gr__tls gr__tls_t;

/* A connection under ctx (which it references). A dialer passes the name it
 * expects in the peer's certificate: an IP address is matched against the
 * IP SANs, anything else against the DNS names (and sent as SNI). Returns 0
 * or GR_ENOMEM. A dialer's first flight is ready in gr__tls_take() at once. */
int gr__tls_new(gr__tls_ctx_t *ctx, const char *peer_name, gr__tls_t **out);
void gr__tls_free(gr__tls_t *t);

/* Ciphertext read from the socket: plaintext is appended to plain (and the
 * engine may have output for gr__tls_take(), even with no plaintext).
 * Returns 0; GR_EAUTH when the handshake failed (a certificate refused, no
 * TLS from the peer: gr__tls_error() says why); GR_ECONN when the peer
 * closed TLS or broke the record layer; GR_ENOMEM. */
int gr__tls_feed(gr__tls_t *t, const uint8_t *cipher, size_t n, gr__buf_t *plain);

/* Plaintext to send (copied). Returns 0, GR_ENOMEM, or GR_ECONN after a
 * failure of the connection. */
int gr__tls_write(gr__tls_t *t, const uint8_t *plain, size_t n);

/* Append the ciphertext waiting for the socket to out. Returns 0 or GR_ENOMEM. */
int gr__tls_take(gr__tls_t *t, gr__buf_t *out);
/* Bytes of ciphertext waiting for gr__tls_take(). */
size_t gr__tls_pending(const gr__tls_t *t);
/* 1 once the handshake is complete. */
int gr__tls_established(const gr__tls_t *t);
/* Why the last call failed ("" if none). Lives as long as t. */
const char *gr__tls_error(const gr__tls_t *t);

#endif
