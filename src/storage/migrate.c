/* src/storage/migrate.c - the schema migrator behind `silo migrate`.
 * Migrations are numbered files in sql/, embedded at build time; the table
 * granary_schema_version records which ones ran. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "granary/storage.h"
#include "sql_migrations.h" /* generated: gr__migrations[], gr__migrations_count */

/* Any fixed 64-bit number names the lock; this one spells "granary". */
#define GR__MIGRATE_LOCK "7453010373645639217"

static int gr__exec(PGconn *c, const char *sql, char *err, size_t err_size) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) snprintf(err, err_size, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : GR_ESTORAGE;
}

int gr_storage_pg_schema_version(void) {
    return gr__migrations_count ? gr__migrations[gr__migrations_count - 1].version : 0;
}

int gr_storage_pg_migrate(const char *conninfo, FILE *out, char *err, size_t err_size) {
    char spare[8];
    if (!err || !err_size) { /* the caller does not want the message: keep it somewhere */
        err = spare;
        err_size = sizeof spare;
    }
    if (!conninfo) {
        snprintf(err, err_size, "no database given");
        return GR_EINVAL;
    }
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, err_size, "cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return GR_ESTORAGE;
    }
    int rc = gr__exec(c, "SET client_min_messages = warning", err, err_size);
    for (size_t i = 0; rc == 0 && i < gr__migrations_count; i++) {
        const struct gr__migration *m = &gr__migrations[i];
        rc = gr__exec(c, "BEGIN", err, err_size);
        if (rc == 0) rc = gr__exec(c, "SELECT pg_advisory_xact_lock(" GR__MIGRATE_LOCK ")", err, err_size);
        if (rc == 0)
            rc = gr__exec(c,
                          "CREATE TABLE IF NOT EXISTS granary_schema_version ("
                          " version integer PRIMARY KEY, name text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now())",
                          err, err_size);
        if (rc != 0) break;
        char ver[16];
        snprintf(ver, sizeof ver, "%d", m->version);
        const char *p[2] = {ver, m->name};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM granary_schema_version WHERE version = $1", 1, NULL, p,
                                   NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, err_size, "%s", PQresultErrorMessage(r));
            PQclear(r);
            rc = GR_ESTORAGE;
            break;
        }
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done) {
            rc = gr__exec(c, "COMMIT", err, err_size);
            if (out) fprintf(out, "migration %03d %s: already applied\n", m->version, m->name);
            continue;
        }
        rc = gr__exec(c, m->sql, err, err_size);
        if (rc == 0) {
            r = PQexecParams(c, "INSERT INTO granary_schema_version (version, name) VALUES ($1, $2)", 2, NULL,
                             p, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                snprintf(err, err_size, "%s", PQresultErrorMessage(r));
                rc = GR_ESTORAGE;
            }
            PQclear(r);
        }
        if (rc == 0) rc = gr__exec(c, "COMMIT", err, err_size);
        if (rc != 0) {
            char ignore[8];
            gr__exec(c, "ROLLBACK", ignore, sizeof ignore);
            char tmp[512];
            snprintf(tmp, sizeof tmp, "migration %03d %s failed: %s", m->version, m->name, err);
            snprintf(err, err_size, "%s", tmp);
            break;
        }
        if (out) fprintf(out, "migration %03d %s: applied\n", m->version, m->name);
    }
    PQfinish(c);
    /* Trailing newlines from libpq make log lines ragged. */
    if (rc != 0) {
        size_t n = strlen(err);
        while (n && err[n - 1] == '\n')
            err[--n] = '\0';
    }
    return rc;
}
