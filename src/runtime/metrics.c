/* src/runtime/metrics.c - the runtime's counters as Prometheus text and
 * per class/method for the dashboard. */
#include "runtime/runtime_internal.h"

/* ---- metrics (Prometheus text) ---- */

/* One counter family with a sample per class and method: calls, or errors. */
static int gr__write_method_counter(const gr_runtime_t *rt, gr__buf_t *b, const char *name, const char *help,
                                    int errors) {
    int rc = gr__buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        for (size_t i = 0; i < e->n_methods; i++)
            rc |= gr__buf_printf(b, "%s{class=\"%s\",method=\"%s\"} %llu\n", name, e->cls->name,
                                 e->cls->methods[i].name,
                                 (unsigned long long)(errors ? e->errors[i] : e->calls[i]));
    return rc;
}

int gr__runtime_write_metrics(const gr_runtime_t *rt, gr__buf_t *b) {
    int rc = 0;
    const gr__class_entry_t *e;
    rc |= gr__buf_printf(b, "# HELP granary_activations Live activations by class.\n"
                            "# TYPE granary_activations gauge\n");
    for (e = rt->classes; e; e = e->hh.next)
        rc |= gr__buf_printf(b, "granary_activations{class=\"%s\"} %llu\n", e->cls->name,
                             (unsigned long long)e->active);
    rc |=
        gr__write_method_counter(rt, b, "granary_calls_total", "Calls served here, by class and method.", 0);
    rc |= gr__write_method_counter(rt, b, "granary_call_errors_total",
                                   "Calls served here that returned an error.", 1);
    rc |= gr__buf_printf(b, "# HELP granary_call_duration_seconds From acceptance to reply (after commit for "
                            "persist-before-reply).\n"
                            "# TYPE granary_call_duration_seconds histogram\n");
    for (e = rt->classes; e; e = e->hh.next) {
        char labels[GR_CLASS_NAME_MAX + 16];
        snprintf(labels, sizeof labels, "class=\"%s\"", e->cls->name);
        gr__hist_t sum;
        memset(&sum, 0, sizeof sum);
        for (size_t i = 0; i < e->n_methods; i++)
            gr__hist_add(&sum, &e->latency[i]);
        rc |= gr__hist_write(&sum, b, "granary_call_duration_seconds", labels);
    }
    const gr__runtime_stats_t *s = &rt->stats;
    rc |= gr__buf_printf(
        b,
        "# HELP granary_activation_limit Activations kept at most (--max-activations; 0: no limit).\n"
        "# TYPE granary_activation_limit gauge\ngranary_activation_limit %u\n"
        "# HELP granary_memory_limit_bytes Resident memory kept under (--memory-limit; 0: no limit).\n"
        "# TYPE granary_memory_limit_bytes gauge\ngranary_memory_limit_bytes %llu\n"
        "# HELP granary_activations_evicted_total Activations deactivated early at the memory bounds.\n"
        "# TYPE granary_activations_evicted_total counter\ngranary_activations_evicted_total %llu\n"
        "# HELP granary_activations_refused_total New activations refused at the memory bounds "
        "(GR_EOVERLOAD).\n# TYPE granary_activations_refused_total counter\n"
        "granary_activations_refused_total %llu\n",
        rt->opts.max_activations, (unsigned long long)rt->opts.memory_limit, (unsigned long long)s->evicted,
        (unsigned long long)s->refused);
    rc |= gr__buf_printf(
        b,
        "# HELP granary_migrations_total Live migrations of activations (docs/migration.md), by direction "
        "and result: out ok (handed over), in ok (taken over), out refused (the target refused before "
        "anything moved; the activation stayed or was deactivated), out failed (outcome unknown; dropped "
        "here without saving).\n# TYPE granary_migrations_total counter\n"
        "granary_migrations_total{direction=\"out\",result=\"ok\"} %llu\n"
        "granary_migrations_total{direction=\"in\",result=\"ok\"} %llu\n"
        "granary_migrations_total{direction=\"out\",result=\"refused\"} %llu\n"
        "granary_migrations_total{direction=\"out\",result=\"failed\"} %llu\n"
        "# HELP granary_migrations_in_flight Activations on their way to another silo.\n"
        "# TYPE granary_migrations_in_flight gauge\ngranary_migrations_in_flight %u\n",
        (unsigned long long)s->migrated_out, (unsigned long long)s->migrated_in,
        (unsigned long long)s->migrate_refused, (unsigned long long)s->migrate_failed, rt->mig_in_flight);
    size_t queued = 0;
    for (const gr_grain_t *g = rt->grains; g; g = g->hh.next)
        queued += g->mb_len;
    rc |= gr__buf_printf(
        b,
        "# HELP granary_calls_accepted_total Calls accepted by the runtime.\n# TYPE "
        "granary_calls_accepted_total counter\ngranary_calls_accepted_total %llu\n"
        "# HELP granary_calls_failed_total Calls completed with an error status.\n# TYPE "
        "granary_calls_failed_total counter\ngranary_calls_failed_total %llu\n"
        "# HELP granary_late_replies_total Replies dropped because the caller had timed out.\n# TYPE "
        "granary_late_replies_total counter\ngranary_late_replies_total %llu\n"
        "# HELP granary_call_cycles_total Calls failed with GR_EDEADLOCK: a call cycle back to a busy, "
        "non-reentrant grain.\n"
        "# TYPE granary_call_cycles_total counter\ngranary_call_cycles_total %llu\n"
        "# HELP granary_activations_total Activations created.\n# TYPE granary_activations_total "
        "counter\ngranary_activations_total %llu\n"
        "# HELP granary_deactivations_total Activations finished.\n# TYPE granary_deactivations_total "
        "counter\ngranary_deactivations_total %llu\n"
        "# HELP granary_storage_reads_total State loads and activation claims (activations).\n# TYPE "
        "granary_storage_reads_total counter\ngranary_storage_reads_total %llu\n"
        "# HELP granary_claims_refused_total Storage reads whose claim another silo held (no state "
        "loaded; the calls went there).\n# TYPE granary_claims_refused_total counter\n"
        "granary_claims_refused_total %llu\n"
        "# HELP granary_storage_writes_total State writes.\n# TYPE granary_storage_writes_total "
        "counter\ngranary_storage_writes_total %llu\n"
        "# HELP granary_storage_conflicts_total State writes refused by the version check.\n# TYPE "
        "granary_storage_conflicts_total counter\ngranary_storage_conflicts_total %llu\n"
        "# HELP granary_storage_errors_total Storage operations that failed.\n# TYPE "
        "granary_storage_errors_total counter\ngranary_storage_errors_total %llu\n"
        "# HELP granary_queued_messages Calls waiting in grain mailboxes.\n"
        "# TYPE granary_queued_messages gauge\ngranary_queued_messages %zu\n"
        "# HELP granary_drain_remaining Activations left to deactivate (0 unless draining).\n"
        "# TYPE granary_drain_remaining gauge\ngranary_drain_remaining %zu\n",
        (unsigned long long)s->calls, (unsigned long long)s->calls_failed,
        (unsigned long long)s->late_replies, (unsigned long long)s->deadlocks,
        (unsigned long long)s->activations, (unsigned long long)s->deactivations,
        (unsigned long long)s->storage_reads, (unsigned long long)s->claims_refused,
        (unsigned long long)s->storage_writes,
        (unsigned long long)s->storage_conflicts, (unsigned long long)s->storage_errors, queued,
        rt->draining ? rt->n_grains : (size_t)0);
    rc |= gr__buf_printf(
        b,
        "# HELP granary_idempotent_replays_total Keyed calls answered from the reply log "
        "without running (a retry of a call that had run).\n"
        "# TYPE granary_idempotent_replays_total counter\ngranary_idempotent_replays_total %llu\n"
        "# HELP granary_idempotent_waits_total Keyed calls that waited for the running call "
        "with their key.\n"
        "# TYPE granary_idempotent_waits_total counter\ngranary_idempotent_waits_total %llu\n",
        (unsigned long long)s->idem_replays, (unsigned long long)s->idem_waits);
    rc |= gr__buf_printf(b, "# HELP granary_storage_read_duration_seconds Latency of state loads (claim and "
                            "read).\n# TYPE granary_storage_read_duration_seconds histogram\n");
    rc |= gr__hist_write(&rt->read_latency, b, "granary_storage_read_duration_seconds", "");
    rc |= gr__buf_printf(b, "# HELP granary_storage_write_duration_seconds Latency of state writes.\n# TYPE "
                            "granary_storage_write_duration_seconds histogram\n");
    rc |= gr__hist_write(&rt->write_latency, b, "granary_storage_write_duration_seconds", "");
    return rc ? GR_ENOMEM : 0;
}

void gr__runtime_foreach_class(const gr_runtime_t *rt, void (*fn)(void *ud, const char *cls, uint64_t active),
                               void *ud) {
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        fn(ud, e->cls->name, e->active);
}

const gr_class_t *gr__runtime_class_at(const gr_runtime_t *rt, size_t i) {
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        if (i-- == 0) return e->cls;
    return NULL;
}

void gr__runtime_foreach_method(const gr_runtime_t *rt, void (*fn)(void *ud, const gr__method_stats_t *ms),
                                void *ud) {
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        for (size_t i = 0; i < e->n_methods; i++) {
            gr__method_stats_t ms = {
                e->cls->name, e->cls->methods[i].name, e->read_only[i], e->interleave[i], e->calls[i],
                e->errors[i], &e->latency[i]};
            fn(ud, &ms);
        }
}

int gr__runtime_read_only(gr_runtime_t *rt, const char *cls, const char *method) {
    gr__class_entry_t *e = NULL;
    HASH_FIND_STR(rt->classes, cls, e);
    if (!e) return GR_ENOCLASS;
    const gr_method_t *m = gr__find_method(e->cls, method);
    if (!m) return GR_ENOMETHOD;
    return e->read_only[m - e->cls->methods];
}
