/* Real ZooKeeper servers for integration tests, started and stopped
 * through zk-conf/zk.sh on loopback ports that were free a moment before.
 * Every wait is bounded (the script waits at most ZK_READY_SECS for
 * readiness; tu_run bounds each script run at 30 s). */
#ifndef KEEL_TEST_ZK_H
#define KEEL_TEST_ZK_H

typedef struct tu_zk {
    char *dir;       /* owned: the servers' temporary directory */
    int port;        /* client port of the (first) server */
    int servers;     /* 1, or 3 for an ensemble */
    char hosts[128]; /* connection string: "127.0.0.1:P[,127.0.0.1:P+1,...]" */
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
