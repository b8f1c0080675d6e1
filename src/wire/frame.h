/* src/wire/frame.h - the Granary wire protocol: frame layout, a pure decoder and
 * encoders. Used by the silo gateway, silo-to-silo transport and the client.
 * The format is described in docs/wire-protocol.md.
 */
#ifndef GR_WIRE_FRAME_H
#define GR_WIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define GR_PROTOCOL_VERSION 1
#define GR_FRAME_MAGIC 0x4752u   /* "GR": catches a peer speaking another protocol */
#define GR_FRAME_HEADER_SIZE 16u /* u32 len, u16 magic, u8 type, u8 flags, u64 id */
/* Default and hard cap of a frame body. A call carries at most GR_ARG_MAX of
 * argument plus names and key; 64 kB of slack covers those. */
#define GR_FRAME_MAX_DEFAULT (GR_ARG_MAX + 64u * 1024u)
/* Header flags of REQUEST/ONEWAY: the low four bits count silo-to-silo hops;
 * GR__FRAME_F_CHAIN says a call chain follows the argument. */
#define GR__FRAME_F_HOPS 0x0fu
#define GR__FRAME_F_CHAIN 0x10u
/* From a silo: run the call here (activating the grain if need be); the
 * sender chose this silo by the directory or as the grain's claim holder. */
#define GR__FRAME_F_HERE 0x20u
/* An idempotency key follows the chain (or the argument): u8 length (1..128), key. */
#define GR__FRAME_F_IDEM 0x40u
/* Keys of `$` classes (silo-to-silo control) name a grain as class '\0' key
 * (the directory's `$dir`), so they may be that long; every other class's key
 * is at most GR_KEY_MAX. */
#define GR__SYS_KEY_MAX (GR_CLASS_NAME_MAX + 1u + GR_KEY_MAX)

typedef enum gr__frame_type {
    GR__FRAME_HELLO = 1,    /* first frame of a connection, from the dialing side */
    GR__FRAME_HELLO_OK = 2, /* accepted; carries the server's silo id */
    GR__FRAME_REQUEST = 3,  /* a call, answered by a RESPONSE with the same id */
    GR__FRAME_RESPONSE = 4, /* status + body */
    GR__FRAME_ONEWAY = 5,   /* a call without a response */
    GR__FRAME_PING = 6,
    GR__FRAME_PONG = 7,
    GR__FRAME_GOAWAY = 8, /* the sender will close; status says why */
} gr__frame_type_t;

typedef enum gr__peer_role { GR__ROLE_CLIENT = 1, GR__ROLE_SILO = 2 } gr__peer_role_t;

/* A decoded frame. Every pointer borrows from the buffer given to the decoder
 * and is valid as long as those bytes are. */
typedef struct gr__frame {
    uint8_t type;
    uint8_t flags;
    uint64_t id;
    union {
        struct {
            uint16_t version;
            uint8_t role;
            const char *cluster; /* not NUL-terminated */
            size_t cluster_len;
            const uint8_t *secret;
            size_t secret_len;
            const char *name; /* the dialer's silo id or client name */
            size_t name_len;
        } hello;
        struct {
            uint16_t version;
            const char *name;
            size_t name_len;
        } hello_ok;
        struct {
            uint32_t timeout_ms;
            const char *class_name;
            size_t class_len;
            const uint8_t *key;
            size_t key_len;
            const char *method;
            size_t method_len;
            const uint8_t *arg;
            size_t arg_len;
            const uint8_t *chain; /* grain ids waiting on this call (GR__FRAME_F_CHAIN) */
            size_t chain_len;
            const uint8_t *idem; /* idempotency key (GR__FRAME_F_IDEM) */
            size_t idem_len;
        } request; /* also ONEWAY */
        struct {
            int32_t status;
            const uint8_t *body;
            size_t body_len;
        } response; /* also GOAWAY */
    } u;
} gr__frame_t;

/* Decode one frame from the front of buf[0..len). Pure: no allocation, no
 * state. Returns 0 and sets *consumed, GR__EAGAIN when more bytes are needed
 * (nothing consumed), GR_ETOOBIG when the announced body is over max_body, or
 * GR_EPROTO for anything malformed (bad magic, unknown type, lengths that do
 * not add up, names over their limits). After an error the stream cannot be
 * resynchronised: close the connection. */
int gr__frame_decode(const uint8_t *buf, size_t len, size_t max_body, gr__frame_t *out, size_t *consumed);

/* Encoders append one whole frame to b. They return 0, GR_ENOMEM, or
 * GR_ETOOBIG/GR_EINVAL if a field is over its limit (then b is unchanged). */
int gr__frame_encode_hello(gr__buf_t *b, uint16_t version, uint8_t role, const char *cluster,
                           const void *secret, size_t secret_len, const char *name);
int gr__frame_encode_hello_ok(gr__buf_t *b, uint16_t version, const char *name);
int gr__frame_encode_request(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                             const char *class_name, const void *key, size_t key_len, const char *method,
                             const void *arg, size_t arg_len);
/* The largest key a request of this class may carry (GR_KEY_MAX, or
 * GR__SYS_KEY_MAX for a `$` class). */
size_t gr__frame_key_max(const char *class_name, size_t class_len);

/* The same with a call chain (chain_len 0: none; at most GR__CHAIN_MAX). */
int gr__frame_encode_request_chain(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                                   const char *class_name, const void *key, size_t key_len,
                                   const char *method, const void *arg, size_t arg_len, const void *chain,
                                   size_t chain_len);
/* The same with an idempotency key (idem_len 0: none; at most GR_IDEM_KEY_MAX). */
int gr__frame_encode_request_full(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                                  const char *class_name, const void *key, size_t key_len, const char *method,
                                  const void *arg, size_t arg_len, const void *chain, size_t chain_len,
                                  const void *idem, size_t idem_len);
int gr__frame_encode_response(gr__buf_t *b, uint8_t type, uint64_t id, int32_t status, const void *body,
                              size_t body_len);
int gr__frame_encode_empty(gr__buf_t *b, uint8_t type, uint64_t id);

#endif
