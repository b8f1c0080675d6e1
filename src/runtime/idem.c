/* src/runtime/idem.c - the reply log (see idem.h). */
#include "runtime/idem.h"

#include <uv.h>

uint64_t gr__idem_now_ms(void) { return gr__wall_ms(); }

gr__idem_entry_t *gr__idem_find(gr__idem_log_t *log, const uint8_t *key, size_t key_len) {
    gr__idem_entry_t *e = NULL;
    HASH_FIND(hh, log->by_key, key, key_len, e);
    return e;
}

static void gr__idem_link_newest(gr__idem_log_t *log, gr__idem_entry_t *e) {
    e->newer = NULL;
    e->older = log->newest;
    if (log->newest)
        log->newest->newer = e;
    else
        log->oldest = e;
    log->newest = e;
}

static int gr__idem_add(gr__idem_log_t *log, const uint8_t *key, size_t key_len, gr__idem_entry_t **out) {
    if (key_len == 0 || key_len > GR_IDEM_KEY_MAX) return GR_EINVAL;
    gr__idem_entry_t *e = gr__calloc(1, sizeof *e);
    if (!e) return GR_ENOMEM;
    memcpy(e->key, key, key_len);
    e->key_len = (uint8_t)key_len;
    HASH_ADD(hh, log->by_key, key, key_len, e);
    if (gr__hash_oom()) {
        gr__free(e);
        return GR_ENOMEM;
    }
    gr__idem_link_newest(log, e);
    log->n++;
    log->bytes += key_len;
    *out = e;
    return 0;
}

int gr__idem_begin(gr__idem_log_t *log, const uint8_t *key, size_t key_len, gr__idem_entry_t **out) {
    /* A key evicted and now answered again is stored anew (an upsert), not
     * also deleted by the same write. */
    for (size_t off = 0; off < log->dels.len; off += 1u + log->dels.data[off]) {
        size_t kl = log->dels.data[off];
        if (kl == key_len && !memcmp(log->dels.data + off + 1, key, kl)) {
            memmove(log->dels.data + off, log->dels.data + off + 1 + kl, log->dels.len - off - 1 - kl);
            log->dels.len -= 1 + kl;
            break;
        }
    }
    int rc = gr__idem_add(log, key, key_len, out);
    if (rc == 0) (*out)->state = GR__IDEM_RUNNING;
    return rc;
}

int gr__idem_record(gr__idem_log_t *log, gr__idem_entry_t *e, int status, const void *reply, size_t len,
                    uint64_t now_ms) {
    uint8_t *copy = NULL;
    if (len && !(copy = gr__memdup(reply, len))) return GR_ENOMEM;
    e->reply = copy;
    e->reply_len = (uint32_t)len;
    e->status = status;
    e->at_ms = now_ms;
    e->state = GR__IDEM_HELD;
    log->bytes += len;
    /* Age order is reply order: what retention measures. */
    if (log->newest != e) {
        if (e->older) e->older->newer = e->newer;
        if (e->newer) e->newer->older = e->older;
        if (log->oldest == e) log->oldest = e->newer;
        gr__idem_link_newest(log, e);
    }
    return 0;
}

void gr__idem_remove(gr__idem_log_t *log, gr__idem_entry_t *e) {
    HASH_DEL(log->by_key, e);
    if (e->older)
        e->older->newer = e->newer;
    else
        log->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        log->newest = e->older;
    log->n--;
    log->bytes -= e->key_len + e->reply_len;
    gr__free(e->reply);
    gr__free(e);
}

void gr__idem_prune(gr__idem_log_t *log, uint64_t now_ms, uint32_t max_keys, uint32_t retention_ms) {
    gr__idem_entry_t *e = log->oldest;
    while (e) {
        gr__idem_entry_t *next = e->newer;
        int settled = e->state == GR__IDEM_DONE && !e->waiting;
        int expired = now_ms > e->at_ms && now_ms - e->at_ms > retention_ms;
        int over = log->n > max_keys || (log->bytes > GR__IDEM_MAX_BYTES && e != log->newest);
        if (settled && (expired || over)) {
            /* Storage must forget it too, or a reload would bring it back
             * past the bound (an expired one it ignores by itself). */
            if (!expired && e->stored) {
                uint8_t kl = e->key_len;
                if (gr__buf_append(&log->dels, &kl, 1) != 0 || gr__buf_append(&log->dels, e->key, kl) != 0)
                    break; /* out of memory: keep it for now */
            }
            gr__idem_remove(log, e);
        } else if (!expired && !over) {
            break; /* newer ones are younger, and the bounds hold */
        }
        e = next;
    }
}

int gr__idem_pending(const gr__idem_log_t *log) {
    if (log->dels.len) return 1;
    for (const gr__idem_entry_t *e = log->newest; e; e = e->older)
        if (e->state != GR__IDEM_RUNNING && !e->stored) return 1;
    return 0;
}

int gr__idem_encode_new(gr__idem_log_t *log, gr__buf_t *out) {
    for (gr__idem_entry_t *e = log->oldest; e; e = e->newer) {
        if (e->state == GR__IDEM_RUNNING || e->stored) continue;
        uint8_t h[16];
        if (gr__buf_reserve(out, 1 + e->key_len + sizeof h + e->reply_len) != 0) return GR_ENOMEM;
        gr__buf_append(out, &e->key_len, 1);
        gr__buf_append(out, e->key, e->key_len);
        gr__put_u64(h, e->at_ms);
        gr__put_u32(h + 8, (uint32_t)e->status);
        gr__put_u32(h + 12, e->reply_len);
        gr__buf_append(out, h, sizeof h);
        if (e->reply_len) gr__buf_append(out, e->reply, e->reply_len);
        e->stored = 1;
    }
    return 0;
}

int gr__idem_decode(gr__idem_log_t *log, const uint8_t *data, size_t len, size_t *state_len, uint64_t now_ms,
                    uint32_t retention_ms) {
    if (len < GR__REPLIES_TRAILER || gr__get_u32(data + len - 4) != GR__REPLIES_MAGIC) return GR_EPROTO;
    size_t n = gr__get_u32(data + len - 8);
    if (n > len - GR__REPLIES_TRAILER) return GR_EPROTO;
    const uint8_t *p = data + len - GR__REPLIES_TRAILER - n, *end = data + len - GR__REPLIES_TRAILER;
    *state_len = (size_t)(p - data);
    while (p < end) {
        size_t kl = p[0];
        if (kl == 0 || (size_t)(end - p) < 1 + kl + 16) return GR_EPROTO;
        const uint8_t *key = p + 1;
        uint64_t at = gr__get_u64(p + 1 + kl);
        int32_t status = (int32_t)gr__get_u32(p + 1 + kl + 8);
        uint32_t rl = gr__get_u32(p + 1 + kl + 12);
        p += 1 + kl + 16;
        if ((size_t)(end - p) < rl) return GR_EPROTO;
        int expired = now_ms > at && now_ms - at > retention_ms;
        if (!expired && !gr__idem_find(log, key, kl)) {
            gr__idem_entry_t *e;
            int rc = gr__idem_add(log, key, kl, &e);
            if (rc == 0) rc = gr__idem_record(log, e, status, p, rl, at);
            if (rc != 0) return rc;
            e->state = GR__IDEM_DONE;
            e->stored = 1;
        }
        p += rl;
    }
    return 0;
}

void gr__idem_clear(gr__idem_log_t *log) {
    while (log->oldest)
        gr__idem_remove(log, log->oldest);
    gr__buf_free(&log->dels);
}
