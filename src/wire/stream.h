/* src/wire/stream.h - the byte stream under every framed connection: the
 * gateway's connections from clients and peers, the C client's connection
 * (which silo peer links use too). One way to read (into a buffer, through
 * TLS when the connection has it), one way to write (a batch of frames per
 * loop iteration, encrypted under TLS, one uv_write), and the flusher that
 * runs the writes right before the loop blocks. What is read is the
 * owner's to decode; when to pause reading is the owner's policy. */
#ifndef GR_WIRE_STREAM_H
#define GR_WIRE_STREAM_H

#include <uv.h>

#include "base/base.h"
#include "wire/tls.h"

/* ---- reading ---- */

/* Room for the next read, at least `chunk` bytes: ciphertext goes to `raw`
 * under TLS, plaintext to `in` without. A zero-length buffer (out of
 * memory) makes libuv report UV_ENOBUFS to the read callback. */
void gr__stream_alloc(gr__tls_t *tls, gr__buf_t *raw, gr__buf_t *in, size_t chunk, uv_buf_t *out);

/* n bytes arrived in the buffer gr__stream_alloc gave: afterwards the
 * plaintext is in `in` (decrypted under TLS; `raw` is left empty). Returns
 * 0, or under TLS what gr__tls_feed returns (GR_ECONN: the session ended,
 * GR_EAUTH: the peer was refused, GR_ENOMEM); `in` keeps what was
 * decrypted before the error. */
int gr__stream_received(gr__tls_t *tls, gr__buf_t *raw, gr__buf_t *in, size_t n);

/* ---- writing ---- */

typedef void (*gr__stream_written_cb)(void *ud, int status);

/* Send *plain, after what the TLS engine has to say (handshake flights, an
 * alert: an empty *plain sends just those). *plain is taken: emptied (under
 * TLS its memory stays for the next batch; without, the write owns it and
 * *plain is reset). Returns 1 (a uv_write is under way: cb(ud, status)
 * runs once it completes, status < 0 on a failed write), 0 (nothing to
 * send; cb will not run), GR_ENOMEM, or GR_ECONN (TLS refused to encrypt,
 * or uv_write failed); after an error cb will not run and the connection
 * should be closed. */
int gr__stream_write(uv_stream_t *tcp, gr__tls_t *tls, gr__buf_t *plain, gr__stream_written_cb cb, void *ud);

/* ---- the flusher ----
 * Frames are appended to a connection's buffer as they are produced; a
 * uv_prepare handle flushes every marked connection just before the loop
 * blocks. (A uv_check would run only after the next poll, so a reply made
 * by a timer or the runtime's idle pump could wait for unrelated I/O.) One
 * flusher serves many connections (the gateway's) or one (a client's). */
typedef struct gr__flush_node {
    struct gr__flush_node *next;
    int queued;
} gr__flush_node_t;

typedef void (*gr__flush_fn)(gr__flush_node_t *node, void *ud);

typedef struct gr__flusher {
    uv_prepare_t prepare;
    gr__flush_node_t *head;    /* marked since the last flush */
    gr__flush_node_t *running; /* the rest of the batch being flushed */
    gr__flush_fn flush;        /* called once per marked node, in no particular order */
    void *ud;
} gr__flusher_t;

void gr__flusher_init(uv_loop_t *loop, gr__flusher_t *f, gr__flush_fn flush, void *ud);
/* Flush `n` before the loop next blocks (again marking it is a no-op). */
void gr__flusher_mark(gr__flusher_t *f, gr__flush_node_t *n);
/* Take `n` off the list (its memory is about to go). */
void gr__flusher_unlink(gr__flusher_t *f, gr__flush_node_t *n);
/* Close the handle; cb gets it as for uv_close. */
void gr__flusher_close(gr__flusher_t *f, uv_close_cb cb);

#endif
