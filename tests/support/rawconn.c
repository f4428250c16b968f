/* Raw wire connections for tests (rawconn.h). */
#include "rawconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "runtime/proto.h"
#include "testutil.h"
#include "proc.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int tu_raw_connect_bare_from(const char *from, int port)
{
    struct sockaddr_in sin;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (from != NULL) {
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        inet_pton(AF_INET, from, &sin.sin_addr);
        if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
            close(fd);
            return -1;
        }
    }
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int tu_raw_connect_bare(int port)
{
    return tu_raw_connect_bare_from(NULL, port);
}

int tu_http_healthz(const char *from, int port)
{
    static const char req[] =
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char buf[256];
    int fd = tu_raw_connect_bare_from(from, port), ok = 0;
    ssize_t r;

    if (fd < 0)
        return 0;
    if (tu_send_all(fd, req, sizeof req - 1) == 0 &&
        tu_wait_readable(fd, 3000)) {
        r = recv(fd, buf, sizeof buf - 1, 0);
        if (r > 0) {
            buf[r] = '\0';
            ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
        }
    }
    close(fd);
    return ok;
}

int tu_raw_connect_from(const char *from, int port)
{
    uint8_t hello[KEEL_HELLO_LEN];
    int fd = tu_raw_connect_bare_from(from, port);

    keel_hello_encode(hello, KEEL_PROTO_VERSION);
    if (fd >= 0 && tu_send_all(fd, hello, sizeof hello) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int tu_raw_connect(int port)
{
    return tu_raw_connect_from(NULL, port);
}

int tu_send_all(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;

    while (len > 0) {
        ssize_t w = send(fd, b, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        len -= (size_t)w;
    }
    return 0;
}

int tu_wait_readable(int fd, int ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int rc;

    do
        rc = poll(&pfd, 1, ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
}

int tu_read_exact(int fd, void *p, size_t len, int ms)
{
    uint8_t *b = p;
    double deadline = now_s() + ms / 1000.0;

    while (len > 0) {
        int left = (int)((deadline - now_s()) * 1000);
        ssize_t r;

        if (left <= 0 || !tu_wait_readable(fd, left))
            return -1;
        r = recv(fd, b, len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        b += r;
        len -= (size_t)r;
    }
    return 1;
}

/* Reads the first bytes of what comes next on fd into hdr (n of them):
 * a hello there is read past (it never begins a frame). */
static int read_past_hello(int fd, uint8_t *hdr, size_t n, int ms)
{
    uint8_t rest[KEEL_HELLO_LEN];
    unsigned version;
    int rc = tu_read_exact(fd, hdr, 4, ms);

    if (rc != 1)
        return rc;
    if (keel_hello_parse(hdr, 4, &version) == 0) {
        rc = tu_read_exact(fd, rest, KEEL_HELLO_LEN - 4, ms);
        if (rc != 1)
            return rc;
        rc = tu_read_exact(fd, hdr, 4, ms);
        if (rc != 1)
            return rc;
    }
    return n > 4 ? tu_read_exact(fd, hdr + 4, n - 4, ms) : 1;
}

int tu_read_frame(int fd, tu_rframe *f, int ms)
{
    uint8_t hdr[KEEL_FRAME_HEADER];
    uint32_t length;
    size_t blen;
    int i, rc = read_past_hello(fd, hdr, sizeof hdr, ms);

    if (rc != 1)
        return rc;
    length = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
             ((uint32_t)hdr[2] << 8) | hdr[3];
    if (length < 12 || length - 12 > sizeof f->body)
        return -1;
    blen = length - 12;
    f->kind = hdr[4];
    f->id = 0;
    for (i = 8; i < 16; i++)
        f->id = (f->id << 8) | hdr[i];
    f->len = blen;
    if (blen > 0 && tu_read_exact(fd, f->body, blen, ms) != 1)
        return -1;
    f->code = 0;
    if (f->kind == KEEL_FRAME_ERROR && blen >= 2)
        f->code = -((f->body[0] << 8) | f->body[1]);
    return 1;
}

int tu_closed_within(int fd, int ms)
{
    uint8_t b[4];
    unsigned version;
    int rc = tu_read_exact(fd, b, 1, ms);

    if (rc == 1 && b[0] == 'K') {
        /* The node's hello is no frame: past it, the close. */
        rc = tu_read_exact(fd, b + 1, 3, ms);
        if (rc != 1 || keel_hello_parse(b, 4, &version) != 0)
            return 0;
        rc = tu_read_exact(fd, b, 4, ms);
        if (rc != 1)
            return 0;
        rc = tu_read_exact(fd, b, 1, ms);
    }
    return rc == 0;
}

long tu_rss_kb(pid_t pid)
{
    char path[64], *s, *p;
    long kb = -1;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    s = tu_read_file(path);
    if (s != NULL && (p = strstr(s, "VmRSS:")) != NULL)
        kb = strtol(p + 6, NULL, 10);
    free(s);
    return kb;
}
