/* src/storage/pg_arrays.c - array parameters for the batched statements:
 * text-format literals (the reply-log arrays of a keyed write, pg_replies.c)
 * and the binary format (the write, update, read, claim and release
 * batches, postgres.c). The binary layout is PostgreSQL's
 * array_send: ndim, has-nulls flag, element type, then per dimension its
 * length and lower bound, then each element as a 32-bit length and its
 * bytes, all integers big-endian. */
#include "storage/pg_internal.h"

int gr__hex_elem(gr__buf_t *b, const uint8_t *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int rc = gr__buf_reserve(b, 6 + 2 * n);
    if (rc) return rc;
    /* Inside a quoted array element a backslash is written twice. */
    static const char open[] = "\"\\\\x"; /* the 4 bytes "\\x */
    memcpy(b->data + b->len, open, sizeof open - 1);
    b->len += sizeof open - 1;
    for (size_t i = 0; i < n; i++) {
        b->data[b->len++] = (uint8_t)hex[p[i] >> 4];
        b->data[b->len++] = (uint8_t)hex[p[i] & 15];
    }
    b->data[b->len++] = '"';
    return 0;
}

int gr__text_elem(gr__buf_t *b, const char *t) {
    int rc = gr__buf_append(b, GR__LIT("\""));
    for (; rc == 0 && *t; t++) {
        if (*t == '"' || *t == '\\') rc = gr__buf_append(b, GR__LIT("\\"));
        if (rc == 0) rc = gr__buf_append(b, t, 1);
    }
    return rc ? rc : gr__buf_append(b, GR__LIT("\""));
}

int gr__arr_begin(gr__buf_t *b, uint32_t oid, size_t n) {
    if (n > INT32_MAX) return GR_ENOMEM;
    int rc = gr__buf_reserve(b, 20);
    if (rc) return rc;
    uint8_t *p = b->data + b->len;
    gr__put_u32(p, 1);       /* dimensions */
    gr__put_u32(p + 4, 0);   /* no NULL elements */
    gr__put_u32(p + 8, oid); /* element type */
    gr__put_u32(p + 12, (uint32_t)n);
    gr__put_u32(p + 16, 1); /* lower bound */
    b->len += 20;
    return 0;
}

int gr__arr_bytes(gr__buf_t *b, const void *data, size_t n) {
    if (n > INT32_MAX) return GR_ENOMEM;
    int rc = gr__buf_reserve(b, 4 + n);
    if (rc) return rc;
    gr__put_u32(b->data + b->len, (uint32_t)n);
    if (n) memcpy(b->data + b->len + 4, data, n);
    b->len += 4 + n;
    return 0;
}

int gr__arr_i64(gr__buf_t *b, int64_t v) {
    uint8_t e[8];
    gr__put_u64(e, (uint64_t)v);
    return gr__arr_bytes(b, e, 8);
}

int gr__arr_i32(gr__buf_t *b, int32_t v) {
    uint8_t e[4];
    gr__put_u32(e, (uint32_t)v);
    return gr__arr_bytes(b, e, 4);
}
