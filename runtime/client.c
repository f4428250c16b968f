/* The blocking wire-protocol client.
 *
 * The socket stays non-blocking for its whole life and every wait goes
 * through poll(), so one deadline can bound a connect or a receive however
 * many partial reads it takes, and a signal (EINTR) only makes us wait
 * again for the time that is left.
 *
 * "Not sent" and "maybe ran" are told apart: KEEL_ENOTSENT when no byte
 * of a request left (the connect failed, the connection was found closed
 * before the write, or the write failed before taking a byte), KEEL_ECONN
 * once some of it may have reached the server.
 *
 * The hello (proto.h): ours is queued at connect and leaves with the first
 * request, so it costs no round trip; the server's is taken off the front
 * of what arrives before the first frame is read (take_hello). A server
 * that answers something else is not a keel node of this protocol, and
 * c->why says what it is instead.
 *
 * Buffers: the send buffer holds queued frames until keel_client_flush();
 * the receive buffer holds bytes read from the socket. A frame returned by
 * keel_client_recv() points into the receive buffer, so that buffer is
 * only compacted or grown at the start of the next receive. */
#include "runtime/client.h"

#include "common/be.h"
#include "runtime/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Replies may carry up to a full default-size message plus the framing the
 * server adds around it. */
#define CLIENT_DEFAULT_MAX_FRAME ((size_t)KEEL_DEFAULT_MAX_FRAME + 4096)
#define CLIENT_READ_CHUNK ((size_t)64 * 1024)
#define CLIENT_READ_MIN_ROOM ((size_t)4096)

struct keel_client {
    int fd;
    int timeout_ms;   /* 0: no limit */
    int broken;       /* the stream is closed or out of step: sends fail */
    int desync;       /* out of step: receives fail too */
    size_t max_frame; /* largest frame accepted from the server */
    uint64_t next_id; /* request ids used by keel_client_call */

    uint8_t *sbuf; /* queued, unsent bytes: sbuf[0, slen) */
    size_t slen, scap;

    uint8_t *rbuf; /* received bytes; rbuf[rpos, rlen) not yet parsed */
    size_t rpos, rlen, rcap;

    keel_tls *tls; /* NULL: plaintext */
    short want;    /* after a TLS call that must wait: POLLIN / POLLOUT */

    int hello_seen;  /* the server's hello was read */
    char addr[128];  /* as given to connect, for messages */
    char why[400];   /* what the last hello failure means, or "" */
};

static int sbuf_reserve(keel_client *c, size_t n);
static int rbuf_make_room(keel_client *c);
static int take_hello(keel_client *c, int eof);

/* ------------------------------------------------------------ deadlines */

/* Deadlines are CLOCK_MONOTONIC nanoseconds; -1 means none. */
static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t deadline_in(int timeout_ms)
{
    return timeout_ms > 0 ? now_ns() + (int64_t)timeout_ms * 1000000 : -1;
}

/* Waits until fd is ready for events or the deadline passes.
 * Errors: KEEL_ETIMEDOUT, KEEL_ECONN (poll itself failed). */
static int wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd pfd;
    int ms, rc;

    for (;;) {
        ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ns();

            if (left <= 0)
                return KEEL_ETIMEDOUT;
            /* Round up: a poll that wakes a hair early would spin. */
            left = (left + 999999) / 1000000;
            ms = left > 60000 ? 60000 : (int)left;
        }
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        rc = poll(&pfd, 1, ms);
        if (rc > 0)
            return 0; /* readiness, or POLLERR/POLLHUP: the I/O call says */
        if (rc < 0 && errno != EINTR)
            return KEEL_ECONN;
        /* Timed out a slice or interrupted: the loop rechecks the clock. */
    }
}

/* ------------------------------------------------------------------ io */

/* recv(2) / send(2) through TLS when the connection has it: bytes, 0 at
 * the end of the stream (reads), or -1 with errno; EAGAIN with c->want
 * saying what to wait for. */
static ssize_t cl_recv(keel_client *c, void *buf, size_t len)
{
    ssize_t r;

    c->want = POLLIN;
    if (c->tls == NULL)
        return recv(c->fd, buf, len, MSG_DONTWAIT);
    r = keel_tls_read(c->tls, buf, len);
    if (r >= 0)
        return r;
    if (r == KEEL_TLS_WANT_WRITE)
        c->want = POLLOUT;
    errno = r == KEEL_ECONN ? ECONNRESET : EAGAIN;
    return -1;
}

static ssize_t cl_send(keel_client *c, const void *buf, size_t len)
{
    ssize_t w;

    c->want = POLLOUT;
    if (c->tls == NULL)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    w = keel_tls_write(c->tls, buf, len);
    if (w >= 0)
        return w;
    if (w == KEEL_TLS_WANT_READ)
        c->want = POLLIN;
    errno = w == KEEL_ECONN ? EPIPE : EAGAIN;
    return -1;
}

/* -------------------------------------------------------------- connect */

/* Splits "HOST:PORT" at the last colon; "[v6addr]:PORT" loses its
 * brackets. Errors: KEEL_EADDR. */
static int split_addr(const char *addr, char *host, size_t hostlen,
                      char *port, size_t portlen)
{
    const char *colon, *h = addr, *p;
    size_t hl, pl;
    unsigned long v = 0;

    if (addr == NULL)
        return KEEL_EADDR;
    colon = strrchr(addr, ':');
    if (colon == NULL)
        return KEEL_EADDR;
    hl = (size_t)(colon - addr);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    p = colon + 1;
    pl = strlen(p);
    if (hl == 0 || hl >= hostlen || pl == 0 || pl >= portlen)
        return KEEL_EADDR;
    for (size_t i = 0; i < pl; i++) {
        if (p[i] < '0' || p[i] > '9')
            return KEEL_EADDR;
        v = v * 10 + (unsigned long)(p[i] - '0');
        if (v > 65535)
            return KEEL_EADDR;
    }
    if (v == 0)
        return KEEL_EADDR;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
}

/* One connect attempt. On success *fdp is a connected non-blocking socket.
 * On failure *errp is the errno that explains it (ETIMEDOUT for the
 * deadline). Errors: KEEL_ENOTSENT (refused, unreachable, timed out: no
 * request can have left), KEEL_ENOMEM. */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *fdp,
                       int *errp)
{
    int fd, err = 0, one = 1, rc;
    socklen_t errlen = sizeof err;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
        *errp = errno;
        return (errno == ENOMEM || errno == ENOBUFS) ? KEEL_ENOMEM
                                                     : KEEL_ENOTSENT;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        /* EINTR on a non-blocking connect: the attempt goes on in the
         * background, exactly as with EINPROGRESS. */
        if (errno != EINPROGRESS && errno != EINTR) {
            err = errno;
            goto err_after_socket;
        }
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc < 0) {
            err = rc == KEEL_ETIMEDOUT ? ETIMEDOUT : EIO;
            goto err_after_socket;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
            err = errno;
        if (err != 0)
            goto err_after_socket;
    }
    /* Requests are small and latency-bound; Nagle would hold a pipelined
     * tail back for an ACK. A failure only costs latency, so it is not an
     * error. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *fdp = fd;
    return 0;

err_after_socket:
    close(fd);
    *errp = err;
    return KEEL_ENOTSENT;
}

int keel_client_connect(const char *addr, int timeout_ms, keel_client **out)
{
    return keel_client_connect_why(addr, timeout_ms, out, NULL, 0);
}

int keel_client_connect_why(const char *addr, int timeout_ms,
                            keel_client **out, char *why, size_t whylen)
{
    return keel_client_connect_tls(addr, timeout_ms, NULL, out, why, whylen);
}

/* The TLS handshake on c's fresh socket, bounded by deadline.
 * Errors: KEEL_EINVAL / KEEL_EIO (the files), KEEL_ENOMEM, KEEL_ENOTSENT
 * (the handshake failed or timed out; nothing of ours was sent). */
static int client_handshake(keel_client *c, const keel_client_tls *tls,
                            int64_t deadline, char *why, size_t whylen)
{
    keel_tls_ctx *ctx;
    char err[512];
    int rc;

    rc = keel_tls_ctx_create(tls->cert, tls->key, tls->ca, tls->crl, &ctx,
                             err, sizeof err);
    if (rc != 0) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s", err);
        return rc;
    }
    rc = keel_tls_connect(ctx, c->fd, tls->node, &c->tls);
    keel_tls_ctx_unref(ctx); /* the connection holds it */
    if (rc != 0)
        return rc;
    for (;;) {
        rc = keel_tls_handshake(c->tls, err, sizeof err);
        if (rc == 0)
            return 0;
        if (rc == KEEL_TLS_WANT_READ || rc == KEEL_TLS_WANT_WRITE) {
            rc = wait_fd(c->fd, rc == KEEL_TLS_WANT_READ ? POLLIN : POLLOUT,
                         deadline);
            if (rc == 0)
                continue;
            if (rc == KEEL_ETIMEDOUT && keel_tls_awaiting_ticket(c->tls))
                /* A keel node sends its ticket as soon as it accepts
                 * us; an HTTPS server (a node's --http port) waits for
                 * a request instead. */
                snprintf(err, sizeof err,
                         "the TLS handshake completed but the server said "
                         "nothing more: not a keel node (a node's HTTPS "
                         "port, keeld --http, is not one), or one that is "
                         "stopped or overloaded");
            else
                snprintf(err, sizeof err, "TLS handshake %s",
                         rc == KEEL_ETIMEDOUT ? "timed out" : "failed");
        }
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s", err);
        return KEEL_ENOTSENT;
    }
}

int keel_client_connect_tls(const char *addr, int timeout_ms,
                            const keel_client_tls *tls, keel_client **out,
                            char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256], port[8];
    keel_client *c;
    int64_t deadline;
    int rc, fd = -1, err = 0;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (out == NULL)
        return KEEL_EINVAL;
    rc = split_addr(addr, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    if (timeout_ms < 0)
        timeout_ms = 0;
    /* Name resolution is not bounded by the timeout: getaddrinfo has no
     * deadline of its own. The timeout starts with the first connect. */
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        /* Say which name failed: "address invalid" alone leaves a user
         * looking for a typo in the port. */
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "cannot resolve host '%s': %s", host,
                     gai_strerror(rc));
        return rc == EAI_MEMORY ? KEEL_ENOMEM : KEEL_EADDR;
    }

    c = calloc(1, sizeof *c);
    if (c == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_addrinfo;
    }
    /* Allocated up front so the parser never sees a NULL buffer. */
    c->rcap = CLIENT_READ_CHUNK;
    c->rbuf = malloc(c->rcap);
    if (c->rbuf == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_client;
    }
    /* Try every address the name resolves to; the deadline covers all. */
    deadline = deadline_in(timeout_ms);
    rc = KEEL_ENOTSENT;
    err = ENOENT;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        rc = connect_one(ai, deadline, &fd, &err);
        if (rc == 0 || rc == KEEL_ENOMEM || err == ETIMEDOUT)
            break;
    }
    if (rc < 0) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s",
                     err == ETIMEDOUT     ? "connect timed out"
                     : err == ECONNREFUSED ? "connection refused"
                                           : strerror(err));
        goto err_after_client;
    }
    freeaddrinfo(res);
    res = NULL;

    c->fd = fd;
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->timeout_ms = timeout_ms;
    c->max_frame = CLIENT_DEFAULT_MAX_FRAME;
    c->next_id = 1; /* 0 is what a server quotes when it cannot tell */
    if (tls != NULL) {
        rc = client_handshake(c, tls, deadline, why, whylen);
        if (rc != 0)
            goto err_after_socket;
    }
    /* The hello goes first, inside TLS where there is TLS. */
    rc = sbuf_reserve(c, KEEL_HELLO_LEN);
    if (rc != 0)
        goto err_after_socket;
    keel_hello_encode(c->sbuf, KEEL_PROTO_VERSION);
    c->slen = KEEL_HELLO_LEN;
    *out = c;
    return 0;

err_after_socket:
    keel_tls_free(c->tls);
    close(c->fd);
err_after_client:
    free(c->rbuf);
    free(c);
err_after_addrinfo:
    if (res != NULL)
        freeaddrinfo(res);
    return rc;
}

void keel_client_close(keel_client *c)
{
    if (c == NULL)
        return;
    if (c->tls != NULL) {
        keel_tls_shutdown(c->tls);
        keel_tls_free(c->tls);
    }
    close(c->fd);
    free(c->sbuf);
    free(c->rbuf);
    free(c);
}

const char *keel_client_why(const keel_client *c)
{
    return c != NULL ? c->why : "";
}

void keel_client_set_max_frame(keel_client *c, size_t max_frame)
{
    c->max_frame = max_frame < KEEL_FRAME_MIN_MAX ? KEEL_FRAME_MIN_MAX
                                                   : max_frame;
}

int keel_client_fd(const keel_client *c)
{
    return c->fd;
}

int keel_client_pending(const keel_client *c)
{
    /* Bytes that came behind the server's hello wait in rbuf. */
    return c->rpos < c->rlen || (c->tls != NULL && keel_tls_pending(c->tls));
}

long keel_client_read_some(keel_client *c, void *buf, size_t len)
{
    /* The server's hello first, then what came behind it. */
    while (!c->hello_seen) {
        ssize_t r;
        int rc = c->desync ? KEEL_ECONN : take_hello(c, 0);

        if (rc < 0)
            return KEEL_ECONN;
        if (rc > 0)
            break;
        if (rbuf_make_room(c) < 0)
            return KEEL_ECONN;
        r = cl_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            continue;
        }
        if (r == 0)
            return take_hello(c, 1) < 0 ? KEEL_ECONN : 0;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? KEEL_ETIMEDOUT
                                                        : KEEL_ECONN;
    }
    if (c->rpos < c->rlen) {
        size_t n = c->rlen - c->rpos < len ? c->rlen - c->rpos : len;
        memcpy(buf, c->rbuf + c->rpos, n);
        c->rpos += n;
        return (long)n;
    }
    for (;;) {
        ssize_t r = cl_recv(c, buf, len);
        if (r >= 0)
            return (long)r;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? KEEL_ETIMEDOUT
                                                        : KEEL_ECONN;
    }
}

/* ----------------------------------------------------------------- send */

/* Makes room for n more queued bytes. Errors: KEEL_ENOMEM (the queue is
 * left as it was). */
static int sbuf_reserve(keel_client *c, size_t n)
{
    size_t cap;
    uint8_t *p;

    if (c->scap - c->slen >= n)
        return 0;
    if (n > SIZE_MAX / 2 - c->slen)
        return KEEL_ENOMEM;
    cap = c->scap ? c->scap : 4096;
    while (cap - c->slen < n)
        cap *= 2;
    p = realloc(c->sbuf, cap);
    if (p == NULL)
        return KEEL_ENOMEM;
    c->sbuf = p;
    c->scap = cap;
    return 0;
}

static int queue_frame(keel_client *c, uint8_t kind, uint8_t flags,
                       uint64_t request_id, const uint8_t *key,
                       const char *type, const void *id, size_t idlen,
                       const void *msg, size_t len)
{
    /* The 32-bit length field counts 12 header bytes plus the body. */
    const uint64_t max_body = UINT32_MAX - (KEEL_FRAME_HEADER - 4);
    size_t tlen = 0, body;
    uint8_t *p;
    int rc;

    if (c == NULL || (msg == NULL && len > 0))
        return KEEL_EINVAL;
    switch (kind) {
    case KEEL_FRAME_CALL:
    case KEEL_FRAME_CAST:
    case KEEL_FRAME_SUBSCRIBE: /* msg: the 8-byte version */
        if (type == NULL || (id == NULL && idlen > 0))
            return KEEL_EINVAL;
        tlen = strlen(type);
        if (tlen == 0)
            return KEEL_EINVAL;
        if (tlen > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN)
            return KEEL_ELIMIT;
        if ((uint64_t)len > max_body - keel_call_body_size(tlen, idlen, 0))
            return KEEL_ETOOBIG;
        body = keel_call_body_size(tlen, idlen, len);
        if (key != NULL) {
            if (body > max_body - KEEL_REQUEST_KEY_LEN)
                return KEEL_ETOOBIG;
            body += KEEL_REQUEST_KEY_LEN;
        }
        break;
    case KEEL_FRAME_STAT:
    case KEEL_FRAME_UNSUBSCRIBE:
        body = 0;
        break;
    case KEEL_FRAME_PING:
    case KEEL_FRAME_INFO:
        if ((uint64_t)len > max_body)
            return KEEL_ETOOBIG;
        body = len;
        break;
    default:
        return KEEL_EINVAL;
    }
    rc = sbuf_reserve(c, KEEL_FRAME_HEADER + body);
    if (rc < 0)
        return rc;
    p = c->sbuf + c->slen;
    keel_frame_header(p, kind, request_id, body);
    if (kind == KEEL_FRAME_CALL || kind == KEEL_FRAME_CAST ||
        kind == KEEL_FRAME_SUBSCRIBE) {
        uint8_t *q = p + KEEL_FRAME_HEADER;
        p[5] = flags;
        if (key != NULL) {
            p[5] |= KEEL_FLAG_KEYED;
            memcpy(q, key, KEEL_REQUEST_KEY_LEN);
            q += KEEL_REQUEST_KEY_LEN;
        }
        keel_call_body_encode(q, type, tlen, id, idlen, msg, len);
    } else if (body > 0) {
        memcpy(p + KEEL_FRAME_HEADER, msg, body);
    }
    c->slen += KEEL_FRAME_HEADER + body;
    return 0;
}

int keel_client_queue(keel_client *c, uint8_t kind, uint64_t request_id,
                      const char *type, const void *id, size_t idlen,
                      const void *msg, size_t len)
{
    return queue_frame(c, kind, 0, request_id, NULL, type, id, idlen, msg,
                       len);
}

int keel_client_queue_keyed(keel_client *c, uint8_t kind,
                            uint64_t request_id, const uint8_t *key,
                            const char *type, const void *id, size_t idlen,
                            const void *msg, size_t len)
{
    if (key == NULL ||
        (kind != KEEL_FRAME_CALL && kind != KEEL_FRAME_CAST))
        return KEEL_EINVAL;
    return queue_frame(c, kind, 0, request_id, key, type, id, idlen, msg,
                       len);
}

int keel_client_new_key(uint8_t *key)
{
    size_t got = 0;

    /* getrandom would do; /dev/urandom needs no newer libc. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return KEEL_EIO;
    while (got < KEEL_REQUEST_KEY_LEN) {
        ssize_t r = read(fd, key + got, KEEL_REQUEST_KEY_LEN - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return KEEL_EIO;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

int keel_client_queue_raw(keel_client *c, const void *bytes, size_t len)
{
    int rc;

    if (c == NULL || (bytes == NULL && len > 0))
        return KEEL_EINVAL;
    if (len == 0)
        return 0;
    rc = sbuf_reserve(c, len);
    if (rc < 0)
        return rc;
    memcpy(c->sbuf + c->slen, bytes, len);
    c->slen += len;
    return 0;
}

/* A connection whose byte stream can no longer be trusted: a frame may have
 * gone out half-written, or the peer closed. Later sends fail at once;
 * frames already received can still be read. */
static void mark_broken(keel_client *c)
{
    c->broken = 1;
    c->slen = 0;
}

/* Has the server closed its side (or reset the connection)? It answers
 * every request it read before it closes, so bytes sent now could only be
 * lost; look before sending. Does not consume what is waiting to be read. */
static int peer_closed(const keel_client *c)
{
    struct pollfd pfd;

    pfd.fd = c->fd;
#ifdef POLLRDHUP
    pfd.events = POLLRDHUP;
#else
    pfd.events = 0;
#endif
    pfd.revents = 0;
    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    return (pfd.revents & (POLLHUP | POLLERR
#ifdef POLLRDHUP
                           | POLLRDHUP
#endif
                           )) != 0;
}

int keel_client_flush(keel_client *c)
{
    size_t sent = 0;
    int64_t deadline;
    ssize_t n;

    if (c->broken) {
        c->slen = 0;
        return KEEL_ENOTSENT;
    }
    if (c->slen == 0)
        return 0;
    if (peer_closed(c)) {
        mark_broken(c);
        return KEEL_ENOTSENT;
    }
    /* The timeout bounds a stall, not the whole transfer: it restarts
     * whenever the server takes some bytes. A server that takes none for
     * that long is treated as gone, since the frame being written can no
     * longer be completed or taken back. */
    deadline = deadline_in(c->timeout_ms);
    while (sent < c->slen) {
        n = cl_send(c, c->sbuf + sent, c->slen - sent);
        if (n > 0) {
            sent += (size_t)n;
            deadline = deadline_in(c->timeout_ms);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(c->fd, c->want, deadline) == 0)
                continue;
        }
        /* Nothing of what was queued left: none of it can have run. */
        mark_broken(c);
        return sent == 0 ? KEEL_ENOTSENT : KEEL_ECONN;
    }
    c->slen = 0;
    return 0;
}

/* -------------------------------------------------------------- receive */

/* Makes room to read more: drops parsed bytes (the frame handed out last
 * is released by now) and grows the buffer to hold the frame being
 * received. Errors: KEEL_ENOMEM. */
static int rbuf_make_room(keel_client *c)
{
    size_t need, cap, avail;
    uint8_t *p;

    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    avail = c->rlen;
    /* A partial frame whose length is known (the parser has already
     * refused it if that exceeds max_frame) needs that much room. */
    need = KEEL_FRAME_HEADER;
    /* Before the server's hello the bytes are no frame's (a hello, or
     * whatever a server that is not keel sent). */
    if (avail >= 4 && c->hello_seen) {
        const uint8_t *b = c->rbuf;
        size_t total = 4 + ((size_t)b[0] << 24 | (size_t)b[1] << 16 |
                            (size_t)b[2] << 8 | (size_t)b[3]);

        if (total > need)
            need = total;
    }
    if (need < avail + CLIENT_READ_MIN_ROOM)
        need = avail + CLIENT_READ_MIN_ROOM;
    if (c->rcap >= need)
        return 0;
    cap = c->rcap;
    while (cap < need)
        cap *= 2;
    p = realloc(c->rbuf, cap);
    if (p == NULL)
        return KEEL_ENOMEM;
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

/* What a server that is not a keel node sent, quoted for a message: up to
 * the first line end, at most 60 bytes, bytes that are not printable as
 * '.'. */
static void quote_bytes(const uint8_t *b, size_t len, char *out, size_t cap)
{
    size_t i, n = 0;

    for (i = 0; i < len && i < 60 && n + 1 < cap; i++) {
        if (b[i] == '\r' || b[i] == '\n')
            break;
        out[n++] = b[i] >= 0x20 && b[i] < 0x7f ? (char)b[i] : '.';
    }
    out[n] = '\0';
}

/* The hello failed: the stream cannot be read on. */
static int hello_failed(keel_client *c, int code)
{
    mark_broken(c);
    c->desync = 1;
    return code;
}

/* Takes the server's hello off the front of what was received. Returns 1
 * once it is taken, 2 when the server began with a bare ERROR quoting
 * request id 0 instead (a node that refuses the connection before it
 * reads the hello: the caller reads it as a frame); 0 while more bytes
 * are needed (eof: none will come); KEEL_EPROTO when the server is not a
 * keel node of this protocol version, or KEEL_ECONN when it closed before
 * saying anything, with c->why saying which. */
static int take_hello(keel_client *c, int eof)
{
    const uint8_t *b = c->rbuf + c->rpos;
    size_t len = c->rlen - c->rpos;
    char q[64];
    unsigned version;
    keel_frame f;
    long r = len > 0 ? keel_hello_parse(b, len, &version) : 0;

    if (r > 0) {
        if (version != KEEL_PROTO_VERSION) {
            snprintf(c->why, sizeof c->why,
                     "the keel node at %s speaks protocol version %u; this "
                     "client speaks version %u",
                     c->addr, version, KEEL_PROTO_VERSION);
            return hello_failed(c, KEEL_EPROTO);
        }
        c->rpos += KEEL_HELLO_LEN;
        c->hello_seen = 1;
        return 1;
    }
    if (r == 0 && !eof)
        return 0;
    if (len == 0) {
        snprintf(c->why, sizeof c->why,
                 "the server at %s closed the connection without the keel "
                 "hello: not a keel node (a node's HTTP port, keeld "
                 "--http, closes so), or one that is stopping",
                 c->addr);
        return hello_failed(c, KEEL_ECONN);
    }
    if (b[0] == 0) {
        /* A frame: a refusal before the hello, or a node older than the
         * hello, which read ours as a frame far over its limit. */
        long n = keel_frame_parse(b, len, c->max_frame, &f);
        if (n == 0 && !eof)
            return 0;
        if (n > 0 && f.kind == KEEL_FRAME_ERROR) {
            int code = keel_error_body_parse(f.body, f.body_len, NULL, NULL);
            if (code != KEEL_ETOOBIG && code != KEEL_EMALFORMED &&
                f.request_id == 0) {
                c->hello_seen = 1;
                return 2;
            }
            snprintf(c->why, sizeof c->why,
                     "the keel node at %s is older than the protocol hello "
                     "(it refused ours as a frame, %s); this client speaks "
                     "protocol version %u",
                     c->addr, keel_err_name(code), KEEL_PROTO_VERSION);
            return hello_failed(c, KEEL_EPROTO);
        }
    }
    /* Something else altogether. Wait for its first line, to quote it. */
    if (!eof && len < 60 && memchr(b, '\n', len) == NULL)
        return 0;
    quote_bytes(b, len, q, sizeof q);
    if (len >= 5 && memcmp(b, "HTTP/", 5) == 0)
        snprintf(c->why, sizeof c->why,
                 "the server at %s is not a keel node: it answered like an "
                 "HTTP server ('%s'); is that a node's HTTP port "
                 "(keeld --http)?",
                 c->addr, q);
    else
        snprintf(c->why, sizeof c->why,
                 "the server at %s is not a keel node: it answered '%s' to "
                 "the keel hello",
                 c->addr, q);
    return hello_failed(c, KEEL_EPROTO);
}

/* Receives one frame, waiting until the deadline. */
static int recv_frame(keel_client *c, keel_frame *out, int64_t deadline)
{
    long n;
    ssize_t r;
    int rc;

    for (;;) {
        if (!c->hello_seen && !c->desync) {
            rc = take_hello(c, 0);
            if (rc < 0)
                return rc;
        }
        n = !c->hello_seen ? 0
                           : keel_frame_parse(c->rbuf + c->rpos,
                                              c->rlen - c->rpos,
                                              c->max_frame, out);
        if (n > 0) {
            c->rpos += (size_t)n;
            /* An ERROR quoting id 0 comes last: the server closes next
             * (see answers()). Nothing sent now would be read. */
            if (out->kind == KEEL_FRAME_ERROR && out->request_id == 0)
                mark_broken(c);
            return 0;
        }
        if (n < 0) {
            /* Nothing after a bad frame can be trusted to start at a frame
             * boundary. */
            mark_broken(c);
            c->desync = 1;
            return (int)n;
        }
        /* A connection closed for sending may still hold answers to what
         * was sent before, and the server's farewell: read them. */
        if (c->desync)
            return KEEL_ECONN;
        rc = rbuf_make_room(c);
        if (rc < 0)
            return rc;
        r = cl_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            continue;
        }
        if (r == 0) {
            if (!c->hello_seen && !c->desync) {
                rc = take_hello(c, 1);
                if (rc > 0)
                    continue;
                return rc < 0 ? rc : KEEL_ECONN;
            }
            mark_broken(c);
            return KEEL_ECONN;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            rc = wait_fd(c->fd, c->want, deadline);
            if (rc == KEEL_ETIMEDOUT && !c->hello_seen)
                snprintf(c->why, sizeof c->why,
                         "no answer from %s, not even the keel hello, "
                         "within %d ms: not a keel node, or not answering",
                         c->addr, c->timeout_ms);
            if (rc < 0)
                return rc;
            continue;
        }
        mark_broken(c);
        return KEEL_ECONN;
    }
}

/* Is f the answer keel_client_call waits for? An ERROR quoting id 0 is the
 * server refusing a frame it could not read, or a stopping node's
 * farewell (ESTOPPING: nothing it has not answered ran); it closes the
 * connection next, so that error answers the pending call too. */
static int answers(const keel_frame *f, uint64_t rid)
{
    return f->request_id == rid ||
           (f->kind == KEEL_FRAME_ERROR && f->request_id == 0);
}

/* After a failed send. A server that refuses a request outright (an
 * oversized frame) sends its ERROR and closes without reading the rest,
 * which makes our send fail; the ERROR may still be waiting in the socket.
 * Looks for the answer to rid among the bytes already there, without
 * waiting. Returns 1 with *out set when found. */
static int salvage_answer(keel_client *c, uint64_t rid, keel_frame *out)
{
    for (;;) {
        long n = 0;
        ssize_t r;

        if (!c->hello_seen && (c->desync || take_hello(c, 0) < 0))
            return 0;
        if (c->hello_seen)
            n = keel_frame_parse(c->rbuf + c->rpos, c->rlen - c->rpos,
                                 c->max_frame, out);

        if (n > 0) {
            c->rpos += (size_t)n;
            if (out->kind == KEEL_FRAME_ERROR && out->request_id == 0)
                mark_broken(c);
            if (answers(out, rid))
                return 1;
            continue;
        }
        if (n < 0 || rbuf_make_room(c) < 0)
            return 0;
        r = cl_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r > 0)
            c->rlen += (size_t)r;
        else if (!(r < 0 && errno == EINTR))
            return 0;
    }
}

int keel_client_recv(keel_client *c, keel_frame *out)
{
    return recv_frame(c, out, deadline_in(c->timeout_ms));
}

int keel_client_hello(keel_client *c, char *why, size_t whylen)
{
    int64_t deadline;
    int rc;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (c->hello_seen)
        return 0;
    if (c->slen > KEEL_HELLO_LEN)
        return KEEL_EINVAL; /* requests are queued behind the hello */
    /* A node that refuses the connection says so and closes, perhaps
     * before the hello leaves: its refusal is read all the same. */
    (void)keel_client_flush(c);
    deadline = deadline_in(c->timeout_ms);
    for (;;) {
        ssize_t r;

        rc = c->desync ? KEEL_ECONN : take_hello(c, 0);
        if (rc != 0)
            break;
        rc = rbuf_make_room(c);
        if (rc < 0)
            return rc;
        r = cl_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            continue;
        }
        if (r == 0) {
            rc = take_hello(c, 1);
            break;
        }
        if (errno == EINTR)
            continue;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) ||
            wait_fd(c->fd, c->want, deadline) != 0) {
            rc = errno == EAGAIN || errno == EWOULDBLOCK ? KEEL_ETIMEDOUT
                                                          : KEEL_ECONN;
            if (rc == KEEL_ETIMEDOUT)
                snprintf(c->why, sizeof c->why,
                         "no keel hello from %s within %d ms: not a keel "
                         "node, or not answering",
                         c->addr, c->timeout_ms);
            else
                snprintf(c->why, sizeof c->why,
                         "connection to %s failed before the keel hello",
                         c->addr);
            (void)hello_failed(c, rc);
            break;
        }
    }
    if (rc == 1)
        return 0;
    if (rc == 2) {
        /* Refused before the hello: its ERROR says why. Nothing of ours
         * but the hello was sent. */
        keel_frame f;
        const char *m;
        size_t ml;
        int code;

        (void)keel_frame_parse(c->rbuf + c->rpos, c->rlen - c->rpos,
                               c->max_frame, &f);
        code = keel_error_body_parse(f.body, f.body_len, &m, &ml);
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%.*s", (int)ml, m);
        mark_broken(c);
        return code;
    }
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "%s", c->why);
    /* Only the hello left: whatever the server is, nothing ran. */
    return rc == KEEL_EPROTO ? KEEL_EPROTO : KEEL_ENOTSENT;
}

/* --------------------------------------------------------------- calls */

/* Sends one request (a new request id, into *rid) and waits for its
 * answer, into *f. */
/* A frame larger than this client takes (keel_client_set_max_frame)
 * arrived while it waited for the answer to rid; the connection cannot
 * go on. f holds the frame's header if it came whole. The answer to rid,
 * a REPLY: the request ran, only its reply is lost, and a keyed one is
 * told so (KEEL_EALREADY, what a node says of such a reply; KEEL_ETOOBIG
 * would read as a refusal, keel_err_is_answer). Another frame (a late
 * answer to an earlier request, or a header not read yet): whether rid
 * ran cannot be told, as when the connection closes. */
static int too_big(const keel_frame *f, uint64_t rid, int keyed)
{
    if (f->request_id != rid || f->kind != KEEL_FRAME_REPLY)
        return KEEL_ECONN;
    return keyed ? KEEL_EALREADY : KEEL_ETOOBIG;
}

static int exchange(keel_client *c, uint8_t kind, uint8_t flags,
                    const uint8_t *key, const char *type, const void *id,
                    size_t idlen, const void *msg, size_t len, uint64_t *rid,
                    keel_frame *f)
{
    int64_t deadline;
    int rc;

    *rid = c->next_id++;
    if (*rid == 0)
        *rid = c->next_id++;
    rc = queue_frame(c, kind, flags, *rid, key, type, id, idlen, msg, len);
    if (rc < 0)
        return rc;
    rc = keel_client_flush(c);
    if (rc < 0)
        return salvage_answer(c, *rid, f) ? 0 : rc;
    /* One deadline for the whole wait, however many stale frames arrive:
     * a frame for another id is the late answer to a request an earlier
     * call stopped waiting for, and is dropped. */
    deadline = deadline_in(c->timeout_ms);
    do {
        rc = recv_frame(c, f, deadline);
        if (rc == KEEL_ETOOBIG)
            return too_big(f, *rid, key != NULL);
        if (rc < 0)
            return rc;
    } while (!answers(f, *rid));
    return 0;
}

static int call_frame(keel_client *c, uint8_t kind, uint8_t flags,
                      const uint8_t *key, const char *type, const void *id,
                      size_t idlen, const void *msg, size_t len, char **reply,
                      size_t *reply_len)
{
    uint8_t expect = kind == KEEL_FRAME_PING ? KEEL_FRAME_PONG
                                             : KEEL_FRAME_REPLY;
    const uint8_t *data;
    size_t dlen;
    keel_frame f;
    uint64_t rid;
    int rc, status;

    if (reply != NULL)
        *reply = NULL;
    if (reply_len != NULL)
        *reply_len = 0;
    rc = exchange(c, kind, flags, key, type, id, idlen, msg, len, &rid, &f);
    if (rc < 0)
        return rc;

    if (f.kind == expect) {
        status = 0;
        data = f.body;
        dlen = f.body_len;
    } else if (f.kind == KEEL_FRAME_ERROR) {
        const char *m;

        status = keel_error_body_parse(f.body, f.body_len, &m, &dlen);
        data = (const uint8_t *)m;
    } else {
        return KEEL_EPROTO;
    }
    if (reply != NULL) {
        char *p = malloc(dlen + 1);

        if (p == NULL)
            return KEEL_ENOMEM;
        if (dlen > 0)
            memcpy(p, data, dlen);
        p[dlen] = '\0';
        *reply = p;
    }
    if (reply_len != NULL)
        *reply_len = dlen;
    return status;
}

int keel_client_call(keel_client *c, uint8_t kind, const char *type,
                     const void *id, size_t idlen, const void *msg, size_t len,
                     char **reply, size_t *reply_len)
{
    return call_frame(c, kind, 0, NULL, type, id, idlen, msg, len, reply,
                      reply_len);
}

int keel_client_read_state(keel_client *c, const char *type, const void *id,
                           size_t idlen, char **reply, size_t *reply_len)
{
    return call_frame(c, KEEL_FRAME_CALL, KEEL_FLAG_READ, NULL, type, id,
                      idlen, NULL, 0, reply, reply_len);
}

int keel_client_read_reminders(keel_client *c, const char *type,
                               const void *id, size_t idlen, char **reply,
                               size_t *reply_len)
{
    return call_frame(c, KEEL_FRAME_CALL, KEEL_FLAG_READ, NULL, type, id,
                      idlen, KEEL_READ_REMINDERS, KEEL_READ_REMINDERS_LEN,
                      reply, reply_len);
}

/* A state read whose message is word (wlen bytes) then number. */
static int read_word_num(keel_client *c, const char *type, const void *id,
                         size_t idlen, const char *word, size_t wlen,
                         uint64_t number, char **reply, size_t *reply_len)
{
    uint8_t msg[32];

    memcpy(msg, word, wlen);
    keel_put_be64(msg + wlen, number);
    return call_frame(c, KEEL_FRAME_CALL, KEEL_FLAG_READ, NULL, type, id,
                      idlen, msg, wlen + 8, reply, reply_len);
}

int keel_client_dead_letters(keel_client *c, const char *type,
                             const void *id, size_t idlen, uint64_t after,
                             char **reply, size_t *reply_len)
{
    return read_word_num(c, type, id, idlen, KEEL_DEAD_LIST,
                         KEEL_DEAD_LIST_LEN, after, reply, reply_len);
}

int keel_client_dead_letter_act(keel_client *c, const char *type,
                                const void *id, size_t idlen, int retry,
                                uint64_t number, char **reply,
                                size_t *reply_len)
{
    return read_word_num(c, type, id, idlen,
                         retry ? KEEL_DEAD_RETRY : KEEL_DEAD_DROP,
                         retry ? KEEL_DEAD_RETRY_LEN : KEEL_DEAD_DROP_LEN,
                         number, reply, reply_len);
}

int keel_client_outbox_waiting(keel_client *c, const char *type,
                               const void *id, size_t idlen, uint64_t after,
                               char **reply, size_t *reply_len)
{
    return read_word_num(c, type, id, idlen, KEEL_OB_WAITING,
                         KEEL_OB_WAITING_LEN, after, reply, reply_len);
}

int keel_client_outbox_give_up(keel_client *c, const char *type,
                               const void *id, size_t idlen, uint64_t seq,
                               char **reply, size_t *reply_len)
{
    return read_word_num(c, type, id, idlen, KEEL_OB_GIVE_UP,
                         KEEL_OB_GIVE_UP_LEN, seq, reply, reply_len);
}

int keel_client_call_keyed(keel_client *c, uint8_t kind, const uint8_t *key,
                           const char *type, const void *id, size_t idlen,
                           const void *msg, size_t len, char **reply,
                           size_t *reply_len)
{
    if (key == NULL ||
        (kind != KEEL_FRAME_CALL && kind != KEEL_FRAME_CAST))
        return KEEL_EINVAL;
    return call_frame(c, kind, 0, key, type, id, idlen, msg, len, reply,
                      reply_len);
}

/* ------------------------------------------------------- authentication */

int keel_client_auth(keel_client *c, const char *token, char **reply,
                     size_t *reply_len)
{
    size_t tl = token != NULL ? strlen(token) : 0;
    uint8_t body[5 + 256];

    if (reply != NULL)
        *reply = NULL;
    if (c == NULL || tl == 0 || tl > sizeof body - 5)
        return KEEL_EINVAL;
    memcpy(body, "auth", 5); /* the word, then its NUL separator */
    memcpy(body + 5, token, tl);
    return keel_client_call(c, KEEL_FRAME_INFO, NULL, NULL, 0, body, 5 + tl,
                            reply, reply_len);
}

int keel_client_info(keel_client *c, const char *const *words, size_t n,
                     char **reply, size_t *reply_len)
{
    size_t blen = 0, off = 0, i;
    char *body;
    int rc;

    if (reply != NULL)
        *reply = NULL;
    for (i = 0; i < n; i++)
        blen += strlen(words[i]) + (i > 0);
    if ((body = malloc(blen ? blen : 1)) == NULL)
        return KEEL_ENOMEM;
    for (i = 0; i < n; i++) {
        size_t l = strlen(words[i]);
        if (i > 0)
            body[off++] = '\0';
        memcpy(body + off, words[i], l);
        off += l;
    }
    rc = keel_client_call(c, KEEL_FRAME_INFO, NULL, NULL, 0, body, blen,
                          reply, reply_len);
    free(body);
    return rc;
}

int keel_client_token_from_file(const char *path, char *buf, size_t cap)
{
    FILE *f;
    size_t n;

    if (path == NULL || buf == NULL || cap < 2)
        return KEEL_EINVAL;
    f = fopen(path, "re");
    if (f == NULL)
        return KEEL_EIO;
    if (fgets(buf, (int)cap, f) == NULL) {
        fclose(f);
        buf[0] = '\0';
        return KEEL_EINVAL;
    }
    fclose(f);
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                     buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    return n > 0 ? 0 : KEEL_EINVAL;
}

/* ------------------------------------------------------------ following */

/* An answer or event frame as an update; parts point into f's buffer. */
static int follow_update(const keel_frame *f, keel_follow_update *out)
{
    memset(out, 0, sizeof *out);
    if (f->kind == KEEL_FRAME_ERROR) {
        out->kind = KEEL_EVENT_END;
        out->code = keel_error_body_parse(f->body, f->body_len,
                                          &out->reason, &out->reason_len);
        return out->code;
    }
    if (f->kind == KEEL_FRAME_REPLY) {
        keel_state_read st;
        if (f->body_len == 0)
            return 0; /* kind 0: unchanged since the version given */
        if (keel_state_read_parse(f->body, f->body_len, &st) != 0)
            return KEEL_EMALFORMED;
        out->kind = KEEL_EVENT_CHANGE;
        out->version = st.version;
        out->has_state = st.has_blob;
        out->state = st.blob;
        out->state_len = st.blob_len;
        return 0;
    }
    if (f->kind == KEEL_FRAME_EVENT) {
        keel_event ev;
        if (keel_event_parse(f->body, f->body_len, &ev) != 0)
            return KEEL_EMALFORMED;
        out->kind = ev.kind;
        out->version = ev.version;
        if (ev.kind == KEEL_EVENT_CHANGE &&
            (f->flags & KEEL_FLAG_PAYLOAD) != 0) {
            out->kind = KEEL_FOLLOW_PAYLOAD;
            out->payload = ev.data;
            out->payload_len = ev.data_len;
        } else if (ev.kind == KEEL_EVENT_CHANGE) {
            out->has_state = 1;
            out->state = ev.data;
            out->state_len = ev.data_len;
        } else {
            out->code = ev.code;
            out->reason = (const char *)ev.data;
            out->reason_len = ev.data_len;
        }
        return 0;
    }
    return KEEL_EPROTO;
}

int keel_client_subscribe_flags(keel_client *c, const char *type,
                                const void *id, size_t idlen, uint64_t since,
                                unsigned flags, uint64_t *sub_id,
                                keel_follow_update *out)
{
    uint8_t v[8];
    keel_frame f;
    uint64_t rid;
    uint8_t wf = (flags & KEEL_SUBSCRIBE_PAYLOADS) ? KEEL_FLAG_PAYLOAD : 0;
    int rc;

    if ((flags & ~KEEL_SUBSCRIBE_PAYLOADS) != 0)
        return KEEL_EINVAL;
    for (;;) {
        memset(out, 0, sizeof *out);
        keel_put_be64(v, since);
        rc = exchange(c, KEEL_FRAME_SUBSCRIBE, wf, NULL, type, id, idlen, v,
                      sizeof v, &rid, &f);
        if (rc < 0)
            return rc;
        if (f.kind != KEEL_FRAME_REPLY && f.kind != KEEL_FRAME_ERROR)
            return KEEL_EPROTO;
        *sub_id = rid;
        rc = follow_update(&f, out);
        /* A node that knows no payloads refuses any flag: then states
         * are all it has to send. */
        if (rc == KEEL_EMALFORMED && f.kind == KEEL_FRAME_ERROR && wf != 0) {
            wf = 0;
            continue;
        }
        return rc;
    }
}

int keel_client_subscribe(keel_client *c, const char *type, const void *id,
                          size_t idlen, uint64_t since, uint64_t *sub_id,
                          keel_follow_update *out)
{
    return keel_client_subscribe_flags(c, type, id, idlen, since, 0, sub_id,
                                       out);
}

int keel_client_next_event(keel_client *c, uint64_t sub_id,
                           keel_follow_update *out)
{
    keel_frame f;
    int rc;

    memset(out, 0, sizeof *out);
    do {
        rc = recv_frame(c, &f, deadline_in(c->timeout_ms));
        if (rc < 0)
            return rc;
    } while (!answers(&f, sub_id));
    if (f.kind != KEEL_FRAME_EVENT && f.kind != KEEL_FRAME_ERROR)
        return KEEL_EPROTO;
    rc = follow_update(&f, out);
    /* An ERROR (the node's last word, or a refusal) ends it too: said as
     * an END. */
    return rc < 0 && f.kind == KEEL_FRAME_ERROR ? 0 : rc;
}

int keel_client_unsubscribe(keel_client *c, uint64_t sub_id)
{
    keel_frame f;
    int64_t deadline;
    int rc;

    rc = queue_frame(c, KEEL_FRAME_UNSUBSCRIBE, 0, sub_id, NULL, NULL, NULL,
                     0, NULL, 0);
    if (rc < 0)
        return rc;
    rc = keel_client_flush(c);
    if (rc < 0)
        return rc;
    /* Events sent before the node took it may come first. */
    deadline = deadline_in(c->timeout_ms);
    do {
        rc = recv_frame(c, &f, deadline);
        if (rc < 0)
            return rc;
    } while (!answers(&f, sub_id) || f.kind == KEEL_FRAME_EVENT);
    if (f.kind == KEEL_FRAME_ERROR)
        return keel_error_body_parse(f.body, f.body_len, NULL, NULL);
    return f.kind == KEEL_FRAME_REPLY ? 0 : KEEL_EPROTO;
}
