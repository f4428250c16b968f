/* The cluster a chaos run starts and hurts: one ZooKeeper server or an
 * ensemble of three (through zk-conf/zk.sh) and keeld processes joined to
 * it, each with its data
 * directory, its log and its activation log under the run directory.
 *
 * Every wait here is bounded. Processes started here die with the
 * harness: keeld through PR_SET_PDEATHSIG (so only the thread that
 * started them may start them: the runner's main thread), ZooKeeper
 * through zk.sh's ZK_WATCH_PID. When a keeld process is gone (killed,
 * or exited after a drain), its activation log gets the harness's line
 * "<ns> end" (chaos/actlog.h), since the node cannot say when it died. */
#ifndef KEEL_CHAOS_CLUSTER_H
#define KEEL_CHAOS_CLUSTER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "chaos/relay.h"

#define CHAOS_NODES_MAX 16
#define CHAOS_ZK_MAX 3 /* servers in an ensemble */
/* Relays between the servers of an ensemble: one per ordered pair of
 * servers and port (quorum, election). */
#define CHAOS_ZK_RELAYS (CHAOS_ZK_MAX * (CHAOS_ZK_MAX - 1) * 2)

typedef struct chaos_node {
    char id[16];     /* "n0", "n1", ... */
    char host[48];   /* the address it listens on and is reached at */
    int port;
    char addr[64];   /* host:port */
    char netns[32];  /* its network namespace, "" for the harness's */
    char *data;      /* DIR/nodes/<id> (owned) */
    char *log;       /* DIR/nodes/<id>.log: its stderr (owned) */
    char *actlog;    /* DIR/actlogs/<id>.log (owned) */
    pid_t pid;       /* 0: not running */
    int stopped;     /* SIGSTOP sent, no SIGCONT yet */
    int spare;       /* not started with the cluster: for join faults */
    int starts;      /* how many times it was started */
} chaos_node;

/* Called for every thing done to a process (start, kill, stop, exit...),
 * for the report's node events. what is a short word. */
typedef void (*chaos_cluster_event_cb)(void *data, const char *node,
                                       const char *what);

/* One ZooKeeper server. */
typedef struct chaos_zk_server {
    int port;    /* its client port on 127.0.0.1; 0 before the start */
    int up;      /* runs (maybe SIGSTOPped) */
    int stopped; /* SIGSTOPped (chaos_zk_sigstop) */
    int cut;     /* cut from the other servers (chaos_zk_cut) */
} chaos_zk_server;

typedef struct chaos_cluster {
    /* Set by the caller before chaos_cluster_init's fields are used: */
    const char *dir;     /* the run directory */
    const char *keeld;   /* the keeld program */
    const char *zk_conf; /* the directory of zk.sh */
    char name[48];       /* --cluster */
    int shards;          /* --shards */
    int session_ms;      /* --zk-session-timeout */
    int zk_tick_ms;      /* ZooKeeper's tickTime */
    const char *load;    /* keeld --load of every node, or NULL */
    int replicas;        /* keeld --replicas of every node (0: its default) */
    /* When set and *cancel is nonzero, the starts (ZooKeeper's attempts,
     * a node's wait for its first answer) give up at once: the caller was
     * interrupted. */
    const volatile sig_atomic_t *cancel;
    int no_actlog;       /* no --activation-log (keel-bench: a write(2)
                          * per activation would be measured too) */
    const char *const *args; /* more keeld arguments of every node,
                              * NULL-terminated, or NULL (at most 8) */
    FILE *log;           /* what the harness does, for people; may be NULL */
    chaos_cluster_event_cb on_event;
    void *event_data;
    /* ZooKeeper */
    int zk_servers;      /* 1 (also when 0) or CHAOS_ZK_MAX (an ensemble);
                          * set by the caller */
    char *zk_dir;        /* DIR/zk (owned); an ensemble's servers in
                          * DIR/zk/1..3 */
    char zk_host[48];    /* the address nodes reach it at */
    chaos_zk_server zk[CHAOS_ZK_MAX];
    char zk_hosts[160];  /* where the servers listen: the nodes' --zk */
    char zk_via[160];    /* --zk of the nodes when not zk_hosts (relays) */
    /* An ensemble's servers reach one another only through these relays
     * (zk.sh start-ensemble DIR BASE PROXY), so that one can be cut off. */
    int zk_proxy;        /* their first port; 0: none */
    chaos_relay zk_relays[CHAOS_ZK_RELAYS];
    /* Nodes: the first `base` start with the cluster, the rest are
     * spares. */
    chaos_node nodes[CHAOS_NODES_MAX];
    int nnodes, base;
} chaos_cluster;

/* Lays out n nodes (base of them not spares) with free ports on host
 * (NULL: 127.0.0.1), paths under c->dir. 0, or KEEL_EINVAL / KEEL_ENOMEM /
 * KEEL_EADDR (no free port). */
int chaos_cluster_init(chaos_cluster *c, int n, int base, const char *host);
/* Puts node i at host:port in network namespace netns (chaos/netns.h)
 * instead of the loopback port init chose. */
void chaos_cluster_place(chaos_cluster *c, int i, const char *host, int port,
                         const char *netns);
/* Kills whatever still runs (SIGCONT first for stopped nodes), frees. */
void chaos_cluster_free(chaos_cluster *c);

/* ZooKeeper: starts one server on a free port (or on its port again when
 * it was started before: a restart on the same data), or, with
 * zk_servers 3, the ensemble on free ports, its servers joined through
 * relays. Returns 0, or -1 with err (the script's last words are in
 * DIR/zk/zk-script.log). */
int chaos_zk_start(chaos_cluster *c, char *err, size_t errlen);
/* Starts server s (from 0), killed before, again on its data and port,
 * and waits until it serves. With one server, chaos_zk_start. 0, or -1
 * with err. */
int chaos_zk_restart(chaos_cluster *c, int s, char *err, size_t errlen);
/* SIGKILL server s and wait (at most 10 s) until it is gone. 0, or -1
 * when it was not running or did not die. */
int chaos_zk_kill(chaos_cluster *c, int s);
/* Stops every server (zk.sh stop), and the relays between them. */
void chaos_zk_stop(chaos_cluster *c);
/* Notices servers that exited by themselves (a server that cannot bind
 * its ports dies a few seconds after it started to serve): marks them
 * down, so that they are started again at the heal. Returns a bit
 * (1 << s) per server found gone. */
int chaos_zk_reap(chaos_cluster *c);
/* SIGSTOP / SIGCONT server s. 0, or -1 when it is not running (resp.
 * not stopped). */
int chaos_zk_sigstop(chaos_cluster *c, int s);
int chaos_zk_sigcont(chaos_cluster *c, int s);
/* Cuts server s of an ensemble from the other servers (on) or joins it
 * to them again (off): the relays between them fall silent. The nodes'
 * way to it is not touched (chaos/netns.h cuts that). 0, or -1 without
 * an ensemble. */
int chaos_zk_cut(chaos_cluster *c, int s, int on);
/* The server that says it leads the ensemble (asked with srvr), or -1;
 * with one server, 0 while it runs. */
int chaos_zk_leader(const chaos_cluster *c);
/* 1 when every server runs, not stopped, not cut off. */
int chaos_zk_all_up(const chaos_cluster *c);
/* "zk" for the one server, "zk1".."zk3" for an ensemble's: the name in
 * events.jsonl and the run's log. */
const char *chaos_zk_name(const chaos_cluster *c, int s);

/* The first of count consecutive ports on host (an IPv4 address) that
 * could all be bound a moment ago, below the kernel's ephemeral range
 * where there is room (see cluster.c), or -1. */
int chaos_free_ports(const char *host, int count);

/* A wait status (waitpid) in words, into buf: "exit status 1", "killed
 * by signal 9 (Killed)". Returns buf. */
const char *chaos_wait_status(int status, char *buf, size_t cap);

/* Starts node i and waits (at most 30 s) until it answers PING. 0, or -1
 * with err. */
int chaos_node_start(chaos_cluster *c, int i, char *err, size_t errlen);
/* SIGKILL node i, reap it, append its end line. 0, or -1 if it was not
 * running. */
int chaos_node_kill(chaos_cluster *c, int i);
int chaos_node_sigstop(chaos_cluster *c, int i);
int chaos_node_sigcont(chaos_cluster *c, int i);
/* Reaps node i if it exited on its own (and appends its end line):
 * 1 if it is not running (any more), 0 if it runs. */
int chaos_node_reap(chaos_cluster *c, int i);
/* Waits at most ms for node i to exit on its own: 1 when it has, 0 not. */
int chaos_node_wait_exit(chaos_cluster *c, int i, int ms);
/* 1 when node i runs and is not stopped. */
int chaos_node_up(const chaos_cluster *c, int i);

/* An INFO query (words separated by spaces, e.g. "drain n2") sent to
 * node i; *out gets the answer (malloc'd). Returns 0 or the KEEL_E*
 * error. timeout_ms bounds the connect and the answer. */
int chaos_node_info(const chaos_cluster *c, int i, const char *words,
                    int timeout_ms, char **out);

/* The value of the line "key VALUE" of a node's text answer (INFO,
 * STAT) into buf (cap bytes, cut to fit): 0, or -1 when no line has the
 * key. */
int chaos_line_value(const char *text, const char *key, char *buf,
                     size_t cap);

/* Node i's STAT answer ("name value" lines, counted since its start),
 * malloc'd into *out: 0, or a transport or node error. */
int chaos_node_stats(const chaos_cluster *c, int i, int timeout_ms,
                     char **out);

/* The controller as node i sees it, into name ("" when none or no
 * answer). Returns the index of that node, or -1. */
int chaos_cluster_controller(const chaos_cluster *c, int i, char *name,
                             size_t cap);

/* Whether the cluster has settled: every running node answers, lists
 * exactly the running nodes as members with one controller and the same
 * map epoch, and its units have owners among them with no move under
 * way. 1 settled, 0 not yet; why (if not NULL) says what is missing. */
int chaos_cluster_settled(const chaos_cluster *c, char *why, size_t cap);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in ns. */
int64_t chaos_mono_ns(void);
int64_t chaos_real_ns(void);
void chaos_sleep_ms(int64_t ms);

#endif
