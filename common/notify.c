/* Service manager notification: see common/notify.h. */
#include "common/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"

int keel_notify_init(keel_notify *n)
{
    const char *name = getenv("NOTIFY_SOCKET");
    size_t len;

    n->fd = -1;
    n->addrlen = 0;
    memset(&n->addr, 0, sizeof n->addr);
    if (name == NULL || name[0] == '\0')
        return 0;
    len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof n->addr.sun_path)
        return KEEL_EINVAL;
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, name, len);
    if (name[0] == '@') {
        /* Abstract: a leading NUL, and the length counts exactly the
         * name's bytes (no terminator: it would be part of the name). */
        n->addr.sun_path[0] = '\0';
        n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        n->addrlen =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0)
        return KEEL_EIO;
    return 0;
}

int keel_notify_on(const keel_notify *n)
{
    return n->fd >= 0;
}

int keel_notify_send(const keel_notify *n, const char *msg)
{
    int saved = errno, rc = 0;
    ssize_t sent;

    if (n->fd < 0)
        return 0;
    do {
        sent = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL,
                      (const struct sockaddr *)&n->addr, n->addrlen);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        rc = -1;
    errno = saved;
    return rc;
}

void keel_notify_close(keel_notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}

uint64_t keel_notify_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    unsigned long long v;
    char *end;

    if (us == NULL || *us < '0' || *us > '9')
        return 0;
    /* The variables may be inherited from a parent that the service
     * manager watches: they are ours only with our pid or none. */
    if (pid != NULL && *pid != '\0') {
        unsigned long long p;
        errno = 0;
        p = strtoull(pid, &end, 10);
        if (errno != 0 || *end != '\0' || p != (unsigned long long)getpid())
            return 0;
    }
    errno = 0;
    v = strtoull(us, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    return v;
}
