/* Real ZooKeeper servers for integration tests, started and stopped
 * through zk-conf/zk.sh on loopback ports that were free a moment before.
 * Every wait is bounded (the script waits at most ZK_READY_SECS, 80 s
 * unless set, for readiness; each script run is bounded at 90 s). */
#ifndef KEEL_TEST_ZK_H
#define KEEL_TEST_ZK_H

#include <stddef.h>

typedef struct tu_zk {
    char *dir;       /* owned: the servers' temporary directory */
    int port;        /* client port of the (first) server */
    int servers;     /* 1, or 3 for an ensemble */
    char hosts[128]; /* connection string: "127.0.0.1:P[,127.0.0.1:P+1,...]" */
    int proxy;       /* a split ensemble's first relayed port, else 0 */
} tu_zk;

/* 1 if the ZooKeeper server package is installed. */
int tu_zk_available(void);

/* The first of `count` consecutive loopback TCP ports that could all be
 * bound just now, or -1. */
int tu_zk_free_ports(int count);

/* Starts one server (servers == 1) or a 3-server ensemble (servers == 3)
 * with the given tickTime in a fresh temporary directory. The servers stop
 * on their own if this process dies. Retries once on other ports if the
 * first ones were taken meanwhile. Returns 0, or -1 with the script's
 * output on stderr. */
int tu_zk_start(tu_zk *zk, int servers, int tick_ms);

/* Starts a 3-server ensemble in which server 3 (client port zk->port + 2)
 * talks to servers 1 and 2 only through ports proxy..proxy+5, which the
 * caller relays (tcpproxy.h) before calling: proxy+0/+1 to server 1's
 * quorum/election ports (zk->port + 3, + 6), proxy+2/+3 to server 2's
 * (+ 4, + 7), proxy+4/+5 to server 3's (+ 5, + 8). Servers 1 and 2 start
 * first and server 3 joins them as a follower. The caller learns the
 * ports to relay to only from zk->port, so it passes a function that
 * starts the relays once the ports are chosen (arg is its own), and
 * returns 0 or -1. Returns 0, or -1 with the script's output on stderr. */
int tu_zk_start_split(tu_zk *zk, int tick_ms, int proxy,
                      int (*relay)(int base, void *arg), void *arg);

/* The mode a server reports ("leader", "follower", "standalone") into
 * buf; 0, or -1 when it does not answer with one. */
int tu_zk_mode(int client_port, char *buf, size_t cap);

/* Stops the server(s) and removes the directory. Safe on a zeroed or
 * already stopped tu_zk. */
void tu_zk_stop(tu_zk *zk);

/* Stops the server(s) (SIGTERM, as zk.sh does) but keeps their data,
 * directory and ports, for tu_zk_restart(). Returns 0 or -1. */
int tu_zk_halt(tu_zk *zk);

/* Starts halted server(s) again on the same data and ports: the same
 * ZooKeeper comes back with its znodes and sessions. A few attempts (the
 * port may be held for a moment, e.g. by a client's connect attempt that
 * got the same number as its own local port). Returns 0, or -1 with the
 * script's output on stderr. */
int tu_zk_restart(tu_zk *zk);

#endif
