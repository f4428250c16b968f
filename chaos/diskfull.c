#include "chaos/diskfull.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILLER "chaos-filler"

int chaos_disk_check(char *why, size_t cap)
{
    char dir[] = "/tmp/keel-chaos-diskXXXXXX";

    if (geteuid() != 0) {
        snprintf(why, cap, "not root (mounting a small file system for a "
                           "node's data needs CAP_SYS_ADMIN)");
        return -1;
    }
    if (mkdtemp(dir) == NULL) {
        snprintf(why, cap, "cannot make a directory in /tmp: %s",
                 strerror(errno));
        return -1;
    }
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0) {
        snprintf(why, cap, "cannot mount a tmpfs (%s: no rights in this "
                           "container?)",
                 strerror(errno));
        rmdir(dir);
        return -1;
    }
    umount2(dir, MNT_DETACH);
    rmdir(dir);
    return 0;
}

int chaos_disk_mount(const char *dir, size_t bytes, char *err, size_t cap)
{
    char opts[64];

    snprintf(opts, sizeof opts, "size=%zu,mode=0755", bytes);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, cap, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
        snprintf(err, cap, "cannot mount a tmpfs at %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

void chaos_disk_umount(const char *dir)
{
    umount2(dir, MNT_DETACH);
}

int chaos_disk_fill(const char *dir, size_t *filled)
{
    static const char zeros[1 << 16];
    char path[1024];
    size_t n = 0;
    int fd, k;

    *filled = 0;
    snprintf(path, sizeof path, "%s/" FILLER, dir);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    /* Bounded by the file system's size: it refuses once full. */
    while (n <= CHAOS_DISK_BYTES) {
        ssize_t w = write(fd, zeros, sizeof zeros);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            break;
        }
        n += (size_t)w;
    }
    /* The last bytes: smaller writes take what is left of a page. */
    for (k = 0; k < 256; k++) {
        ssize_t w = write(fd, zeros, 512);
        if (w <= 0)
            break;
        n += (size_t)w;
    }
    close(fd);
    *filled = n;
    return 0;
}

void chaos_disk_free(const char *dir)
{
    char path[1024];

    snprintf(path, sizeof path, "%s/" FILLER, dir);
    unlink(path);
}
