/* src/admin/procstats.h - the standard Prometheus process metrics (process_*) and
 * granary_build_info, for /metrics. */
#ifndef GR_SILO_PROCSTATS_H
#define GR_SILO_PROCSTATS_H

#include "base/base.h"

/* Append process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds and granary_build_info{version="..."} to b,
 * each with # HELP and # TYPE. start_time_s: the process's start (Unix
 * seconds). 0, or GR_ENOMEM. A value the system cannot give (no /proc) is
 * left out with its family, never written as a guess. */
int gr__procstats_write(gr__buf_t *b, double start_time_s);

#endif
