/* src/base/log.c - one line per event on stderr, text or JSON.
 * The settings are process-wide (set once by the silo at start-up). */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "base/base.h"

static gr_log_level_t gr__log_level = GR_LOG_LEVEL_INFO;
static gr_log_format_t gr__log_format = GR_LOG_FORMAT_TEXT;
static char gr__log_silo[128] = "-";

static const char *const gr__level_names[] = {"debug", "info", "warn", "error"};

void gr_log_setup(gr_log_level_t level, gr_log_format_t format, const char *silo_id) {
    gr__log_level = level;
    gr__log_format = format;
    if (silo_id) snprintf(gr__log_silo, sizeof gr__log_silo, "%s", silo_id);
}

int gr_log_parse_level(const char *s, gr_log_level_t *out) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, gr__level_names[i]) == 0) {
            *out = (gr_log_level_t)i;
            return 0;
        }
    }
    return GR_EINVAL;
}

int gr__log_enabled(gr_log_level_t level) { return level >= gr__log_level; }

/* One line: the fixed fields, the optional grain, the caller's fields
 * (NULL-terminated key, value pairs), then the message. */
static void gr__log_emit(gr_log_level_t level, const char *grain_class, const void *key, size_t key_len,
                         const char *const *fields, const char *msg) {
    char grain[GR_CLASS_NAME_MAX + 260] = "", tbuf[32];
    if (grain_class) {
        char k[256];
        gr__escape(key, key_len, k, sizeof k);
        snprintf(grain, sizeof grain, "%s/%s", grain_class, k);
    }
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tl, sizeof tbuf - tl, ".%03dZ", (int)(tv.tv_usec / 1000));
    /* Built on the stack, through the one JSON escaper (base/util.c): the
     * text may carry peer data, and a line saying memory ran out must not
     * need memory. The fields the callers pass are short (ids, counts): far
     * from the 4 KiB of the line, so none is cut. */
    char line[4096];
    size_t o = 0;
#define GR__PUT(...)                                                                                         \
    do {                                                                                                     \
        int n_ = snprintf(line + o, sizeof line - o, __VA_ARGS__);                                           \
        if (n_ > 0) o = o + (size_t)n_ < sizeof line ? o + (size_t)n_ : sizeof line - 1;                     \
    } while (0)
    int json = gr__log_format == GR_LOG_FORMAT_JSON;
    char esc[1024];
    if (json) {
        gr__json_escape(esc, sizeof esc, gr__log_silo, strlen(gr__log_silo));
        GR__PUT("{\"ts\":\"%s\",\"level\":\"%s\",\"silo\":\"%s\"", tbuf, gr__level_names[level], esc);
        if (grain[0]) {
            gr__json_escape(esc, sizeof esc, grain, strlen(grain));
            GR__PUT(",\"grain\":\"%s\"", esc);
        }
    } else {
        GR__PUT("%s %-5s silo=%s%s%s", tbuf, gr__level_names[level], gr__log_silo, grain[0] ? " grain=" : "",
                grain);
    }
    for (size_t i = 0; fields && fields[i] && fields[i + 1]; i += 2) {
        if (json) {
            gr__json_escape(esc, sizeof esc, fields[i + 1], strlen(fields[i + 1]));
            GR__PUT(",\"%s\":\"%s\"", fields[i], esc);
        } else {
            GR__PUT(" %s=%s", fields[i], fields[i + 1]);
        }
    }
    if (json) {
        char jm[2048];
        gr__json_escape(jm, sizeof jm, msg, strlen(msg));
        fprintf(stderr, "%.*s,\"msg\":\"%s\"}\n", (int)o, line, jm);
    } else {
        fprintf(stderr, "%.*s %s\n", (int)o, line, msg);
    }
#undef GR__PUT
}

static void gr__log_v(gr_log_level_t level, const char *grain_class, const void *key, size_t key_len,
                      const char *const *fields, const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    gr__log_emit(level, grain_class, key, key_len, fields, msg);
}

void gr__log(gr_log_level_t level, const char *grain_class, const void *key, size_t key_len, const char *fmt,
             ...) {
    if (level < gr__log_level) return;
    va_list ap;
    va_start(ap, fmt);
    gr__log_v(level, grain_class, key, key_len, NULL, fmt, ap);
    va_end(ap);
}

void gr__log_fields(gr_log_level_t level, const char *const *fields, const char *fmt, ...) {
    if (level < gr__log_level) return;
    va_list ap;
    va_start(ap, fmt);
    gr__log_v(level, NULL, NULL, 0, fields, fmt, ap);
    va_end(ap);
}

void gr_log(gr_log_level_t level, const char *fmt, ...) {
    if ((unsigned)level > GR_LOG_LEVEL_ERROR || level < gr__log_level) return;
    va_list ap;
    va_start(ap, fmt);
    gr__log_v(level, NULL, NULL, 0, NULL, fmt, ap);
    va_end(ap);
}
