/* See runtime/procstat.h. */
#include "runtime/procstat.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Resident pages, from the second field of /proc/self/statm. */
static void sample_rss(keel_procstat *p)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size, resident;
    long page = sysconf(_SC_PAGESIZE);

    if (f == NULL)
        return;
    if (fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0) {
        p->rss_bytes = (uint64_t)resident * (uint64_t)page;
        p->have_rss = 1;
    }
    fclose(f);
}

/* Entries of /proc/self/fd, less the one reading it. */
static void sample_fds(keel_procstat *p)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    uint64_t n = 0;
    struct rlimit rl;

    if (d != NULL) {
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.')
                n++;
        closedir(d);
        p->open_fds = n > 0 ? n - 1 : 0;
        p->have_fds = 1;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        p->max_fds = (uint64_t)rl.rlim_cur;
        p->have_max_fds = 1;
    }
}

/* Field 22 of /proc/self/stat (start time in clock ticks after boot),
 * plus btime of /proc/stat (boot, Unix time). The command name, field 2,
 * may hold blanks and parentheses: fields are counted after its last
 * ')'. */
static void sample_start(keel_procstat *p)
{
    char buf[1024], line[256];
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long ticks = 0, btime = 0;
    long hz = sysconf(_SC_CLK_TCK);
    size_t len;
    const char *s;
    int field, ok = 0;

    if (f == NULL)
        return;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    s = strrchr(buf, ')');
    if (s == NULL || hz <= 0)
        return;
    /* s points at field 2's end; field 3 follows after a blank. */
    for (field = 2; *s != '\0' && field < 22; s++)
        if (*s == ' ')
            field++;
    if (field == 22 && sscanf(s, "%llu", &ticks) == 1)
        ok = 1;
    f = fopen("/proc/stat", "r");
    if (f == NULL || !ok)
        ok = 0;
    else {
        ok = 0;
        while (fgets(line, sizeof line, f) != NULL)
            if (sscanf(line, "btime %llu", &btime) == 1) {
                ok = 1;
                break;
            }
    }
    if (f != NULL)
        fclose(f);
    if (ok) {
        p->start_time_s = (double)btime + (double)ticks / (double)hz;
        p->have_start = 1;
    }
}

static void sample_cpu(keel_procstat *p)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return;
    p->cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    p->have_cpu = 1;
}

/* The file system's room, and the blocks the directory's own files
 * take (the store keeps its files at the top of it). */
static void sample_disk(const char *dir, keel_procstat *p)
{
    struct statvfs vfs;
    DIR *d;
    struct dirent *de;
    uint64_t bytes = 0;
    int dfd;

    if (statvfs(dir, &vfs) == 0) {
        p->disk_free = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        p->disk_size = (uint64_t)vfs.f_blocks * (uint64_t)vfs.f_frsize;
        p->have_disk = 1;
    }
    if ((d = opendir(dir)) == NULL)
        return;
    dfd = dirfd(d);
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode))
            bytes += (uint64_t)st.st_blocks * 512u;
    }
    closedir(d);
    p->dir_bytes = bytes;
    p->have_dir = 1;
}

void keel__procstat(const char *data_dir, keel_procstat *out)
{
    memset(out, 0, sizeof *out);
    sample_rss(out);
    sample_fds(out);
    sample_start(out);
    sample_cpu(out);
    if (data_dir != NULL)
        sample_disk(data_dir, out);
}
