#include "tcpproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXPAIRS 64

typedef struct pair {
    int a; /* accepted */
    int b; /* to the target; -1 until connected */
} pair;

struct tu_proxy {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int lfd, port, target;
    int wake[2];
    /* under mu: what the test asked, and which request the thread has
     * taken in (gen/seen) */
    int blackhole, stop, accepted;
    unsigned gen, seen;
    /* the thread's own */
    pair pairs[MAXPAIRS];
    int npairs;
};

static int nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int connect_target(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        nonblock(fd) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes everything, waiting at most 1 s each time the peer's buffer is
 * full: a relay must never hang the proxy's thread. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {fd, POLLOUT, 0};
            if (poll(&pf, 1, 1000) <= 0)
                return -1;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        return -1;
    }
    return 0;
}

/* Moves what is readable on from to to; -1 when the pair must close. */
static int relay(int from, int to)
{
    char buf[65536];
    ssize_t r = recv(from, buf, sizeof buf, 0);

    if (r == 0)
        return -1;
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
                   ? 0
                   : -1;
    return write_all(to, buf, (size_t)r);
}

static void pair_close(tu_proxy *p, int i)
{
    close(p->pairs[i].a);
    if (p->pairs[i].b >= 0)
        close(p->pairs[i].b);
    p->pairs[i] = p->pairs[--p->npairs];
}

static void *run(void *arg)
{
    tu_proxy *p = arg;

    for (;;) {
        struct pollfd pf[2 + 2 * MAXPAIRS];
        int bh, stop, i, n = 2;
        char drain[64];

        pthread_mutex_lock(&p->mu);
        bh = p->blackhole;
        stop = p->stop;
        p->seen = p->gen;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        pf[0].fd = p->wake[0];
        pf[0].events = POLLIN;
        pf[1].fd = p->lfd;
        pf[1].events = POLLIN;
        for (i = 0; !bh && i < p->npairs; i++) {
            if (p->pairs[i].b < 0 &&
                (p->pairs[i].b = connect_target(p->target)) < 0) {
                pair_close(p, i--);
                continue;
            }
        }
        for (i = 0; !bh && i < p->npairs; i++) {
            pf[n].fd = p->pairs[i].a;
            pf[n++].events = POLLIN;
            pf[n].fd = p->pairs[i].b;
            pf[n++].events = POLLIN;
        }
        if (poll(pf, (nfds_t)n, 1000) < 0 && errno != EINTR)
            break;
        if (pf[0].revents)
            while (read(p->wake[0], drain, sizeof drain) > 0)
                ;
        if (pf[1].revents & POLLIN) {
            int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                pthread_mutex_lock(&p->mu);
                p->accepted++;
                pthread_mutex_unlock(&p->mu);
                if (p->npairs == MAXPAIRS || nonblock(fd) != 0) {
                    close(fd);
                } else {
                    p->pairs[p->npairs].a = fd;
                    p->pairs[p->npairs].b = -1;
                    p->npairs++;
                }
            }
        }
        if (bh)
            continue;
        /* pf[2 + 2i] and pf[3 + 2i] belong to pairs[i] as it was when
         * polled; pairs closed below are swapped with the last one, so
         * walk backwards. */
        for (i = (n - 2) / 2 - 1; i >= 0; i--) {
            short ra = pf[2 + 2 * i].revents, rb = pf[3 + 2 * i].revents;
            int bad = 0;
            if (ra & (POLLIN | POLLHUP | POLLERR))
                bad = relay(p->pairs[i].a, p->pairs[i].b) != 0;
            if (!bad && (rb & (POLLIN | POLLHUP | POLLERR)))
                bad = relay(p->pairs[i].b, p->pairs[i].a) != 0;
            if (bad)
                pair_close(p, i);
        }
    }
    while (p->npairs > 0)
        pair_close(p, p->npairs - 1);
    return NULL;
}

tu_proxy *tu_proxy_start(int listen_port, int target_port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    tu_proxy *p = calloc(1, sizeof *p);
    int one = 1;

    if (p == NULL)
        return NULL;
    p->target = target_port;
    /* Close-on-exec, as every descriptor a test holds while its threads
     * fork keeld: a node must not keep the proxy's ports open. */
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->lfd < 0 || pipe2(p->wake, O_CLOEXEC) != 0) {
        perror("tu_proxy_start");
        free(p);
        return NULL;
    }
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)listen_port);
    if (bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->lfd, 16) != 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &len) != 0 ||
        nonblock(p->wake[0]) != 0) {
        fprintf(stderr, "tu_proxy_start: port %d: %s\n", listen_port,
                strerror(errno));
        close(p->lfd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return NULL;
    }
    p->port = ntohs(a.sin_port);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        fprintf(stderr, "tu_proxy_start: no thread\n");
        close(p->lfd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return NULL;
    }
    return p;
}

int tu_proxy_port(const tu_proxy *p)
{
    return p->port;
}

/* Makes the thread take in the current request before returning. */
static void sync_thread(tu_proxy *p)
{
    unsigned want;

    want = ++p->gen;
    (void)!write(p->wake[1], "x", 1);
    while ((int)(p->seen - want) < 0)
        pthread_cond_wait(&p->cv, &p->mu);
}

void tu_proxy_blackhole(tu_proxy *p, int on)
{
    pthread_mutex_lock(&p->mu);
    p->blackhole = on;
    sync_thread(p);
    pthread_mutex_unlock(&p->mu);
}

int tu_proxy_accepted(tu_proxy *p)
{
    int n;

    pthread_mutex_lock(&p->mu);
    n = p->accepted;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void tu_proxy_stop(tu_proxy *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    ++p->gen;
    (void)!write(p->wake[1], "x", 1);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
