/* The service manager's notification protocol (systemd's sd_notify, used
 * by units of Type=notify): one datagram of NAME=VALUE lines, such as
 * "READY=1" or "STATUS=joining its cluster", sent to the AF_UNIX socket
 * that $NOTIFY_SOCKET names. A name that starts with '@' is in the
 * abstract namespace.
 *
 * Our own few lines rather than libsystemd's sd_notify: the protocol is a
 * socket and one sendto, documented as stable, and keel then builds and
 * runs the same where systemd is absent, with one dependency less. */
#ifndef KEEL_COMMON_NOTIFY_H
#define KEEL_COMMON_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct keel_notify {
    int fd; /* -1: off (no $NOTIFY_SOCKET) */
    struct sockaddr_un addr;
    socklen_t addrlen;
} keel_notify;

/* Opens the socket named by $NOTIFY_SOCKET. Without the variable, or with
 * an empty one, notification is off: returns 0 and keel_notify_send does
 * nothing. Errors (n is then off too): KEEL_EINVAL (the value is neither
 * an absolute path nor '@' and a name, or is too long for a socket
 * address), KEEL_EIO (no socket; errno says why). */
int keel_notify_init(keel_notify *n);

/* Sends msg, "NAME=VALUE" lines separated by '\n', as one datagram.
 * 0 when sent or when notification is off, else -1 (the service manager
 * is gone or its queue is full: nothing to do about it, the caller goes
 * on). Async-signal-safe: a sendto, errno preserved. */
int keel_notify_send(const keel_notify *n, const char *msg);

/* Whether notification is on. */
int keel_notify_on(const keel_notify *n);

void keel_notify_close(keel_notify *n);

/* The watchdog interval the service manager asks for, in microseconds:
 * $WATCHDOG_USEC, when it is a number > 0 and $WATCHDOG_PID is unset or
 * this process's id; else 0 (no watchdog). */
uint64_t keel_notify_watchdog_usec(void);

#endif
