/* Where a cluster lives in ZooKeeper, and the small text formats of its
 * znodes. Everything sits under the chroot-like prefix /keel/<cluster>:
 *
 *   config              "keel-cluster 1\nshards <S>\n" [+ "replicas <R>\n"
 *                       for R > 1; without it R is 1], created once
 *   controller_epoch    decimal epoch, bumped by compare-and-set by each
 *                       new controller; its version fences controller
 *                       writes (a check op in every multi)
 *   election/n_<sid>_<seq>  ephemeral sequential candidates (data: node)
 *   members/<node>      ephemeral; "addr <host:port>\ncaps <a,b>\n"
 *                       [+ "session_timeout <ms>\n": the session's
 *                       negotiated timeout; absent from nodes of earlier
 *                       versions]
 *                       [+ "store <32 hex digits>\n", the identity of the
 *                       node's store]
 *                       [+ "leaving 1\n" once the node is being drained];
 *                       its czxid is the node's incarnation
 *   nodes/<node>/state  what the node holds (nodestate.h)
 *   nodes/<node>        persistent; "store <32 hex digits>\n": the store
 *                       the node last ran on (storecheck.h)
 *   runs/<node>         persistent; "store <32 hex digits> run <N>\n": the
 *                       store and its run (keel_store_run) the node last
 *                       joined with; an older copy of that store is
 *                       refused (storecheck.h)
 *   forgotten/<node>    persistent, empty: the operator gave up the data
 *                       of that dead node (keel node forget); its units
 *                       move without it; removed when it joins again
 *   map                 the shard map (shardmap.h), controller-written
 *
 * Text formats are strict: one line per field, in this order, each ending
 * in '\n', nothing else; anything else is KEEL_ECORRUPT. */
#ifndef KEEL_COORDINATOR_LAYOUT_H
#define KEEL_COORDINATOR_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/shardmap.h"
#include "coordinator/zk.h"

#define KEEL_ADDR_MAX 255

typedef struct keel_layout {
    char root[KEEL_ZK_PATH_MAX / 4]; /* "/keel/<cluster>" */
} keel_layout;

/* Returns 0 or KEEL_EINVAL (cluster name invalid, see keel_name_valid). */
int keel_layout_init(keel_layout *l, const char *cluster);
/* root + "/" + a [+ "/" + b] [+ "/" + c] into buf (KEEL_ZK_PATH_MAX);
 * b and c may be NULL. Returns buf. */
char *keel_layout_path(const keel_layout *l, char *buf, const char *a,
                       const char *b, const char *c);

/* config: the shard count and the replica count (1..KEEL_MAP_MAX_REPLICAS;
 * its line is written only when above 1, and a config without it, as
 * clusters made before replication have, means 1). format takes replicas
 * 0 as 1. parse: 0, or KEEL_ECORRUPT; replicas may be NULL. */
size_t keel_config_format(char *buf, size_t cap, uint32_t shards,
                          int replicas);
int keel_config_parse(const void *data, size_t len, uint32_t *shards,
                      int *replicas);

/* controller_epoch */
size_t keel_epoch_format(char *buf, size_t cap, uint64_t epoch);
int keel_epoch_parse(const void *data, size_t len, uint64_t *epoch);

/* members/<node>: address and capabilities. */
typedef struct keel_member {
    char name[KEEL_NAME_MAX + 1];
    char addr[KEEL_ADDR_MAX + 1];
    char *caps[KEEL_MAP_MAX_CAPS]; /* owned */
    size_t ncaps;
    int64_t incarnation; /* czxid of the member znode */
    int64_t session;     /* its ephemeral owner */
    int leaving;         /* "leaving 1": being drained, owns nothing new */
    /* addr is not HOST:PORT (common/addr.h): nobody can connect to the
     * member, so it is treated as unreachable and placed nothing. */
    int addr_bad;
    char store[33];      /* its store's identity, "" when not published */
    int insecure;        /* "insecure 1": it runs without credentials */
    uint32_t session_timeout_ms; /* negotiated; 0: not published */
} keel_member;

void keel_member_clear(keel_member *m);

/* Whether a node declaring caps[0..n) declares cap (NULL or "", the
 * default group: every node does). */
int keel_caps_declare(char *const *caps, size_t n, const char *cap);
/* session_timeout_ms: the session's negotiated timeout, 0 to leave the
 * line out. 0, KEEL_EINVAL (address not HOST:PORT, bad capability) or
 * KEEL_ENOMEM.
 * *len is the byte count; *out is malloc'd. */
int keel_member_format(const char *addr, const char *const *caps,
                       size_t ncaps, uint32_t session_timeout_ms, char **out,
                       size_t *len);
/* Fills addr, addr_bad, caps, leaving, store, insecure and
 * session_timeout_ms of m (name and ids untouched). An address of
 * printable bytes that is not HOST:PORT is kept, with addr_bad set; data
 * that does not parse is KEEL_ECORRUPT. 0, KEEL_ECORRUPT or
 * KEEL_ENOMEM. */
int keel_member_parse(const void *data, size_t len, keel_member *m);
/* The member data with "leaving 1" appended into *out (malloc'd). 0,
 * KEEL_EEXIST (already leaving; *out NULL), KEEL_ECORRUPT or KEEL_ENOMEM. */
int keel_member_mark_leaving(const void *data, size_t len, char **out,
                             size_t *out_len);

#endif
