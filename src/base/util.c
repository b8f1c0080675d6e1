/* src/base/util.c - hashing, the byte buffer, escaping and the clock. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <uv.h>

#include "base/base.h"

/* FNV-1a over the bytes, then a murmur3 finaliser: FNV alone clusters badly
 * in the high bits, which the hash ring uses. */
uint64_t gr__hash64(const void *data, size_t len, uint64_t seed) {
    const uint8_t *p = data;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

void gr__buf_init(gr__buf_t *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

int gr__buf_reserve(gr__buf_t *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2) return GR_ENOMEM;
        cap *= 2;
    }
    uint8_t *p = gr__realloc(b->data, cap);
    if (!p) return GR_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int gr__buf_append(gr__buf_t *b, const void *p, size_t n) {
    int rc = gr__buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static size_t gr__utf8_len(const uint8_t *p, size_t n) {
    size_t need;
    uint32_t min, cp;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2, min = 0x80, cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        need = 3, min = 0x800, cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return need;
}

/* The JSON escaping rule, one character at a time: the escaped form of the
 * character at p (at most 6 bytes, into out) and how many input bytes it
 * took (*used). Control characters, quotes and backslashes escaped, valid
 * UTF-8 kept, any other byte as U+FFFD. */
static size_t gr__json_char(const uint8_t *p, size_t len, char out[6], size_t *used) {
    uint8_t ch = p[0];
    *used = 1;
    if (ch == '"' || ch == '\\') {
        out[0] = '\\';
        out[1] = (char)ch;
        return 2;
    }
    if (ch == '\n' || ch == '\t' || ch == '\r') {
        out[0] = '\\';
        out[1] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
        return 2;
    }
    if (ch < 0x20 || ch == 0x7f) {
        static const char hex[] = "0123456789abcdef";
        memcpy(out, "\\u00", 4);
        out[4] = hex[ch >> 4];
        out[5] = hex[ch & 15];
        return 6;
    }
    if (ch < 0x80) {
        out[0] = (char)ch;
        return 1;
    }
    size_t n = gr__utf8_len(p, len);
    if (!n) {
        memcpy(out, "\\ufffd", 6);
        return 6;
    }
    memcpy(out, p, n);
    *used = n;
    return n;
}

int gr__buf_json_str(gr__buf_t *b, const void *s, size_t len) {
    const uint8_t *p = s;
    int rc = gr__buf_append(b, "\"", 1);
    for (size_t i = 0; i < len && rc == 0;) {
        char e[6];
        size_t used, n = gr__json_char(p + i, len - i, e, &used);
        rc = gr__buf_append(b, e, n);
        i += used;
    }
    return rc ? rc : gr__buf_append(b, "\"", 1);
}

size_t gr__json_escape(char *out, size_t cap, const void *s, size_t len) {
    const uint8_t *p = s;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        char e[6];
        size_t used, n = gr__json_char(p + i, len - i, e, &used);
        if (o + n + 1 > cap) break; /* whole characters only */
        memcpy(out + o, e, n);
        o += n;
        i += used;
    }
    if (cap) out[o] = '\0';
    return o;
}

void gr__buf_consume(gr__buf_t *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void gr__buf_free(gr__buf_t *b) {
    gr__free(b->data);
    gr__buf_init(b);
}

char *gr__escape(const void *data, size_t len, char *out, size_t out_size) {
    const uint8_t *p = data;
    size_t o = 0;
    if (out_size == 0) return out;
    for (size_t i = 0; i < len; i++) {
        char tmp[5];
        size_t n;
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"') {
            tmp[0] = (char)p[i];
            n = 1;
        } else {
            snprintf(tmp, sizeof tmp, "\\x%02x", p[i]);
            n = 4;
        }
        if (o + n + 4 > out_size) {
            if (o + 4 <= out_size) {
                memcpy(out + o, GR__LIT("..."));
                o += 3;
            }
            break;
        }
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

uint64_t gr__now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int gr__secret_equal(const void *a, size_t n, const char *b) {
    const uint8_t *p = a;
    size_t bl = b ? strlen(b) : 0;
    unsigned diff = (unsigned)(n ^ bl);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(p[i] ^ (uint8_t)(i < bl ? b[i] : 0));
    return diff == 0;
}

int gr__valid_class_name(const char *name) {
    if (!name) return 0;
    size_t n = strlen(name);
    if (n == 0 || n > GR_CLASS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f || c == '/') return 0;
    }
    return 1;
}

int gr__valid_reminder_name(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > GR_METHOD_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] <= ' ' || name[i] > '~') return 0;
    return 1;
}

int gr__dlq_insert(gr__dlq_t *q, gr__dlq_node_t *n, uint64_t deadline) {
    n->deadline = deadline;
    gr__dlq_node_t *p = q->tail;
    while (p && p->deadline > deadline)
        p = p->prev;
    n->prev = p;
    n->next = p ? p->next : q->head;
    if (n->next)
        n->next->prev = n;
    else
        q->tail = n;
    if (p)
        p->next = n;
    else
        q->head = n;
    n->linked = 1;
    return q->head == n;
}

void gr__dlq_remove(gr__dlq_t *q, gr__dlq_node_t *n) {
    if (!n->linked) return;
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
    n->prev = n->next = NULL;
    n->linked = 0;
}

gr__dlq_node_t *gr__dlq_pop_expired(gr__dlq_t *q, uint64_t now) {
    gr__dlq_node_t *n = q->head;
    if (!n || n->deadline > now) return NULL;
    gr__dlq_remove(q, n);
    return n;
}

uint64_t gr__dlq_next_in(const gr__dlq_t *q, uint64_t now) {
    if (!q->head) return UINT64_MAX;
    return q->head->deadline > now ? q->head->deadline - now : 0;
}

int gr__parse_hostport(const char *s, size_t len, char *host, size_t host_size, int *port) {
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon || colon == s) return GR_EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']') return GR_EINVAL;
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= host_size) return GR_EINVAL;
    size_t pl = len - (size_t)(colon - s) - 1;
    if (pl == 0 || pl > 5) return GR_EINVAL;
    int p = 0;
    for (size_t i = 0; i < pl; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9') return GR_EINVAL;
        p = p * 10 + (c - '0');
    }
    if (p > 65535) return GR_EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = p;
    return 0;
}

int gr__make_addr(const char *host, int port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) return 0;
    return GR_EINVAL;
}

int gr__buf_printf(gr__buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return GR_EINVAL;
    if ((size_t)n < sizeof tmp) return gr__buf_append(b, tmp, (size_t)n);
    int rc = gr__buf_reserve(b, (size_t)n + 1);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Upper bounds in nanoseconds: 100 us .. 10 s, then +Inf. */
static const uint64_t gr__hist_le_ns[GR__HIST_BUCKETS - 1] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,       10000000,      25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000ull, 10000000000ull};
static const char *const gr__hist_le_s[GR__HIST_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "10",   "+Inf"};

void gr__hist_observe(gr__hist_t *h, uint64_t ns) {
    size_t i = 0;
    while (i < GR__HIST_BUCKETS - 1 && ns > gr__hist_le_ns[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_ns += ns;
}

void gr__hist_add(gr__hist_t *h, const gr__hist_t *other) {
    for (size_t i = 0; i < GR__HIST_BUCKETS; i++)
        h->buckets[i] += other->buckets[i];
    h->count += other->count;
    h->sum_ns += other->sum_ns;
}

uint64_t gr__hist_le(size_t i) { return i < GR__HIST_BUCKETS - 1 ? gr__hist_le_ns[i] : UINT64_MAX; }

int gr__hist_write(const gr__hist_t *h, gr__buf_t *b, const char *name, const char *labels) {
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i < GR__HIST_BUCKETS && rc == 0; i++) {
        cum += h->buckets[i];
        rc = gr__buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, labels[0] ? "," : "",
                            gr__hist_le_s[i], (unsigned long long)cum);
    }
    char braced[256] = "";
    if (labels[0]) snprintf(braced, sizeof braced, "{%s}", labels);
    if (rc == 0)
        rc = gr__buf_printf(b, "%s_sum%s %.9f\n%s_count%s %llu\n", name, braced, (double)h->sum_ns / 1e9,
                            name, braced, (unsigned long long)h->count);
    return rc;
}

uint64_t gr__wall_ms(void) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

uint64_t gr__rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

void gr__release_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
