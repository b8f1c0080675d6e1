/* src/admin/procstats.c - see procstats.h. Linux: /proc/self for memory and file
 * descriptors; libuv for CPU time and the resident set. */
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <uv.h>

#include "admin/procstats.h"

#ifndef GR_VERSION_STRING
#define GR_VERSION_STRING "unknown"
#endif

static long gr__count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the descriptor opendir itself holds */
}

static long long gr__vm_size_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long long pages = -1;
    if (fscanf(f, "%lld", &pages) != 1) pages = -1;
    fclose(f);
    return pages < 0 ? -1 : pages * 4096LL;
}

int gr__procstats_write(gr__buf_t *b, double start_time_s) {
    int rc = 0;
    uv_rusage_t ru;
    if (uv_getrusage(&ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        rc |= gr__buf_printf(
            b,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n",
            cpu);
    }
    size_t rss = 0;
    if (uv_resident_set_memory(&rss) == 0)
        rc |=
            gr__buf_printf(b,
                           "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                           "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %zu\n",
                           rss);
    long long vm = gr__vm_size_bytes();
    if (vm >= 0)
        rc |= gr__buf_printf(b,
                             "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                             "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %lld\n",
                             vm);
    long fds = gr__count_fds();
    if (fds >= 0)
        rc |= gr__buf_printf(b,
                             "# HELP process_open_fds Number of open file descriptors.\n"
                             "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
                             fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        rc |= gr__buf_printf(b,
                             "# HELP process_max_fds Maximum number of open file descriptors.\n"
                             "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
                             (unsigned long long)rl.rlim_cur);
    rc |= gr__buf_printf(
        b,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n"
        "# HELP granary_build_info The Granary version this silo runs (the value is always 1).\n"
        "# TYPE granary_build_info gauge\ngranary_build_info{version=\"%s\"} 1\n",
        start_time_s, GR_VERSION_STRING);
    return rc ? GR_ENOMEM : 0;
}
