/* src/storage/storage.c - the provider-independent entry points: argument
 * checks shared by every provider, then dispatch. */
#include <assert.h>

#include "storage/claim.h"
#include "storage/provider.h"
#include "storage/replies.h"

static int gr__check(gr_storage_t *st, const char *class_name, const void *key, size_t key_len) {
    /* Over a limit is GR_ETOOBIG, as everywhere (granary/common.h). */
    if (class_name && strlen(class_name) > GR_CLASS_NAME_MAX) return GR_ETOOBIG;
    if (!st || !gr__valid_class_name(class_name) || (key_len && !key)) return GR_EINVAL;
    if (key_len > GR_KEY_MAX) return GR_ETOOBIG;
    if (st->closing) return GR_ESHUTDOWN;
    return 0;
}

int gr_storage_read(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                    gr_storage_read_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb) return GR_EINVAL;
    return st->vt->read(st, class_name, key, key_len, cb, ud);
}

int gr_storage_write(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                     const void *data, size_t len, uint32_t format, int64_t expected, gr_storage_write_cb cb,
                     void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    /* Bit 30 of the format marks a trailing reply log (storage/replies.h):
     * a caller's state must not claim it. */
    if (!cb || expected < 0 || (len && !data) || format > INT32_MAX || (format & GR__REPLIES_FLAG))
        return GR_EINVAL;
    if (len > GR_STATE_MAX) return GR_ETOOBIG;
    return st->vt->write(st, class_name, key, key_len, data, len, format, expected, cb, ud);
}

size_t gr__replies_entry_size(const uint8_t *p, size_t left) {
    if (left == 0) return 0;
    size_t kl = p[0];
    if (kl == 0 || kl > GR_IDEM_KEY_MAX || left < 1 + kl + 16) return (size_t)-1;
    size_t rl = gr__get_u32(p + 1 + kl + 12);
    if (rl > GR_ARG_MAX || left - (1 + kl + 16) < rl) return (size_t)-1;
    return 1 + kl + 16 + rl;
}

size_t gr__replies_del_size(const uint8_t *p, size_t left) {
    if (left == 0) return 0;
    size_t kl = p[0];
    if (kl == 0 || kl > GR_IDEM_KEY_MAX || left < 1 + kl) return (size_t)-1;
    return 1 + kl;
}

static int gr__replies_parse(const uint8_t *p, size_t n, size_t (*size)(const uint8_t *, size_t)) {
    while (n) {
        size_t k = size(p, n);
        if (k == (size_t)-1) return GR_EPROTO;
        p += k;
        n -= k;
    }
    return 0;
}

int gr__storage_write_replies(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                              const void *data, size_t len, uint32_t format, int64_t expected,
                              const uint8_t *adds, size_t adds_len, const uint8_t *dels, size_t dels_len,
                              uint32_t retention_ms, gr_storage_write_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || expected < 0 || (len && !data) || format > INT32_MAX || (format & GR__REPLIES_FLAG) ||
        (adds_len && !adds) || (dels_len && !dels) || !st->vt->write_replies)
        return GR_EINVAL;
    if (len > GR_STATE_MAX) return GR_ETOOBIG;
    if (gr__replies_parse(adds, adds_len, gr__replies_entry_size) ||
        gr__replies_parse(dels, dels_len, gr__replies_del_size))
        return GR_EPROTO;
    return st->vt->write_replies(st, class_name, key, key_len, data, len, format, expected, adds, adds_len,
                                 dels, dels_len, retention_ms, cb, ud);
}

int gr_storage_clear(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                     int64_t expected, gr_storage_write_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || expected < 0) return GR_EINVAL;
    return st->vt->clear(st, class_name, key, key_len, expected, cb, ud);
}

int gr__storage_claim(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                      const char *owner, int64_t token, gr_storage_read_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || !owner || !owner[0]) return GR_EINVAL;
    if (!st->vt->claim) return st->vt->read(st, class_name, key, key_len, cb, ud);
    return st->vt->claim(st, class_name, key, key_len, owner, token, cb, ud);
}

int gr__storage_release(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                        const char *owner, int64_t token) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!owner || !owner[0]) return GR_EINVAL;
    return st->vt->release ? st->vt->release(st, class_name, key, key_len, owner, token) : 0;
}

int gr__storage_transfer(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                         const char *from, int64_t from_token, const char *owner, int64_t token,
                         gr__transfer_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || !from || !from[0] || !owner || !owner[0] || !st->vt->transfer) return GR_EINVAL;
    return st->vt->transfer(st, class_name, key, key_len, from, from_token, owner, token, cb, ud);
}

void gr_storage_close(gr_storage_t *st, gr_close_cb cb, void *ud) {
    assert(!st->closing && "gr_storage_close called twice");
    st->closing = 1;
    st->vt->close(st, cb, ud);
}
