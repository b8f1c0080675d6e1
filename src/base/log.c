/* src/base/log.c - one line per event on stderr, text or JSON.
 * The settings are process-wide (set once by the silo at start-up). */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "base/base.h"

static gr__log_level_t gr__log_level = GR__LOG_INFO;
static gr__log_format_t gr__log_format = GR__LOG_TEXT;
static char gr__log_silo[128] = "-";

static const char *const gr__level_names[] = {"debug", "info", "warn", "error"};

void gr__log_setup(gr__log_level_t level, gr__log_format_t format, const char *silo_id) {
    gr__log_level = level;
    gr__log_format = format;
    if (silo_id) snprintf(gr__log_silo, sizeof gr__log_silo, "%s", silo_id);
}

int gr__log_parse_level(const char *s, gr__log_level_t *out) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, gr__level_names[i]) == 0) {
            *out = (gr__log_level_t)i;
            return 0;
        }
    }
    return GR_EINVAL;
}

int gr__log_enabled(gr__log_level_t level) { return level >= gr__log_level; }

/* JSON string escaping for the message: the text may carry peer data. */
static void gr__json_str(char *out, size_t out_size, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < out_size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, out_size - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

void gr__log(gr__log_level_t level, const char *grain_class, const void *key, size_t key_len, const char *fmt,
             ...) {
    if (level < gr__log_level) return;
    char msg[1024], grain[GR_CLASS_NAME_MAX + 260] = "", tbuf[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
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
    if (gr__log_format == GR__LOG_JSON) {
        char jm[2048], jg[600];
        gr__json_str(jm, sizeof jm, msg);
        gr__json_str(jg, sizeof jg, grain);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"silo\":\"%s\"%s%s%s,\"msg\":\"%s\"}\n", tbuf,
                gr__level_names[level], gr__log_silo, grain[0] ? ",\"grain\":\"" : "", jg,
                grain[0] ? "\"" : "", jm);
    } else {
        fprintf(stderr, "%s %-5s silo=%s%s%s %s\n", tbuf, gr__level_names[level], gr__log_silo,
                grain[0] ? " grain=" : "", grain, msg);
    }
}
