/* examples/chat/chat.c - chat rooms: grains calling grains, a stateless
 * worker for fan-in work, and a durable reminder.
 *
 *   Room/R join  NAME            add a member (and the room's tidy reminder)
 *   Room/R leave NAME
 *   Room/R post  "NAME: TEXT"    filter TEXT, keep it, deliver it to every member
 *   Room/R history               the messages kept, oldest first
 *   Room/R stats                 "members=N kept=M tidied=K"
 *   Inbox/NAME read              a member's undelivered messages, then empty
 *
 * A post runs three hops: the Room asks a Filter worker (a stateless worker:
 * any silo serves it locally, several activations per key, no state) to
 * check the text, keeps the cleaned text, then calls `deliver` on the Inbox
 * grain of every member (wherever those live) and answers once all have
 * answered: "delivered N". The Room is not reentrant, so posts to one room
 * are serialised while their deliveries are in flight; inboxes of one room
 * are written in parallel. Rooms keep their last CHAT_KEEP messages; a
 * durable reminder "tidy" (period CHAT_TIDY_MS, environment, default one
 * hour; registered on the first join, it survives restarts and moves)
 * trims them to the last CHAT_KEEP_TIDY. Everything is persisted before
 * it is answered.
 *
 * Built as chat.so for `silo run --grains chat.so` (reminders need
 * PostgreSQL: not with --memory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <granary/granary.h>

#define CHAT_KEEP 50
#define CHAT_KEEP_TIDY 10
#define CHAT_TEXT_MAX 500
#define CHAT_NAME_MAX 64

/* ---- Filter: a stateless worker ---- */

static void filter_check(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    if (len == 0 || len > CHAT_TEXT_MAX) {
        gr_reply_error(m, "a message is 1..500 bytes");
        return;
    }
    char *out = malloc(len);
    if (!out) {
        gr_reply_error(m, "out of memory");
        return;
    }
    memcpy(out, arg, len);
    static const char *const banned[] = {"darn", "heck", NULL};
    for (int b = 0; banned[b]; b++) {
        size_t bl = strlen(banned[b]);
        for (size_t i = 0; i + bl <= len; i++)
            if (!memcmp(out + i, banned[b], bl)) memset(out + i, '*', bl);
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 32) out[i] = ' '; /* one message, one line */
    gr_reply(m, out, len);
    free(out);
}

static const gr_method_t filter_methods[] = {{"check", filter_check}, {NULL, NULL}};
const gr_class_t filter_class = {
    .name = "Filter", .methods = filter_methods, .flags = GR_CLASS_STATELESS_WORKER, .max_workers = 4};

/* ---- Inbox: one per member ---- */

static void inbox_deliver(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    char *next = malloc(n + len + 1);
    if (!next) {
        gr_reply_error(m, "out of memory");
        return;
    }
    if (n) memcpy(next, s, n);
    memcpy(next + n, arg, len);
    next[n + len] = '\n';
    int rc = gr_state_set(g, next, n + len + 1);
    free(next);
    if (rc != 0)
        gr_reply_error(m, gr_strerror(rc));
    else
        gr_reply(m, "ok", 2);
}

static void inbox_read(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    char *copy = n ? malloc(n) : NULL;
    if (n && !copy) {
        gr_reply_error(m, "out of memory");
        return;
    }
    if (n) memcpy(copy, s, n);
    int rc = gr_state_clear(g);
    if (rc != 0)
        gr_reply_error(m, gr_strerror(rc));
    else
        gr_reply(m, copy, n); /* persisted (the clear) before it leaves */
    free(copy);
}

static const gr_method_t inbox_methods[] = {{"deliver", inbox_deliver}, {"read", inbox_read}, {NULL, NULL}};
const gr_class_t inbox_class = {
    .name = "Inbox", .methods = inbox_methods, .flags = GR_CLASS_PERSIST_BEFORE_REPLY};

/* ---- Room ----
 * State, as text: "tidied K\n", then "m NAME\n" per member, then "h TEXT\n"
 * per message kept (oldest first). Parsed into a room_t for each call. */

typedef struct {
    long tidied;
    char members[64][CHAT_NAME_MAX + 1];
    int n_members;
    char *history[CHAT_KEEP];
    int n_history;
} room_t;

static void room_free(room_t *r) {
    for (int i = 0; i < r->n_history; i++)
        free(r->history[i]);
    r->n_history = 0;
}

static void room_load(gr_grain_t *g, room_t *r) {
    memset(r, 0, sizeof *r);
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    size_t o = 0;
    while (o < n) {
        const uint8_t *nl = memchr(s + o, '\n', n - o);
        size_t ll = nl ? (size_t)(nl - (s + o)) : n - o;
        const char *line = (const char *)s + o;
        if (ll > 7 && !memcmp(line, "tidied ", 7)) {
            r->tidied = strtol(line + 7, NULL, 10);
        } else if (ll > 2 && line[0] == 'm' && line[1] == ' ' && r->n_members < 64 &&
                   ll - 2 <= CHAT_NAME_MAX) {
            memcpy(r->members[r->n_members], line + 2, ll - 2);
            r->members[r->n_members++][ll - 2] = '\0';
        } else if (ll > 2 && line[0] == 'h' && line[1] == ' ' && r->n_history < CHAT_KEEP) {
            char *h = malloc(ll - 1);
            if (h) {
                memcpy(h, line + 2, ll - 2);
                h[ll - 2] = '\0';
                r->history[r->n_history++] = h;
            }
        }
        o += ll + 1;
    }
}

static int room_save(gr_grain_t *g, const room_t *r) {
    size_t cap = 32 + (size_t)r->n_members * (CHAT_NAME_MAX + 3);
    for (int i = 0; i < r->n_history; i++)
        cap += strlen(r->history[i]) + 3;
    char *out = malloc(cap);
    if (!out) return GR_ENOMEM;
    size_t o = (size_t)snprintf(out, cap, "tidied %ld\n", r->tidied);
    for (int i = 0; i < r->n_members; i++)
        o += (size_t)snprintf(out + o, cap - o, "m %s\n", r->members[i]);
    for (int i = 0; i < r->n_history; i++)
        o += (size_t)snprintf(out + o, cap - o, "h %s\n", r->history[i]);
    int rc = gr_state_set(g, out, o);
    free(out);
    return rc;
}

static int member_index(const room_t *r, const char *name) {
    for (int i = 0; i < r->n_members; i++)
        if (!strcmp(r->members[i], name)) return i;
    return -1;
}

static uint64_t tidy_ms(void) {
    const char *e = getenv("CHAT_TIDY_MS");
    uint64_t v = e ? strtoull(e, NULL, 10) : 0;
    return v ? v : 3600000u;
}

static int name_arg(const uint8_t *arg, size_t len, char *out) {
    if (len == 0 || len > CHAT_NAME_MAX || memchr(arg, '\n', len) || memchr(arg, 0, len)) return -1;
    memcpy(out, arg, len);
    out[len] = '\0';
    return 0;
}

static void room_join(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    char name[CHAT_NAME_MAX + 1];
    if (name_arg(arg, len, name) != 0) {
        gr_reply_error(m, "join: a name is 1..64 bytes, one line");
        return;
    }
    room_t r;
    room_load(g, &r);
    int rc = 0;
    if (member_index(&r, name) < 0) {
        if (r.n_members == 64) {
            room_free(&r);
            gr_reply_error(m, "join: the room is full (64 members)");
            return;
        }
        snprintf(r.members[r.n_members++], CHAT_NAME_MAX + 1, "%s", name);
        rc = room_save(g, &r);
        /* The room's housekeeping: durable, fired by whichever silo owns
         * the room's range, even when the room is not active. Insert or
         * replace, so joining again costs one row write. */
        if (rc == 0 && r.n_members == 1)
            rc = gr_reminder_register(g, "tidy", tidy_ms(), tidy_ms(), NULL, NULL);
    }
    room_free(&r);
    if (rc != 0)
        gr_reply_error(m, gr_strerror(rc));
    else
        gr_reply(m, "ok", 2);
}

static void room_leave(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    char name[CHAT_NAME_MAX + 1];
    if (name_arg(arg, len, name) != 0) {
        gr_reply_error(m, "leave: a name is 1..64 bytes, one line");
        return;
    }
    room_t r;
    room_load(g, &r);
    int i = member_index(&r, name), rc = 0;
    if (i >= 0) {
        memmove(r.members[i], r.members[i + 1], (size_t)(r.n_members - i - 1) * sizeof r.members[0]);
        r.n_members--;
        rc = room_save(g, &r);
    }
    room_free(&r);
    if (rc != 0)
        gr_reply_error(m, gr_strerror(rc));
    else
        gr_reply(m, i >= 0 ? "ok" : "not a member", i >= 0 ? 2 : 12);
}

/* One post in flight: the filter's answer, then the deliveries. */
typedef struct {
    gr_grain_t *g;
    gr_msg_t *m;
    char sender[CHAT_NAME_MAX + 1];
    int pending, delivered, failed;
} post_t;

static void post_delivered(void *ud, int status, const uint8_t *reply, size_t len) {
    post_t *p = ud;
    if (status == 0)
        p->delivered++;
    else
        p->failed++;
    if (--p->pending) return;
    char out[64];
    int n = snprintf(out, sizeof out, "delivered %d", p->delivered);
    if (p->failed) n += snprintf(out + n, sizeof out - (size_t)n, " (%d inboxes failed)", p->failed);
    gr_reply(p->m, out, (size_t)n);
    free(p);
}

static void post_filtered(void *ud, int status, const uint8_t *text, size_t len) {
    post_t *p = ud;
    if (status != 0) {
        char why[160];
        snprintf(why, sizeof why, "post refused: %.*s", (int)(len < 120 ? len : 120), (const char *)text);
        gr_reply_error(p->m, why);
        free(p);
        return;
    }
    room_t r;
    room_load(p->g, &r);
    char *line = malloc(strlen(p->sender) + 2 + len + 1);
    if (!line) {
        room_free(&r);
        gr_reply_error(p->m, "out of memory");
        free(p);
        return;
    }
    int ll = sprintf(line, "%s: %.*s", p->sender, (int)len, (const char *)text);
    if (r.n_history == CHAT_KEEP) { /* keep the newest */
        free(r.history[0]);
        memmove(r.history, r.history + 1, (CHAT_KEEP - 1) * sizeof r.history[0]);
        r.n_history--;
    }
    r.history[r.n_history++] = line;
    int rc = room_save(p->g, &r);
    if (rc != 0) {
        room_free(&r);
        gr_reply_error(p->m, gr_strerror(rc));
        free(p);
        return;
    }
    /* Fan out to every member's inbox (the sender's too: its copy is the
     * acknowledgement that the room kept it), in parallel. */
    p->pending = r.n_members;
    for (int i = 0; i < r.n_members; i++) {
        gr_ref_t to = {"Inbox", r.members[i], strlen(r.members[i])};
        if (gr_grain_call(p->g, &to, "deliver", line, (size_t)ll, 0, post_delivered, p) != 0)
            post_delivered(p, GR_ENOMEM, NULL, 0);
    }
    room_free(&r);
}

static void room_post(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *colon = len ? memchr(arg, ':', len) : NULL;
    char sender[CHAT_NAME_MAX + 1];
    if (!colon || name_arg(arg, (size_t)(colon - arg), sender) != 0) {
        gr_reply_error(m, "post: expected \"NAME: TEXT\"");
        return;
    }
    room_t r;
    room_load(g, &r);
    int member = member_index(&r, sender) >= 0;
    room_free(&r);
    if (!member) {
        gr_reply_error(m, "post: join the room first");
        return;
    }
    post_t *p = calloc(1, sizeof *p);
    if (!p) {
        gr_reply_error(m, "out of memory");
        return;
    }
    p->g = g;
    p->m = m;
    snprintf(p->sender, sizeof p->sender, "%s", sender);
    const uint8_t *text = colon + 1;
    size_t tl = len - (size_t)(colon + 1 - arg);
    while (tl && *text == ' ')
        text++, tl--;
    /* Any key: each silo serves Filter locally with up to max_workers. */
    gr_ref_t filter = {"Filter", "any", 3};
    if (gr_grain_call(g, &filter, "check", text, tl, 0, post_filtered, p) != 0) {
        free(p);
        gr_reply_error(m, "out of memory");
    }
}

static void room_history(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    room_t r;
    room_load(g, &r);
    size_t cap = 1;
    for (int i = 0; i < r.n_history; i++)
        cap += strlen(r.history[i]) + 1;
    char *out = malloc(cap);
    size_t o = 0;
    for (int i = 0; out && i < r.n_history; i++)
        o += (size_t)sprintf(out + o, "%s\n", r.history[i]);
    if (out)
        gr_reply(m, out, o);
    else
        gr_reply_error(m, "out of memory");
    free(out);
    room_free(&r);
}

static void room_stats(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    room_t r;
    room_load(g, &r);
    char out[96];
    int n = snprintf(out, sizeof out, "members=%d kept=%d tidied=%ld", r.n_members, r.n_history, r.tidied);
    room_free(&r);
    gr_reply(m, out, (size_t)n);
}

static void room_reminder(gr_grain_t *g, gr_msg_t *m, const char *name) {
    if (strcmp(name, "tidy") != 0) {
        gr_reply(m, NULL, 0); /* not ours (any more): acknowledge */
        return;
    }
    room_t r;
    room_load(g, &r);
    int drop = r.n_history > CHAT_KEEP_TIDY ? r.n_history - CHAT_KEEP_TIDY : 0;
    for (int i = 0; i < drop; i++)
        free(r.history[i]);
    memmove(r.history, r.history + drop, (size_t)(r.n_history - drop) * sizeof r.history[0]);
    r.n_history -= drop;
    r.tidied++;
    int rc = room_save(g, &r);
    room_free(&r);
    if (rc != 0)
        gr_reply_error(m, gr_strerror(rc)); /* not acknowledged: it fires again */
    else
        gr_reply(m, NULL, 0);
}

static const gr_method_t room_methods[] = {{"join", room_join},   {"leave", room_leave},
                                           {"post", room_post},   {"history", room_history},
                                           {"stats", room_stats}, {NULL, NULL}};
static const char *const room_read_only[] = {"history", "stats", NULL};
const gr_class_t room_class = {.name = "Room",
                               .methods = room_methods,
                               .flags = GR_CLASS_PERSIST_BEFORE_REPLY,
                               .on_reminder = room_reminder,
                               .read_only = room_read_only};

const gr_class_t *const *granary_grains(void);
const gr_class_t *const *granary_grains(void) {
    static const gr_class_t *const classes[] = {&room_class, &inbox_class, &filter_class, NULL};
    return classes;
}
