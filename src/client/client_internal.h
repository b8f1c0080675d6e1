/* src/client/client_internal.h - what the silo uses of the client beyond the
 * public API: the same pipelined connection serves silo-to-silo links. */
#ifndef GR_CLIENT_INTERNAL_H
#define GR_CLIENT_INTERNAL_H

#include "granary/client.h"
#include "wire/tls.h"

/* Announce this role in the handshake (GR__ROLE_SILO for peer links). */
void gr__client_set_role(gr_client_t *c, uint8_t role);

/* Handshakes completed so far, and whether the current connection is past
 * its handshake. Requests are written only once it is: a call queued while
 * not ready that fails before the count moves was never sent, so it may be
 * sent elsewhere without the risk of running twice. */
/* Connect with TLS under ctx (a dialing configuration, referenced; NULL:
 * plaintext) from the next connection on, expecting server_name in the
 * silo's certificate (NULL: the host of the address). server_name is
 * borrowed and must outlive the client. Cannot fail, so a caller switching
 * many clients never ends half-way. */
void gr__client_set_tls(gr_client_t *c, gr__tls_ctx_t *ctx, const char *server_name);

uint64_t gr__client_handshakes(const gr_client_t *c);
/* Loop time (uv_now) the silo last refused our handshake (GR_EAUTH: the
 * cluster name or secret, or the certificate), 0 if it has not since the
 * last accepted one. */
uint64_t gr__client_refused_at(const gr_client_t *c);
int gr__client_ready(const gr_client_t *c);

/* gr_client_call() with a frame type (REQUEST or ONEWAY: then cb never
 * runs) and the header's flags byte (the forward hop count). */
int gr__client_call_flags(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                          size_t arg_len, uint32_t timeout_ms, uint8_t type, uint8_t flags, gr_call_cb cb,
                          void *ud);

/* The same, carrying the call chain of the forwarded message (grain ids
 * waiting on it; docs/grains.md) so the next silo can detect a cycle, and
 * its idempotency key (idem_len 0: none). */
int gr__client_call_chain(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                          size_t arg_len, uint32_t timeout_ms, uint8_t type, uint8_t flags, const void *chain,
                          size_t chain_len, const void *idem, size_t idem_len, gr_call_cb cb, void *ud);

#endif
