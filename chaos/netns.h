/* Network partitions for keel-chaos run (docs/chaos.md, "partition"):
 * each node in a Linux network namespace of its own, with an address of
 * its own on a bridge in the harness's namespace; each ZooKeeper server
 * is reached at an address of the bridge of its own (through a relay,
 * chaos/relay.h), the clients talk from the first. A partition is a set of nftables rules
 * inside the nodes' namespaces that drop what goes to, or comes from, the
 * addresses a node is cut from; healing deletes them.
 *
 *   bridge kc<pid>br      10.A.B.1 (harness, clients), 10.A.B.2..4
 *                         (ZooKeeper servers 1..3)
 *   namespace kc<pid>-n<i> eth0 10.A.B.(10+i), a veth to the bridge
 *
 * Making these needs CAP_NET_ADMIN (root), the ip command (iproute2) and
 * nft (nftables): chaos_net_check says whether they are there. Every
 * command is bounded in time. What a harness killed with -9 leaves behind
 * is removed by the next run's setup (names carry the pid). */
#ifndef KEEL_CHAOS_NETNS_H
#define KEEL_CHAOS_NETNS_H

#include <stddef.h>
#include <stdio.h>

#include "chaos/cluster.h"

typedef struct chaos_net {
    char tag[16];      /* "kc<pid>" */
    char bridge[16];
    char host_addr[20]; /* the harness's address on the bridge */
    char zk_addr[CHAOS_ZK_MAX][20]; /* each ZooKeeper server's (its
                                     * relay's) */
    int n;
    char ns[CHAOS_NODES_MAX][24];
    char addr[CHAOS_NODES_MAX][20];
    char *dir;          /* where the rule files go (owned) */
    FILE *log;          /* commands that failed, for people; may be NULL */
    int made_bridge;
    int made[CHAOS_NODES_MAX];
} chaos_net;

/* Whether partitions can be made here: 0, or -1 with why (one line:
 * "not root", "no nft command (apt-get install nftables)", ...). */
int chaos_net_check(char *why, size_t cap);

/* Makes the bridge and n namespaces; rule files go to dir. 0, or -1 with
 * err (what was made is removed again). */
int chaos_net_setup(chaos_net *net, const char *dir, int n, FILE *log,
                    char *err, size_t errlen);
/* Removes the namespaces and the bridge. Safe on a zeroed chaos_net. */
void chaos_net_teardown(chaos_net *net);

/* Cuts: cut[i] has bit j set when node i and node j may not talk
 * (applied on both sides), zk[i] bit s when node i may not talk to
 * ZooKeeper server s (so 1 with one server). Replaces any partition in
 * place. 0, or -1 (the failed command is in the log). */
int chaos_net_apply(chaos_net *net, const unsigned *cut, const int *zk);
/* Removes every cut. 0 or -1. */
int chaos_net_heal(chaos_net *net);

#endif
