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

void gr__log(gr_log_level_t level, const char *grain_class, const void *key, size_t key_len, const char *fmt,
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
    if (gr__log_format == GR_LOG_FORMAT_JSON) {
        /* On the stack, through the one JSON escaper (base/util.c): the
         * text may carry peer data, and a line saying memory ran out must
         * not need memory. */
        char jm[2048], jg[600], js[256];
        gr__json_escape(jm, sizeof jm, msg, strlen(msg));
        gr__json_escape(jg, sizeof jg, grain, strlen(grain));
        gr__json_escape(js, sizeof js, gr__log_silo, strlen(gr__log_silo));
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"silo\":\"%s\"%s%s%s,\"msg\":\"%s\"}\n", tbuf,
                gr__level_names[level], js, grain[0] ? ",\"grain\":\"" : "", jg, grain[0] ? "\"" : "", jm);
    } else {
        fprintf(stderr, "%s %-5s silo=%s%s%s %s\n", tbuf, gr__level_names[level], gr__log_silo,
                grain[0] ? " grain=" : "", grain, msg);
    }
}

void gr_log(gr_log_level_t level, const char *fmt, ...) {
    if ((unsigned)level > GR_LOG_LEVEL_ERROR || level < gr__log_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gr__log(level, NULL, NULL, 0, "%s", msg);
}
