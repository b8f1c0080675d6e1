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
        /* The one JSON escaper (base/util.c): the text may carry peer data. */
        gr__buf_t j;
        gr__buf_init(&j);
        int rc =
            gr__buf_printf(&j, "{\"ts\":\"%s\",\"level\":\"%s\",\"silo\":", tbuf, gr__level_names[level]);
        if (rc == 0) rc = gr__buf_json_str(&j, gr__log_silo, strlen(gr__log_silo));
        if (rc == 0 && grain[0]) rc = gr__buf_append(&j, GR__LIT(",\"grain\":"));
        if (rc == 0 && grain[0]) rc = gr__buf_json_str(&j, grain, strlen(grain));
        if (rc == 0) rc = gr__buf_append(&j, GR__LIT(",\"msg\":"));
        if (rc == 0) rc = gr__buf_json_str(&j, msg, strlen(msg));
        if (rc == 0) rc = gr__buf_append(&j, GR__LIT("}\n"));
        if (rc == 0)
            fwrite(j.data, 1, j.len, stderr);
        else /* out of memory: the line still goes out, unescaped but marked */
            fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"(log line lost: out of memory)\"}\n",
                    tbuf, gr__level_names[level]);
        gr__buf_free(&j);
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
