/* src/wire/frame.c - encode and decode Granary frames. The decoder is pure and
 * checks every length against the bytes present before reading a field, so
 * it can be fed arbitrary input (it is the fuzz target). */
#include "wire/frame.h"

/* A bounds-checked reader over one frame body. */
typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} gr__rd_t;

static const uint8_t *gr__rd_take(gr__rd_t *r, size_t n) {
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}
static uint16_t gr__rd_u16(gr__rd_t *r) {
    const uint8_t *p = gr__rd_take(r, 2);
    return p ? gr__get_u16(p) : 0;
}
static uint32_t gr__rd_u32(gr__rd_t *r) {
    const uint8_t *p = gr__rd_take(r, 4);
    return p ? gr__get_u32(p) : 0;
}
static uint8_t gr__rd_u8(gr__rd_t *r) {
    const uint8_t *p = gr__rd_take(r, 1);
    return p ? p[0] : 0;
}

size_t gr__frame_key_max(const char *class_name, size_t class_len) {
    return class_name && class_len && class_name[0] == '$' ? GR__SYS_KEY_MAX : GR_KEY_MAX;
}

int gr__frame_decode(const uint8_t *buf, size_t len, size_t max_body, gr__frame_t *f, size_t *consumed) {
    if (len < 4) return GR__EAGAIN;
    uint32_t blen = gr__get_u32(buf);
    /* Check the magic as soon as it is there so a peer speaking HTTP or TLS
     * is told "protocol error" at once, not "too big" or left waiting. */
    if (len >= 6 && gr__get_u16(buf + 4) != GR_FRAME_MAGIC) return GR_EPROTO;
    /* The length covers everything after itself: magic..id is 12 bytes. */
    if (blen < GR_FRAME_HEADER_SIZE - 4) return GR_EPROTO;
    if (blen - (GR_FRAME_HEADER_SIZE - 4) > max_body) return GR_ETOOBIG;
    if (len - 4 < blen) return GR__EAGAIN;

    memset(f, 0, sizeof *f);
    f->type = buf[6];
    f->flags = buf[7];
    f->id = gr__get_u64(buf + 8);
    gr__rd_t r = {buf + GR_FRAME_HEADER_SIZE, blen - (GR_FRAME_HEADER_SIZE - 4), 0};

    switch (f->type) {
    case GR__FRAME_HELLO: {
        f->u.hello.version = gr__rd_u16(&r);
        f->u.hello.role = gr__rd_u8(&r);
        gr__rd_u8(&r); /* reserved */
        uint16_t cl = gr__rd_u16(&r), sl = gr__rd_u16(&r), nl = gr__rd_u16(&r);
        f->u.hello.cluster = (const char *)gr__rd_take(&r, cl);
        f->u.hello.cluster_len = cl;
        f->u.hello.secret = gr__rd_take(&r, sl);
        f->u.hello.secret_len = sl;
        f->u.hello.name = (const char *)gr__rd_take(&r, nl);
        f->u.hello.name_len = nl;
        if (f->u.hello.role != GR__ROLE_CLIENT && f->u.hello.role != GR__ROLE_SILO) return GR_EPROTO;
        if (cl > 255 || sl > 255 || nl > 255) return GR_EPROTO;
        break;
    }
    case GR__FRAME_HELLO_OK: {
        f->u.hello_ok.version = gr__rd_u16(&r);
        uint16_t nl = gr__rd_u16(&r);
        f->u.hello_ok.name = (const char *)gr__rd_take(&r, nl);
        f->u.hello_ok.name_len = nl;
        if (nl > 255) return GR_EPROTO;
        break;
    }
    case GR__FRAME_REQUEST:
    case GR__FRAME_ONEWAY: {
        f->u.request.timeout_ms = gr__rd_u32(&r);
        uint16_t cl = gr__rd_u16(&r), ml = gr__rd_u16(&r);
        uint32_t kl = gr__rd_u32(&r), al = gr__rd_u32(&r);
        if (cl == 0 || cl > GR_CLASS_NAME_MAX || ml == 0 || ml > GR_METHOD_NAME_MAX || kl > GR__SYS_KEY_MAX ||
            al > GR_ARG_MAX)
            return r.bad ? GR_EPROTO : GR_ETOOBIG;
        f->u.request.class_name = (const char *)gr__rd_take(&r, cl);
        f->u.request.class_len = cl;
        if (kl > gr__frame_key_max(f->u.request.class_name, cl)) return r.bad ? GR_EPROTO : GR_ETOOBIG;
        f->u.request.key = gr__rd_take(&r, kl);
        f->u.request.key_len = kl;
        f->u.request.method = (const char *)gr__rd_take(&r, ml);
        f->u.request.method_len = ml;
        f->u.request.arg = gr__rd_take(&r, al);
        f->u.request.arg_len = al;
        if (f->flags & GR__FRAME_F_CHAIN) {
            uint16_t hl = gr__rd_u16(&r);
            if (hl == 0 || hl > GR__CHAIN_MAX) return GR_EPROTO;
            f->u.request.chain = gr__rd_take(&r, hl);
            f->u.request.chain_len = hl;
        }
        if (f->flags & GR__FRAME_F_IDEM) {
            const uint8_t *ilp = gr__rd_take(&r, 1);
            uint8_t il = ilp ? ilp[0] : 0;
            if (il == 0 || il > GR_IDEM_KEY_MAX) return GR_EPROTO;
            f->u.request.idem = gr__rd_take(&r, il);
            f->u.request.idem_len = il;
        }
        break;
    }
    case GR__FRAME_RESPONSE:
    case GR__FRAME_GOAWAY: {
        f->u.response.status = (int32_t)gr__rd_u32(&r);
        uint32_t bl = gr__rd_u32(&r);
        f->u.response.body = gr__rd_take(&r, bl);
        f->u.response.body_len = bl;
        break;
    }
    case GR__FRAME_PING:
    case GR__FRAME_PONG:
        break;
    default:
        return GR_EPROTO;
    }
    /* Trailing bytes mean the peer and we disagree on the layout. */
    if (r.bad || r.left != 0) return GR_EPROTO;
    *consumed = 4 + (size_t)blen;
    return 0;
}

/* Reserve the header, return its offset; the body is appended after it and
 * gr__end_frame() fills in the length. */
static int gr__begin_frame(gr__buf_t *b, uint8_t type, uint64_t id, size_t body, size_t *start) {
    int rc = gr__buf_reserve(b, GR_FRAME_HEADER_SIZE + body);
    if (rc) return rc;
    *start = b->len;
    uint8_t *h = b->data + b->len;
    gr__put_u32(h, 0);
    gr__put_u16(h + 4, GR_FRAME_MAGIC);
    h[6] = type;
    h[7] = 0;
    gr__put_u64(h + 8, id);
    b->len += GR_FRAME_HEADER_SIZE;
    return 0;
}

static void gr__end_frame(gr__buf_t *b, size_t start) {
    gr__put_u32(b->data + start, (uint32_t)(b->len - start - 4));
}

/* Appends into reserved space: cannot fail. */
static void gr__put(gr__buf_t *b, const void *p, size_t n) {
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void gr__put16(gr__buf_t *b, uint16_t v) {
    gr__put_u16(b->data + b->len, v);
    b->len += 2;
}
static void gr__put32(gr__buf_t *b, uint32_t v) {
    gr__put_u32(b->data + b->len, v);
    b->len += 4;
}

int gr__frame_encode_hello(gr__buf_t *b, uint16_t version, uint8_t role, const char *cluster,
                           const void *secret, size_t secret_len, const char *name) {
    size_t cl = strlen(cluster), nl = strlen(name);
    if (cl > 255 || nl > 255 || secret_len > 255) return GR_ETOOBIG;
    size_t start;
    int rc = gr__begin_frame(b, GR__FRAME_HELLO, 0, 10 + cl + secret_len + nl, &start);
    if (rc) return rc;
    gr__put16(b, version);
    uint8_t rr[2] = {role, 0};
    gr__put(b, rr, 2);
    gr__put16(b, (uint16_t)cl);
    gr__put16(b, (uint16_t)secret_len);
    gr__put16(b, (uint16_t)nl);
    gr__put(b, cluster, cl);
    gr__put(b, secret, secret_len);
    gr__put(b, name, nl);
    gr__end_frame(b, start);
    return 0;
}

int gr__frame_encode_hello_ok(gr__buf_t *b, uint16_t version, const char *name) {
    size_t nl = strlen(name);
    if (nl > 255) return GR_ETOOBIG;
    size_t start;
    int rc = gr__begin_frame(b, GR__FRAME_HELLO_OK, 0, 4 + nl, &start);
    if (rc) return rc;
    gr__put16(b, version);
    gr__put16(b, (uint16_t)nl);
    gr__put(b, name, nl);
    gr__end_frame(b, start);
    return 0;
}

int gr__frame_encode_request(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                             const char *class_name, const void *key, size_t key_len, const char *method,
                             const void *arg, size_t arg_len) {
    return gr__frame_encode_request_chain(b, type, id, timeout_ms, class_name, key, key_len, method, arg,
                                          arg_len, NULL, 0);
}

int gr__frame_encode_request_chain(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                                   const char *class_name, const void *key, size_t key_len,
                                   const char *method, const void *arg, size_t arg_len, const void *chain,
                                   size_t chain_len) {
    return gr__frame_encode_request_full(b, type, id, timeout_ms, class_name, key, key_len, method, arg,
                                         arg_len, chain, chain_len, NULL, 0);
}

int gr__frame_encode_request_full(gr__buf_t *b, uint8_t type, uint64_t id, uint32_t timeout_ms,
                                  const char *class_name, const void *key, size_t key_len, const char *method,
                                  const void *arg, size_t arg_len, const void *chain, size_t chain_len,
                                  const void *idem, size_t idem_len) {
    size_t cl = strlen(class_name), ml = strlen(method);
    if (cl == 0 || ml == 0) return GR_EINVAL;
    if (cl > GR_CLASS_NAME_MAX || ml > GR_METHOD_NAME_MAX || key_len > gr__frame_key_max(class_name, cl) ||
        arg_len > GR_ARG_MAX || chain_len > GR__CHAIN_MAX || idem_len > GR_IDEM_KEY_MAX)
        return GR_ETOOBIG;
    size_t start;
    int rc = gr__begin_frame(b, type, id,
                             16 + cl + key_len + ml + arg_len + (chain_len ? 2 + chain_len : 0) +
                                 (idem_len ? 1 + idem_len : 0),
                             &start);
    if (rc) return rc;
    if (chain_len) b->data[start + 7] |= GR__FRAME_F_CHAIN;
    if (idem_len) b->data[start + 7] |= GR__FRAME_F_IDEM;
    gr__put32(b, timeout_ms);
    gr__put16(b, (uint16_t)cl);
    gr__put16(b, (uint16_t)ml);
    gr__put32(b, (uint32_t)key_len);
    gr__put32(b, (uint32_t)arg_len);
    gr__put(b, class_name, cl);
    gr__put(b, key, key_len);
    gr__put(b, method, ml);
    gr__put(b, arg, arg_len);
    if (chain_len) {
        gr__put16(b, (uint16_t)chain_len);
        gr__put(b, chain, chain_len);
    }
    if (idem_len) {
        uint8_t il = (uint8_t)idem_len;
        gr__put(b, &il, 1);
        gr__put(b, idem, idem_len);
    }
    gr__end_frame(b, start);
    return 0;
}

int gr__frame_encode_response(gr__buf_t *b, uint8_t type, uint64_t id, int32_t status, const void *body,
                              size_t body_len) {
    if (body_len > GR_ARG_MAX) return GR_ETOOBIG;
    size_t start;
    int rc = gr__begin_frame(b, type, id, 8 + body_len, &start);
    if (rc) return rc;
    gr__put32(b, (uint32_t)status);
    gr__put32(b, (uint32_t)body_len);
    gr__put(b, body, body_len);
    gr__end_frame(b, start);
    return 0;
}

int gr__frame_encode_empty(gr__buf_t *b, uint8_t type, uint64_t id) {
    size_t start;
    int rc = gr__begin_frame(b, type, id, 0, &start);
    if (rc) return rc;
    gr__end_frame(b, start);
    return 0;
}
