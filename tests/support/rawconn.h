/* Raw wire connections for tests that must send what no well-behaved
 * client sends (forged frames, trickles, floods): blocking sockets to
 * 127.0.0.1 and frame reading with bounded waits. */
#ifndef KEEL_TEST_RAWCONN_H
#define KEEL_TEST_RAWCONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A blocking TCP connection from `from` (NULL: any local address) to
 * 127.0.0.1:port, with 5 s send and receive timeouts, that has sent the
 * protocol hello (the node's answer, its own, is read past by
 * tu_read_frame and tu_closed_within). -1 on failure. */
int tu_raw_connect_from(const char *from, int port);
int tu_raw_connect(int port);
/* The same without the hello: the first bytes are the caller's. */
int tu_raw_connect_bare_from(const char *from, int port);
int tu_raw_connect_bare(int port);

/* Whether GET /healthz on the HTTP port, sent from `from` (NULL: any
 * local address), is answered 200 within 3 s. */
int tu_http_healthz(const char *from, int port);

/* Sends all of p: 0, or -1 when the connection fails. */
int tu_send_all(int fd, const void *p, size_t len);

/* Whether fd becomes readable within ms (0: now). */
int tu_wait_readable(int fd, int ms);

/* Reads exactly len bytes within ms milliseconds in all. Returns 1, 0 at
 * EOF (or a reset), -1 on timeout. */
int tu_read_exact(int fd, void *p, size_t len, int ms);

typedef struct tu_rframe {
    uint8_t kind;
    uint64_t id;
    int code; /* ERROR: the KEEL_E* code */
    size_t len;
    uint8_t body[4096];
} tu_rframe;

/* Reads one frame (bodies up to 4096 bytes) within ms, past a hello
 * before it. 1, 0 at EOF, -1 on
 * timeout or a frame too large to keep. */
int tu_read_frame(int fd, tu_rframe *f, int ms);

/* The server closed fd: EOF (or a reset) within ms, no frame first. */
int tu_closed_within(int fd, int ms);

/* A process's resident memory (VmRSS) in KiB, or -1. */
long tu_rss_kb(pid_t pid);

#endif
