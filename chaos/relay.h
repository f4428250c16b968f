/* A TCP relay on a thread of its own: connections accepted on one
 * address are joined to a fixed target. keel-chaos puts ZooKeeper, which
 * listens on loopback only, at an address of the partition network
 * (chaos/netns.h) this way, so that the nodes reach it through their
 * network namespaces and the partitions can cut them from it; and joins
 * the servers of an ensemble to one another (chaos/cluster.h), so that
 * one can be cut from the others (chaos_relay_cut). */
#ifndef KEEL_CHAOS_RELAY_H
#define KEEL_CHAOS_RELAY_H

#include <pthread.h>
#include <stdatomic.h>

#define CHAOS_RELAY_MAX 64 /* connections relayed at once */

typedef struct chaos_relay {
    int lfd;          /* listening socket */
    int port;         /* where it listens */
    int stop_pipe[2]; /* written to stop the thread */
    char target[64];  /* IPv4 address of the target */
    int target_port;
    atomic_int cut;   /* chaos_relay_cut */
    pthread_t th;
    int started;
} chaos_relay;

/* Listens on host:port (0: a port the kernel picks; r->port says which)
 * and relays each connection to target:target_port from a thread. A
 * connection to the target that fails closes the accepted one. Returns 0
 * or -1 (errno). */
int chaos_relay_start(chaos_relay *r, const char *host, int port,
                      const char *target, int target_port);
/* With on, the relay stops moving bytes, as a network that drops every
 * packet would: its connections stay open but fall silent, and new ones
 * are accepted and held without reaching the target. With off again, the
 * silent connections carry on where they stopped and the held ones are
 * closed (their connect would have timed out). Takes effect within the
 * thread's next round, a few ms. */
void chaos_relay_cut(chaos_relay *r, int on);
/* Stops the thread and closes every connection. */
void chaos_relay_stop(chaos_relay *r);

#endif
