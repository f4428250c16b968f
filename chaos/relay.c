#include "chaos/relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

/* One relayed connection: a and b, and what waits to go each way. */
typedef struct pair {
    int a, b;
    char ab[BUF], ba[BUF];
    size_t nab, nba;
} pair;

static int sock_in(const char *host, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int connect_target(const chaos_relay *r)
{
    struct sockaddr_in sa;
    int fd, one = 1;

    if (sock_in(r->target, r->target_port, &sa) != 0)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* Loopback: a refused or accepted connect is immediate. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void pair_close(pair *p)
{
    if (p->a >= 0)
        close(p->a);
    if (p->b >= 0)
        close(p->b);
    p->a = p->b = -1;
    p->nab = p->nba = 0;
}

/* Moves bytes from `from` into buf and from buf to `to`. -1 when the
 * connection is over (either side closed or failed). */
static int pump(int from, int to, char *buf, size_t *n, short rev_from,
                short rev_to)
{
    if ((rev_from & (POLLIN | POLLHUP | POLLERR)) && *n < BUF) {
        ssize_t r = read(from, buf + *n, BUF - *n);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return -1;
        if (r > 0)
            *n += (size_t)r;
    }
    if (*n > 0 && (rev_to & POLLOUT)) {
        ssize_t w = send(to, buf, *n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
        if (w > 0) {
            memmove(buf, buf + w, *n - (size_t)w);
            *n -= (size_t)w;
        }
    }
    if (rev_to & (POLLERR | POLLHUP))
        return -1;
    return 0;
}

static void *relay_main(void *arg)
{
    chaos_relay *r = arg;
    pair *pairs = calloc(CHAOS_RELAY_MAX, sizeof *pairs);
    struct pollfd pfd[2 + 2 * CHAOS_RELAY_MAX];
    size_t k;

    if (pairs == NULL)
        return NULL;
    for (k = 0; k < CHAOS_RELAY_MAX; k++)
        pairs[k].a = pairs[k].b = -1;
    for (;;) {
        int n = 0, i, cut = atomic_load(&r->cut);

        if (!cut) /* the ones held while cut go now */
            for (k = 0; k < CHAOS_RELAY_MAX; k++)
                if (pairs[k].a >= 0 && pairs[k].b < 0)
                    pair_close(&pairs[k]);
        pfd[n].fd = r->stop_pipe[0];
        pfd[n++].events = POLLIN;
        pfd[n].fd = r->lfd;
        pfd[n++].events = POLLIN;
        for (k = 0; k < CHAOS_RELAY_MAX; k++) {
            pair *p = &pairs[k];
            if (p->a < 0 || cut)
                continue;
            pfd[n].fd = p->a;
            pfd[n++].events = (short)((p->nab < BUF ? POLLIN : 0) |
                                      (p->nba > 0 ? POLLOUT : 0));
            pfd[n].fd = p->b;
            pfd[n++].events = (short)((p->nba < BUF ? POLLIN : 0) |
                                      (p->nab > 0 ? POLLOUT : 0));
        }
        if (poll(pfd, (nfds_t)n, 1000) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents) {
            char why = 'x';
            if (read(r->stop_pipe[0], &why, 1) == 1 && why == 'w')
                continue; /* woken by chaos_relay_cut */
            break;
        }
        if (pfd[1].revents & POLLIN) {
            int c = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0) {
                int t = cut ? -2 : connect_target(r);
                for (k = 0; k < CHAOS_RELAY_MAX && pairs[k].a >= 0; k++)
                    ;
                if (t == -1 || k == CHAOS_RELAY_MAX) {
                    close(c);
                    if (t >= 0)
                        close(t);
                } else if (t == -2) {
                    pairs[k].a = c; /* held, not polled, until healed */
                    pairs[k].b = -1;
                    pairs[k].nab = pairs[k].nba = 0;
                } else {
                    pairs[k].a = c;
                    pairs[k].b = t;
                    pairs[k].nab = pairs[k].nba = 0;
                }
            }
        }
        i = 2;
        for (k = 0; k < CHAOS_RELAY_MAX && !cut; k++) {
            pair *p = &pairs[k];
            short ra, rb;
            if (p->a < 0)
                continue;
            /* pfd was filled in pair order before any pair was added. */
            if (i + 1 >= n || pfd[i].fd != p->a || pfd[i + 1].fd != p->b)
                continue; /* accepted in this round */
            ra = pfd[i].revents;
            rb = pfd[i + 1].revents;
            i += 2;
            if (pump(p->a, p->b, p->ab, &p->nab, ra, rb) != 0 ||
                pump(p->b, p->a, p->ba, &p->nba, rb, ra) != 0)
                pair_close(p);
        }
    }
    for (k = 0; k < CHAOS_RELAY_MAX; k++)
        if (pairs[k].a >= 0)
            pair_close(&pairs[k]);
    free(pairs);
    return NULL;
}

int chaos_relay_start(chaos_relay *r, const char *host, int port,
                      const char *target, int target_port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int one = 1;

    memset(r, 0, sizeof *r);
    r->lfd = -1;
    r->stop_pipe[0] = r->stop_pipe[1] = -1;
    snprintf(r->target, sizeof r->target, "%s", target);
    r->target_port = target_port;
    atomic_init(&r->cut, 0);
    if (sock_in(host, port, &sa) != 0) {
        errno = EINVAL;
        return -1;
    }
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->lfd < 0)
        return -1;
    setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(r->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(r->lfd, 128) != 0 ||
        getsockname(r->lfd, (struct sockaddr *)&sa, &len) != 0 ||
        pipe2(r->stop_pipe, O_CLOEXEC) != 0)
        goto err;
    r->port = ntohs(sa.sin_port);
    if (pthread_create(&r->th, NULL, relay_main, r) != 0)
        goto err;
    r->started = 1;
    return 0;
err:
    chaos_relay_stop(r);
    return -1;
}

void chaos_relay_cut(chaos_relay *r, int on)
{
    atomic_store(&r->cut, on ? 1 : 0);
    if (r->started)
        (void)!write(r->stop_pipe[1], "w", 1);
}

void chaos_relay_stop(chaos_relay *r)
{
    if (r->started) {
        (void)!write(r->stop_pipe[1], "x", 1);
        pthread_join(r->th, NULL);
        r->started = 0;
    }
    if (r->lfd >= 0)
        close(r->lfd);
    if (r->stop_pipe[0] >= 0)
        close(r->stop_pipe[0]);
    if (r->stop_pipe[1] >= 0)
        close(r->stop_pipe[1]);
    r->lfd = r->stop_pipe[0] = r->stop_pipe[1] = -1;
}
