/* Shard map computation (rendezvous hashing), the `map` znode codec and the
 * `nodes/<node>/state` codec. The properties that matter for handoff cost
 * are checked over 4096 shards: one node joining or leaving moves about
 * 1/N of the units, and only those that must move. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "coordinator/codec.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "testutil.h"

#define SHARDS 4096

static char names[64][32];
static const char *game_caps[] = {"game"};
static const char *chat_caps[] = {"chat", "game"};

/* n members named node-00.., every third with "game", every fifth with
 * "chat" and "game". */
static void members(keel_map_member *m, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "node-%02u", (unsigned)(i % 100));
        m[i].name = names[i];
        m[i].caps = NULL;
        m[i].ncaps = 0;
        if (i % 5 == 0) {
            m[i].caps = chat_caps;
            m[i].ncaps = 2;
        } else if (i % 3 == 0) {
            m[i].caps = game_caps;
            m[i].ncaps = 1;
        }
    }
}

static const char *all_caps[] = {"chat", "game"};

static keel_shard_map compute(const keel_map_member *m, size_t n)
{
    keel_shard_map map;

    ck_assert_int_eq(keel_map_compute(m, n, all_caps, 2, SHARDS, 1, &map), 0);
    return map;
}

/* Units whose primary differs between a and b (by name). */
static size_t moved(const keel_shard_map *a, const keel_shard_map *b,
                    uint32_t cap)
{
    size_t s, n = 0;

    for (s = 0; s < SHARDS; s++) {
        const char *pa = keel_map_primary(a, cap, (uint32_t)s);
        const char *pb = keel_map_primary(b, cap, (uint32_t)s);
        if ((pa == NULL) != (pb == NULL) ||
            (pa != NULL && strcmp(pa, pb) != 0))
            n++;
    }
    return n;
}

START_TEST(test_deterministic_and_order_free)
{
    keel_map_member m[10], r[10];
    keel_shard_map a, b;
    size_t i;

    members(m, 10);
    for (i = 0; i < 10; i++)
        r[i] = m[9 - i];
    a = compute(m, 10);
    b = compute(r, 10);
    ck_assert(keel_map_same_placement(&a, &b));
    ck_assert_int_eq(a.ncaps, 3);
    ck_assert_str_eq(a.caps[0], "");
    ck_assert_str_eq(a.caps[1], "chat");
    ck_assert_int_eq(a.nnodes, 10);
    keel_map_free(&a);
    keel_map_free(&b);
}
END_TEST

START_TEST(test_only_capable_nodes)
{
    keel_map_member m[16];
    keel_shard_map a;
    uint32_t c, s;
    size_t per_node[16] = {0};

    members(m, 16);
    a = compute(m, 16);
    for (c = 0; c < a.ncaps; c++)
        for (s = 0; s < SHARDS; s++) {
            const char *p = keel_map_primary(&a, c, s);
            int idx;
            ck_assert_ptr_nonnull(p);
            idx = atoi(p + 5);
            if (strcmp(a.caps[c], "chat") == 0)
                ck_assert_int_eq(idx % 5, 0);
            else if (strcmp(a.caps[c], "game") == 0)
                ck_assert(idx % 5 == 0 || idx % 3 == 0);
            else
                per_node[idx]++;
        }
    /* the default group spreads over everyone, roughly evenly */
    for (s = 0; s < 16; s++) {
        ck_assert_uint_gt(per_node[s], SHARDS / 16 * 3 / 4);
        ck_assert_uint_lt(per_node[s], SHARDS / 16 * 5 / 4);
    }
    keel_map_free(&a);
}
END_TEST

START_TEST(test_capability_without_members)
{
    keel_map_member m[2];
    const char *caps[] = {"gpu"};
    keel_shard_map a;
    int ci;

    members(m, 2); /* node-00 has chat+game, node-01 nothing */
    ck_assert_int_eq(keel_map_compute(m, 2, caps, 1, 64, 1, &a), 0);
    ci = keel_map_cap_index(&a, "gpu");
    ck_assert_int_ge(ci, 0);
    ck_assert_ptr_null(keel_map_primary(&a, (uint32_t)ci, 7));
    keel_map_free(&a);
}
END_TEST

/* Joining: only units won by the newcomer move, about 1/(N+1) of them. */
static void check_join(size_t n)
{
    keel_map_member m[33];
    keel_shard_map before, after;
    uint32_t s;
    size_t mv, expect = SHARDS / (n + 1);
    int def;

    members(m, n + 1);
    before = compute(m, n);
    after = compute(m, n + 1);
    def = keel_map_cap_index(&after, "");
    mv = moved(&before, &after, (uint32_t)def);
    for (s = 0; s < SHARDS; s++) {
        const char *pa = keel_map_primary(&before, (uint32_t)def, s);
        const char *pb = keel_map_primary(&after, (uint32_t)def, s);
        if (strcmp(pa, pb) != 0)
            ck_assert_str_eq(pb, names[n]); /* moved only to the newcomer */
    }
    ck_assert_msg(mv >= expect * 7 / 10 && mv <= expect * 13 / 10,
                  "join of node %zu moved %zu units, expected ~%zu", n, mv,
                  expect);
    keel_map_free(&before);
    keel_map_free(&after);
}

START_TEST(test_join_moves_one_nth)
{
    check_join(2);
    check_join(4);
    check_join(9);
    check_join(31);
}
END_TEST

/* Leaving: exactly the leaver's units move, spread over the others. */
static void check_leave(size_t n, size_t gone)
{
    keel_map_member m[32], rest[32];
    keel_shard_map before, after;
    size_t i, k = 0, mv, owned = 0, expect = SHARDS / n;
    uint32_t s;
    int def;

    members(m, n);
    for (i = 0; i < n; i++)
        if (i != gone)
            rest[k++] = m[i];
    before = compute(m, n);
    after = compute(rest, n - 1);
    def = keel_map_cap_index(&after, "");
    mv = moved(&before, &after, (uint32_t)def);
    for (s = 0; s < SHARDS; s++) {
        const char *pa = keel_map_primary(&before, (uint32_t)def, s);
        const char *pb = keel_map_primary(&after, (uint32_t)def, s);
        if (strcmp(pa, names[gone]) == 0)
            owned++;
        else
            ck_assert_str_eq(pa, pb); /* everyone else keeps theirs */
    }
    ck_assert_uint_eq(mv, owned);
    ck_assert_msg(mv >= expect * 7 / 10 && mv <= expect * 13 / 10,
                  "leave of 1 of %zu moved %zu units, expected ~%zu", n, mv,
                  expect);
    keel_map_free(&before);
    keel_map_free(&after);
}

START_TEST(test_leave_moves_one_nth)
{
    check_leave(3, 0);
    check_leave(5, 2);
    check_leave(10, 9);
    check_leave(32, 17);
}
END_TEST

START_TEST(test_replicas_top_k)
{
    keel_map_member m[6];
    size_t top[3], top1[3], got;
    uint32_t s;

    members(m, 6);
    for (s = 0; s < 200; s++) {
        got = keel_rendezvous_top(m, 6, "", s, 3, top);
        ck_assert_uint_eq(got, 3);
        ck_assert(keel_rendezvous_score(m[top[0]].name, "", s) >=
                  keel_rendezvous_score(m[top[1]].name, "", s));
        ck_assert(keel_rendezvous_score(m[top[1]].name, "", s) >=
                  keel_rendezvous_score(m[top[2]].name, "", s));
        ck_assert(top[0] != top[1] && top[1] != top[2] && top[0] != top[2]);
        /* the primary with k=1 is the first of the list with k=3 */
        ck_assert_uint_eq(keel_rendezvous_top(m, 6, "", s, 1, top1), 1);
        ck_assert_uint_eq(top1[0], top[0]);
    }
    /* fewer capable members than k */
    ck_assert_uint_eq(keel_rendezvous_top(m, 6, "chat", 3, 3, top), 2);
}
END_TEST

START_TEST(test_compute_rejects_bad_input)
{
    keel_map_member m[2];
    const char *bad_caps[] = {"no/slash"};
    keel_shard_map a;

    members(m, 2);
    ck_assert_int_eq(keel_map_compute(m, 2, NULL, 0, 16, 0, &a), KEEL_EINVAL);
    ck_assert_int_eq(keel_map_compute(m, 2, NULL, 0, 0, 1, &a), KEEL_EINVAL);
    ck_assert_int_eq(keel_map_compute(m, 2, bad_caps, 1, 16, 1, &a),
                     KEEL_EINVAL);
    m[1].name = m[0].name;
    ck_assert_int_eq(keel_map_compute(m, 2, NULL, 0, 16, 1, &a), KEEL_EINVAL);
    m[1].name = "bad name";
    ck_assert_int_eq(keel_map_compute(m, 2, NULL, 0, 16, 1, &a), KEEL_EINVAL);
}
END_TEST

/* ---------------------------------------------------------------- codec */

static keel_shard_map busy_map(void)
{
    keel_map_member m[12];
    const char *caps[] = {"a", "b", "c", "chat", "d", "e", "game"};
    keel_shard_map a;
    uint32_t s;

    members(m, 12);
    ck_assert_int_eq(keel_map_compute(m, 12, caps, 7, SHARDS, 2, &a), 0);
    a.map_epoch = 123456789;
    for (s = 0; s < SHARDS; s++) {
        keel_map_unit *u = keel_map_unit_at(&a, 0, s);
        u->shard_epoch = s % 7 == 0 ? (uint64_t)s * 1000003 : 1;
        if (s % 13 == 0)
            u->target = (uint16_t)(s % a.nnodes);
    }
    return a;
}

START_TEST(test_codec_roundtrip_and_size)
{
    keel_shard_map a = busy_map(), b;
    uint8_t *buf;
    size_t len;

    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    /* 8 capabilities x 4096 shards with 2 replicas each, far below 1 MB */
    ck_assert_uint_lt(len, 200000);
    ck_assert_int_eq(keel_map_decode(buf, len, &b), 0);
    ck_assert(keel_map_same_placement(&a, &b));
    ck_assert_uint_eq(b.map_epoch, 123456789);
    ck_assert_uint_eq(b.shard_count, SHARDS);
    free(buf);
    keel_map_free(&a);
    keel_map_free(&b);
}
END_TEST

static int decode_copy(const uint8_t *bytes, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    keel_shard_map m;
    int rc;

    memcpy(copy, bytes, len);
    rc = keel_map_decode(copy, len, &m);
    free(copy);
    if (rc == 0)
        keel_map_free(&m);
    return rc;
}

START_TEST(test_codec_rejects_corruption)
{
    keel_map_member m[3];
    keel_shard_map a;
    uint8_t *buf;
    size_t len, i;
    uint64_t seed = 7;

    members(m, 3);
    ck_assert_int_eq(keel_map_compute(m, 3, all_caps, 2, 64, 1, &a), 0);
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    for (i = 0; i < len; i++) /* every truncation */
        ck_assert_int_eq(decode_copy(buf, i), KEEL_ECORRUPT);
    for (i = 0; i < len; i++) { /* every single-bit flip */
        buf[i] ^= (uint8_t)(1u << (i % 8));
        ck_assert_int_eq(decode_copy(buf, len), KEEL_ECORRUPT);
        buf[i] ^= (uint8_t)(1u << (i % 8));
    }
    for (i = 0; i < 2000; i++) { /* random garbage of random length */
        uint8_t junk[300];
        size_t j, n;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        n = (size_t)(seed >> 33) % sizeof junk;
        for (j = 0; j < n; j++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            junk[j] = (uint8_t)(seed >> 56);
        }
        if (n >= 4)
            memcpy(junk, "KMAP", 4);
        ck_assert_int_eq(decode_copy(junk, n), KEEL_ECORRUPT);
    }
    ck_assert_int_eq(decode_copy(buf, len), 0);
    free(buf);
    keel_map_free(&a);
}
END_TEST

/* Rewrites the trailing checksum so that corruption reaches the structural
 * checks behind it. */
static void resign(uint8_t *buf, size_t len)
{
    uint64_t sum = XXH3_64bits(buf, len - 8);
    int i;

    for (i = 0; i < 8; i++)
        buf[len - 8 + (size_t)i] = (uint8_t)(sum >> (56 - 8 * i));
}

START_TEST(test_codec_structure_checks)
{
    keel_map_member m[3];
    keel_shard_map a, b;
    uint8_t *buf, *again;
    size_t len, len2, i, v;
    static const uint8_t values[] = {0x00, 0x01, 0x07, 0x08, 0x0f, 0x10,
                                     0x7f, 0x80, 0xff};

    members(m, 3);
    ck_assert_int_eq(keel_map_compute(m, 3, all_caps, 2, 32, 1, &a), 0);
    keel_map_unit_at(&a, 1, 3)->target = 0;
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    for (i = 0; i + 8 < len; i++)
        for (v = 0; v < sizeof values; v++) {
            uint8_t old = buf[i];
            int rc;
            buf[i] = values[v];
            resign(buf, len);
            rc = decode_copy(buf, len);
            ck_assert(rc == 0 || rc == KEEL_ECORRUPT);
            if (rc == 0) {
                /* whatever decodes must be canonical */
                ck_assert_int_eq(keel_map_decode(buf, len, &b), 0);
                ck_assert_int_eq(keel_map_encode(&b, &again, &len2), 0);
                ck_assert_uint_eq(len2, len);
                ck_assert_int_eq(memcmp(again, buf, len), 0);
                free(again);
                keel_map_free(&b);
            }
            buf[i] = old;
        }
    resign(buf, len);
    ck_assert_int_eq(decode_copy(buf, len), 0);
    free(buf);
    keel_map_free(&a);
}
END_TEST

START_TEST(test_add_node_renumbers)
{
    keel_shard_map a;
    keel_map_unit *u;
    int zed, alpha;

    ck_assert_int_eq(keel_map_init(&a, 4), 0);
    ck_assert_int_eq(keel_map_add_cap(&a, ""), 0);
    zed = keel_map_add_node(&a, "zed");
    u = keel_map_unit_at(&a, 0, 1);
    u->replicas[0] = (uint16_t)zed;
    u->nreplicas = 1;
    u->target = (uint16_t)zed;
    alpha = keel_map_add_node(&a, "alpha");
    ck_assert_int_eq(alpha, 0);
    ck_assert_str_eq(keel_map_primary(&a, 0, 1), "zed");
    ck_assert_str_eq(a.nodes[u->target], "zed");
    ck_assert_int_eq(keel_map_add_cap(&a, "b"), 1);
    ck_assert_int_eq(keel_map_add_cap(&a, "a"), 1);
    ck_assert_str_eq(keel_map_primary(&a, 0, 1), "zed");
    ck_assert_ptr_null(keel_map_primary(&a, 1, 1));
    keel_map_compact_nodes(&a);
    ck_assert_int_eq(a.nnodes, 1);
    ck_assert_str_eq(keel_map_primary(&a, 0, 1), "zed");
    ck_assert_int_eq(keel_map_add_node(&a, "bad/name"), KEEL_EINVAL);
    keel_map_free(&a);
}
END_TEST

/* ----------------------------------------------------------- node state */

START_TEST(test_node_state_roundtrip)
{
    keel_node_state st, back;
    const keel_state_entry *e;
    uint8_t *buf;
    size_t len, i;
    uint32_t s;

    keel_node_state_init(&st);
    st.map_epoch = 42;
    st.incarnation = 0x100000007LL;
    for (s = 0; s < 300; s += 3)
        ck_assert_int_eq(
            keel_node_state_put(&st, "game", s, KEEL_ROLE_PRIMARY, s + 1, NULL),
            0);
    ck_assert_int_eq(keel_node_state_put(&st, "", 5, KEEL_ROLE_RELEASED, 9,
                                         "node-b"),
                     0);
    ck_assert_int_eq(keel_node_state_put(&st, "", 2, KEEL_ROLE_RELEASED, 3,
                                         "node-a"),
                     0);
    ck_assert_int_eq(
        keel_node_state_put(&st, "game", 3, KEEL_ROLE_PRIMARY, 77, NULL), 0);
    keel_node_state_remove(&st, "game", 6);
    ck_assert_int_eq(keel_node_state_put(&st, "x", 1, 9, 1, NULL), KEEL_EINVAL);
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &back), 0);
    ck_assert_uint_eq(back.map_epoch, 42);
    ck_assert_int_eq(back.incarnation, 0x100000007LL);
    ck_assert_uint_eq(back.n, st.n);
    e = keel_node_state_find(&back, "game", 3);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->shard_epoch, 77);
    ck_assert_ptr_null(keel_node_state_find(&back, "game", 6));
    e = keel_node_state_find(&back, "", 5);
    ck_assert_int_eq(e->role, KEEL_ROLE_RELEASED);
    ck_assert_str_eq(back.names[e->to], "node-b");
    e = keel_node_state_find(&back, "", 2);
    ck_assert_str_eq(back.names[e->to], "node-a");

    for (i = 0; i < len; i++) {
        keel_node_state junk;
        uint8_t *copy = malloc(i ? i : 1);
        memcpy(copy, buf, i);
        ck_assert_int_eq(keel_node_state_decode(copy, i, &junk),
                         KEEL_ECORRUPT);
        free(copy);
        buf[i] ^= 0x10;
        ck_assert_int_eq(keel_node_state_decode(buf, len, &junk),
                         KEEL_ECORRUPT);
        buf[i] ^= 0x10;
    }
    free(buf);
    keel_node_state_free(&st);
    keel_node_state_free(&back);
}
END_TEST

/* ------------------------------------------------- format 2: replicas */

static const char *SID_A = "0123456789abcdef0123456789abcdef";
static const char *SID_B = "fedcba9876543210fedcba9876543210";

/* A map of 8 shards over node-a..node-e with replica sets of every size,
 * in-sync flags and store ids. */
static keel_shard_map replica_map(void)
{
    keel_shard_map a;
    const char *nn[] = {"node-a", "node-b", "node-c", "node-d", "node-e"};
    uint32_t s;
    int i;

    ck_assert_int_eq(keel_map_init(&a, 8), 0);
    ck_assert_int_eq(keel_map_add_cap(&a, ""), 0);
    for (i = 0; i < 5; i++)
        ck_assert_int_ge(keel_map_add_node(&a, nn[i]), 0);
    ck_assert_int_eq(keel_map_set_store(&a, 0, SID_A), 0);
    ck_assert_int_eq(keel_map_set_store(&a, 3, SID_B), 0);
    a.map_epoch = 9;
    for (s = 0; s < 6; s++) {
        keel_map_unit *u = keel_map_unit_at(&a, 0, s);
        u->nreplicas = (uint8_t)s; /* 0..5 replicas */
        for (i = 0; i < (int)s; i++)
            u->replicas[i] = (uint16_t)((s + (uint32_t)i) % 5);
        u->shard_epoch = s > 0 ? 3 * s : 0;
        u->insync = s > 0 ? (uint8_t)(1u | ((0x1eu & (s * 7)) &
                                           ((1u << s) - 1)))
                          : 0;
    }
    keel_map_unit_at(&a, 0, 4)->target = 1;
    keel_map_unit_at(&a, 0, 2)->promoted = 1;
    keel_map_unit_at(&a, 0, 5)->promoted = 1;
    return a;
}

/* Format 4: a promoted unit's fallbacks (the replicas that were in sync
 * before its promotion) and the mzxid of its primary's state then. Only
 * written while a unit has some; decoding refuses flags on the primary,
 * beyond the list, or without their mzxid. */
START_TEST(test_map_fallback_roundtrip)
{
    keel_shard_map a = replica_map(), b;
    keel_map_unit *u5 = keel_map_unit_at(&a, 0, 5);
    uint8_t *buf;
    size_t len, at;

    u5->fallback = 0x14; /* replicas 2 and 4 */
    u5->fallback_since = 123456789;
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 4); /* format */
    ck_assert_int_eq(keel_map_decode(buf, len, &b), 0);
    ck_assert(keel_map_same_placement(&a, &b));
    ck_assert_uint_eq(keel_map_unit_at(&b, 0, 5)->fallback, 0x14);
    ck_assert_uint_eq(keel_map_unit_at(&b, 0, 5)->fallback_since, 123456789);
    ck_assert_uint_eq(keel_map_unit_at(&b, 0, 2)->fallback, 0);
    /* the mzxid is part of the placement */
    keel_map_unit_at(&b, 0, 5)->fallback_since++;
    ck_assert(!keel_map_same_placement(&a, &b));
    keel_map_free(&b);

    /* the last promoted unit (5) is the last in the list: its flags byte
     * is 8 (checksum) + 4 (varint 123456789) + 1 bytes from the end */
    at = len - 8 - 4 - 1;
    ck_assert_uint_eq(buf[at], 0x14);
    buf[at] = 0x15; /* the primary's */
    resign(buf, len);
    ck_assert_int_eq(keel_map_decode(buf, len, &b), KEEL_ECORRUPT);
    buf[at] = 0x34; /* beyond the 5 replicas */
    resign(buf, len);
    ck_assert_int_eq(keel_map_decode(buf, len, &b), KEEL_ECORRUPT);
    buf[at] = 0x14;
    resign(buf, len);
    ck_assert_int_eq(keel_map_decode(buf, len, &b), 0);
    keel_map_free(&b);
    free(buf);

    /* no mzxid: not written (format 3 again), and refused when read */
    u5->fallback_since = 0;
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 3);
    free(buf);
    u5->fallback_since = 1;
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 4);
    ck_assert_uint_eq(buf[len - 9], 1);
    buf[len - 9] = 0;
    resign(buf, len);
    ck_assert_int_eq(keel_map_decode(buf, len, &b), KEEL_ECORRUPT);
    free(buf);
    /* on a unit not promoted: not written */
    u5->promoted = 0;
    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 3);
    free(buf);
    keel_map_free(&a);
}
END_TEST

START_TEST(test_map_v2_roundtrip)
{
    keel_shard_map a = replica_map(), b;
    uint8_t *buf, *again;
    size_t len, len2;
    uint32_t s;

    ck_assert_int_eq(keel_map_encode(&a, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 3); /* format */
    ck_assert_int_eq(keel_map_decode(buf, len, &b), 0);
    ck_assert(keel_map_same_placement(&a, &b));
    ck_assert_str_eq(b.store_ids[0], SID_A);
    ck_assert_str_eq(b.store_ids[1], "");
    ck_assert_str_eq(b.store_ids[3], SID_B);
    for (s = 0; s < 8; s++) {
        const keel_map_unit *ua = keel_map_unit_at(&a, 0, s);
        const keel_map_unit *ub = keel_map_unit_at(&b, 0, s);
        ck_assert_uint_eq(ua->insync, ub->insync);
        ck_assert_uint_eq(ua->nreplicas, ub->nreplicas);
        ck_assert_uint_eq(ub->promoted, s == 2 || s == 5);
    }
    ck_assert_int_eq(keel_map_insync(keel_map_unit_at(&b, 0, 5), 0), 1);
    ck_assert_int_eq(keel_map_insync(keel_map_unit_at(&b, 0, 5), 5), 0);
    ck_assert_int_eq(keel_map_replica_pos(keel_map_unit_at(&b, 0, 3), 4), 1);
    ck_assert_int_eq(keel_map_replica_pos(keel_map_unit_at(&b, 0, 3), 1), -1);
    ck_assert_int_eq(keel_map_encode(&b, &again, &len2), 0);
    ck_assert_uint_eq(len2, len);
    ck_assert_int_eq(memcmp(again, buf, len), 0);
    free(again);

    /* in-sync sets and store ids are part of the placement */
    keel_map_unit_at(&b, 0, 3)->insync &= (uint8_t)~4u;
    ck_assert(!keel_map_same_placement(&a, &b));
    keel_map_unit_at(&b, 0, 3)->insync |= 4u;
    ck_assert(keel_map_same_placement(&a, &b));
    /* so are promotions */
    keel_map_unit_at(&b, 0, 2)->promoted = 0;
    ck_assert(!keel_map_same_placement(&a, &b));
    keel_map_unit_at(&b, 0, 2)->promoted = 1;
    ck_assert_int_eq(keel_map_set_store(&b, 3, SID_A), 0);
    ck_assert(!keel_map_same_placement(&a, &b));
    /* a copy keeps the store ids */
    keel_map_free(&b);
    ck_assert_int_eq(keel_map_copy(&b, &a), 0);
    ck_assert_str_eq(b.store_ids[3], SID_B);
    ck_assert(keel_map_same_placement(&a, &b));
    keel_map_free(&b);
    free(buf);
    keel_map_free(&a);
}
END_TEST

START_TEST(test_map_store_ids)
{
    keel_shard_map a;
    int zed, alpha;

    ck_assert_int_eq(keel_map_init(&a, 2), 0);
    ck_assert_int_eq(keel_map_add_cap(&a, ""), 0);
    zed = keel_map_add_node(&a, "zed");
    ck_assert_int_eq(keel_map_set_store(&a, (uint32_t)zed, SID_A), 0);
    ck_assert_int_eq(keel_map_set_store(&a, 1, SID_A), KEEL_EINVAL);
    ck_assert_int_eq(keel_map_set_store(&a, 0, "0123"), KEEL_EINVAL);
    ck_assert_int_eq(
        keel_map_set_store(&a, 0, "0123456789ABCDEF0123456789abcdef"),
        KEEL_EINVAL);
    ck_assert_str_eq(a.store_ids[0], SID_A);
    /* a node added before keeps the ids aligned */
    alpha = keel_map_add_node(&a, "alpha");
    ck_assert_int_eq(alpha, 0);
    ck_assert_str_eq(a.store_ids[0], "");
    ck_assert_str_eq(a.store_ids[1], SID_A);
    ck_assert_int_eq(keel_map_set_store(&a, 0, SID_B), 0);
    /* all zeros cannot be told from unknown: it is unknown */
    ck_assert_int_eq(
        keel_map_set_store(&a, 0, "00000000000000000000000000000000"), 0);
    ck_assert_str_eq(a.store_ids[0], "");
    ck_assert_int_eq(keel_map_set_store(&a, 0, SID_B), 0);
    /* compaction keeps each id with its node */
    keel_map_unit_at(&a, 0, 1)->replicas[0] = 1;
    keel_map_unit_at(&a, 0, 1)->nreplicas = 1;
    keel_map_compact_nodes(&a);
    ck_assert_uint_eq(a.nnodes, 1);
    ck_assert_str_eq(a.nodes[0], "zed");
    ck_assert_str_eq(a.store_ids[0], SID_A);
    keel_map_free(&a);
}
END_TEST

/* A map in format 1 as nodes of earlier versions wrote it: 2 shards, the
 * capability "", nodes "n1" and "n2"; shard 0 primary n1 at epoch 4 with
 * n2 listed, shard 1 never owned. With hdr the header of shard 0. */
static size_t v1_map(uint8_t **out, unsigned format, unsigned hdr)
{
    keel_wbuf w = {0};
    size_t len;

    keel_wbuf_put(&w, "KMAP", 4);
    keel_wbuf_u8(&w, format);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_be(&w, 77, 8);
    keel_wbuf_be(&w, 2, 4);
    keel_wbuf_be(&w, 1, 2);
    keel_wbuf_be(&w, 2, 2);
    keel_wbuf_str8(&w, "");
    keel_wbuf_str8(&w, "n1");
    keel_wbuf_str8(&w, "n2");
    keel_wbuf_u8(&w, hdr);
    keel_wbuf_varint(&w, 0);
    keel_wbuf_varint(&w, 1);
    keel_wbuf_varint(&w, 4);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_varint(&w, 0);
    ck_assert_int_eq(keel_wbuf_seal(&w, out, &len), 0);
    return len;
}

START_TEST(test_map_v1_decodes)
{
    keel_shard_map m, back;
    uint8_t *buf, *enc;
    size_t len, elen;

    len = v1_map(&buf, 1, 2);
    ck_assert_int_eq(keel_map_decode(buf, len, &m), 0);
    ck_assert_uint_eq(m.map_epoch, 77);
    ck_assert_str_eq(keel_map_primary(&m, 0, 0), "n1");
    /* format 1: the primary alone in sync, store ids unknown */
    ck_assert_uint_eq(keel_map_unit_at(&m, 0, 0)->insync, 1);
    ck_assert_uint_eq(keel_map_unit_at(&m, 0, 1)->insync, 0);
    ck_assert_str_eq(m.store_ids[0], "");
    ck_assert_str_eq(m.store_ids[1], "");
    /* written again, it is format 3 and means the same */
    ck_assert_int_eq(keel_map_encode(&m, &enc, &elen), 0);
    ck_assert_uint_eq(enc[4], 3);
    ck_assert_int_eq(keel_map_decode(enc, elen, &back), 0);
    ck_assert(keel_map_same_placement(&m, &back));
    free(enc);
    keel_map_free(&back);
    keel_map_free(&m);
    free(buf);
    /* format 1 has no in-sync flags; format 4 does not exist */
    len = v1_map(&buf, 1, 2 | 0x10);
    ck_assert_int_eq(keel_map_decode(buf, len, &m), KEEL_ECORRUPT);
    free(buf);
    len = v1_map(&buf, 4, 2);
    ck_assert_int_eq(keel_map_decode(buf, len, &m), KEEL_ECORRUPT);
    free(buf);
}
END_TEST

/* Format 2 with one unit of header hdr: replicas 0, 1, 2 (of 3 nodes) at
 * shard_epoch epoch. */
static size_t vx_units(uint8_t **out, unsigned format, uint32_t nunits,
                       unsigned hdr, uint64_t epoch, const uint64_t *tail,
                       size_t ntail)
{
    static const uint8_t sid[16] = {1, 2, 3};
    keel_wbuf w = {0};
    unsigned k;
    uint32_t s;
    size_t len;

    keel_wbuf_put(&w, "KMAP", 4);
    keel_wbuf_u8(&w, format);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_be(&w, 1, 8);
    keel_wbuf_be(&w, nunits, 4);
    keel_wbuf_be(&w, 1, 2);
    keel_wbuf_be(&w, 3, 2);
    keel_wbuf_str8(&w, "");
    keel_wbuf_str8(&w, "a");
    keel_wbuf_put(&w, sid, 16);
    keel_wbuf_str8(&w, "b");
    keel_wbuf_put(&w, sid, 16);
    keel_wbuf_str8(&w, "c");
    keel_wbuf_put(&w, sid, 16);
    for (s = 0; s < nunits; s++) {
        /* the last unit has no primary */
        unsigned h = s + 1 < nunits || nunits == 1 ? hdr : 0;
        keel_wbuf_u8(&w, h);
        for (k = 0; k < (h & 7); k++)
            keel_wbuf_varint(&w, k);
        keel_wbuf_varint(&w, h ? epoch : 0);
    }
    for (k = 0; k < ntail; k++)
        keel_wbuf_varint(&w, tail[k]);
    ck_assert_int_eq(keel_wbuf_seal(&w, out, &len), 0);
    return len;
}

/* Format 2 with one unit of header hdr: replicas 0, 1, 2 (of 3 nodes) at
 * shard_epoch epoch. */
static size_t v2_unit(uint8_t **out, unsigned hdr, uint64_t epoch)
{
    return vx_units(out, 2, 1, hdr, epoch, NULL, 0);
}

START_TEST(test_map_insync_flags_checked)
{
    static const struct {
        unsigned hdr;
        uint64_t epoch;
        int rc;
        uint8_t insync;
    } cases[] = {
        {0x03, 5, 0, 0x01},          /* primary only in sync */
        {0x13, 5, 0, 0x03},          /* replicas[1] too */
        {0x33, 5, 0, 0x07},          /* everyone */
        {0x23, 5, 0, 0x05},          /* replicas[2], not [1] */
        {0x43, 5, KEEL_ECORRUPT, 0}, /* replicas[3]: beyond the count */
        {0x11, 5, KEEL_ECORRUPT, 0}, /* a lone primary's backup flag */
        {0x13, 0, KEEL_ECORRUPT, 0}, /* in sync without a primary */
        {0x03, 0, 0, 0x00},          /* listed, never owned: no flags */
        {0x06, 5, KEEL_ECORRUPT, 0}, /* 6 replicas */
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keel_shard_map m;
        uint8_t *buf, *enc;
        size_t len, elen;
        int rc;
        len = v2_unit(&buf, cases[i].hdr, cases[i].epoch);
        rc = keel_map_decode(buf, len, &m);
        ck_assert_msg(rc == cases[i].rc, "case %zu: %d", i, rc);
        if (rc == 0) {
            ck_assert_uint_eq(m.units[0].insync, cases[i].insync);
            ck_assert_str_eq(m.store_ids[2],
                             "01020300000000000000000000000000");
            /* written again in format 3: the same but for the format
             * byte and an empty promoted list */
            ck_assert_int_eq(keel_map_encode(&m, &enc, &elen), 0);
            ck_assert_uint_eq(elen, len + 1);
            ck_assert_uint_eq(enc[4], 3);
            ck_assert_int_eq(memcmp(enc + 5, buf + 5, len - 13), 0);
            ck_assert_uint_eq(enc[len - 8], 0);
            free(enc);
            keel_map_free(&m);
        }
        free(buf);
    }
}
END_TEST

/* Format 3's promoted list: ascending unit indexes (as gaps), each unit
 * with a primary. Units 0..2 have one at epoch 5, unit 3 has none. */
START_TEST(test_map_promoted_checked)
{
    static const struct {
        uint64_t tail[5];
        size_t ntail;
        int rc;
        unsigned promoted; /* bit per unit */
    } cases[] = {
        {{0}, 1, 0, 0},              /* none */
        {{1, 2}, 2, 0, 4},           /* unit 2 */
        {{2, 0, 2}, 3, 0, 5},        /* units 0 and 2 */
        {{3, 0, 1, 1}, 4, 0, 7},     /* all three with a primary */
        {{1, 3}, 2, KEEL_ECORRUPT, 0},    /* unit 3 has no primary */
        {{2, 1, 0}, 3, KEEL_ECORRUPT, 0}, /* the same unit twice */
        {{1, 4}, 2, KEEL_ECORRUPT, 0},    /* beyond the units */
        {{5, 0, 1, 1, 1}, 5, KEEL_ECORRUPT, 0}, /* more than units */
        {{2, 1}, 2, KEEL_ECORRUPT, 0},    /* truncated */
        {{0}, 0, KEEL_ECORRUPT, 0},       /* no list at all */
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keel_shard_map m, back;
        uint8_t *buf, *enc;
        size_t len, elen;
        uint32_t s;
        int rc;
        len = vx_units(&buf, 3, 4, 0x13, 5, cases[i].tail, cases[i].ntail);
        rc = keel_map_decode(buf, len, &m);
        ck_assert_msg(rc == cases[i].rc, "case %zu: %d", i, rc);
        if (rc == 0) {
            for (s = 0; s < 4; s++)
                ck_assert_uint_eq(m.units[s].promoted,
                                  (cases[i].promoted >> s) & 1);
            ck_assert_int_eq(keel_map_encode(&m, &enc, &elen), 0);
            ck_assert_uint_eq(elen, len);
            ck_assert_int_eq(memcmp(enc, buf, len), 0);
            ck_assert_int_eq(keel_map_decode(enc, elen, &back), 0);
            ck_assert(keel_map_same_placement(&m, &back));
            keel_map_free(&back);
            free(enc);
            keel_map_free(&m);
        }
        free(buf);
    }
    /* format 2 has no list */
    {
        static const uint64_t one[] = {1, 2};
        keel_shard_map m;
        uint8_t *buf;
        size_t len = vx_units(&buf, 2, 4, 0x13, 5, one, 2);
        ck_assert_int_eq(keel_map_decode(buf, len, &m), KEEL_ECORRUPT);
        free(buf);
    }
}
END_TEST

START_TEST(test_node_state_drops)
{
    keel_node_state st, back;
    const keel_state_entry *e;
    uint8_t *buf;
    size_t len, i;

    keel_node_state_init(&st);
    st.map_epoch = 5;
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 1, KEEL_ROLE_PRIMARY, 3, NULL), 0);
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 2, KEEL_ROLE_RELEASED, 3, "node-m"), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-x"), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-c"), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-x"), 0);
    /* a new name sorting before the others renumbers every list */
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-a"), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-z"), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-q"),
                     KEEL_EOVERLOAD);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 2, "node-a"),
                     KEEL_ENOTFOUND); /* RELEASED */
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 3, "node-a"),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "no/de"),
                     KEEL_EINVAL);
    e = keel_node_state_find(&st, "", 2);
    ck_assert_str_eq(st.names[e->to], "node-m");
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 3);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &back), 0);
    e = keel_node_state_find(&back, "", 1);
    ck_assert_uint_eq(e->ndrop, 4);
    ck_assert_uint_eq(e->nadd, 0);
    ck_assert_str_eq(back.names[e->drop[0]], "node-a");
    ck_assert_str_eq(back.names[e->drop[1]], "node-c");
    ck_assert_str_eq(back.names[e->drop[2]], "node-x");
    ck_assert_str_eq(back.names[e->drop[3]], "node-z");
    e = keel_node_state_find(&back, "", 2);
    ck_assert_str_eq(back.names[e->to], "node-m");
    ck_assert_uint_eq(e->ndrop, 0);
    keel_node_state_free(&back);
    for (i = 0; i < len; i++) {
        uint8_t *copy = malloc(i ? i : 1);
        memcpy(copy, buf, i);
        ck_assert_int_eq(keel_node_state_decode(copy, i, &back),
                         KEEL_ECORRUPT);
        free(copy);
    }
    free(buf);
    /* replacing the entry clears its list */
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 1, KEEL_ROLE_PRIMARY, 4, NULL), 0);
    ck_assert_uint_eq(keel_node_state_find(&st, "", 1)->ndrop, 0);
    keel_node_state_free(&st);
}
END_TEST

/* A node state written by hand: one entry of role byte `role`, followed
 * by `tail` (n bytes), in format `format`; names "a", "b". */
static size_t raw_state(uint8_t **out, unsigned format, unsigned role,
                        const uint8_t *tail, size_t n)
{
    keel_wbuf w = {0};
    size_t len;

    keel_wbuf_put(&w, "KNST", 4);
    keel_wbuf_u8(&w, format);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_be(&w, 1, 8);
    keel_wbuf_be(&w, 2, 8);
    keel_wbuf_be(&w, 1, 2);
    keel_wbuf_be(&w, 2, 2);
    keel_wbuf_str8(&w, "");
    keel_wbuf_str8(&w, "a");
    keel_wbuf_str8(&w, "b");
    keel_wbuf_varint(&w, 1);
    keel_wbuf_varint(&w, 0);
    keel_wbuf_varint(&w, 7);
    keel_wbuf_u8(&w, role);
    keel_wbuf_varint(&w, 3);
    keel_wbuf_put(&w, tail, n);
    ck_assert_int_eq(keel_wbuf_seal(&w, out, &len), 0);
    return len;
}

/* Store ids in an add list: 16 bytes (S1 ends in 1, S2 in 2, Z0 is the
 * unknown one, all zero). */
#define S1 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
#define S2 0xab, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2
#define Z0 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0

START_TEST(test_node_state_v1_and_bad_drops)
{
    static const struct {
        unsigned format, role;
        uint8_t tail[48];
        size_t n;
        int rc;
    } cases[] = {
        {1, 0x01, {0}, 0, 0},                 /* format 1 PRIMARY */
        {1, 0x02, {1}, 1, 0},                 /* format 1 RELEASED to b */
        {2, 0x81, {2, 0, 1}, 3, 0},           /* drops a, b */
        {1, 0x81, {1, 0}, 2, KEEL_ECORRUPT},  /* no drop lists in format 1 */
        {2, 0x82, {1, 1, 0}, 3, KEEL_ECORRUPT}, /* RELEASED with drops */
        {2, 0x81, {0}, 1, KEEL_ECORRUPT},     /* empty list */
        {2, 0x81, {2, 1, 0}, 3, KEEL_ECORRUPT}, /* not ascending */
        {2, 0x81, {2, 0, 0}, 3, KEEL_ECORRUPT}, /* twice */
        {2, 0x81, {1, 2}, 2, KEEL_ECORRUPT},  /* no such name */
        {2, 0x81, {5, 0, 1}, 3, KEEL_ECORRUPT}, /* more than 4 */
        {2, 0x41, {0}, 0, KEEL_ECORRUPT},     /* no add lists in format 2 */
        {2, 0x41, {1, 0, S1}, 18, KEEL_ECORRUPT},
        {3, 0x01, {0}, 0, 0},                 /* format 3 PRIMARY */
        {3, 0x81, {1, 1}, 2, 0},              /* drops b */
        {3, 0x41, {1, 0, S1}, 18, 0},         /* adds a */
        {3, 0x41, {2, 0, S1, 1, S2}, 35, 0},  /* adds a, b */
        {3, 0xc1, {1, 1, 2, 0, S2, 1, S1}, 37, 0}, /* drops b, adds a, b */
        {3, 0x42, {1, 1, 0, S1}, 19, KEEL_ECORRUPT}, /* RELEASED with adds */
        {3, 0x41, {0}, 1, KEEL_ECORRUPT},     /* empty list */
        {3, 0x41, {1, 0, Z0}, 18, KEEL_ECORRUPT}, /* the unknown store */
        {3, 0x41, {2, 1, S1, 0, S2}, 35, KEEL_ECORRUPT}, /* not ascending */
        {3, 0x41, {2, 0, S1, 0, S2}, 35, KEEL_ECORRUPT}, /* twice */
        {3, 0x41, {1, 2, S1}, 18, KEEL_ECORRUPT}, /* no such name */
        {3, 0x41, {5, 0, S1}, 18, KEEL_ECORRUPT}, /* more than 4 */
        {3, 0x41, {1, 0, S1}, 17, KEEL_ECORRUPT}, /* store cut short */
        {3, 0x21, {0}, 0, KEEL_ECORRUPT},     /* unknown bit */
        {4, 0x01, {0}, 0, KEEL_ECORRUPT},     /* no format 4 */
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        keel_node_state st;
        uint8_t *buf, *enc;
        size_t len, elen;
        int rc;
        len = raw_state(&buf, cases[i].format, cases[i].role, cases[i].tail,
                        cases[i].n);
        rc = keel_node_state_decode(buf, len, &st);
        ck_assert_msg(rc == cases[i].rc, "case %zu: %d", i, rc);
        if (rc == 0) {
            /* written back in format 3, otherwise the same */
            ck_assert_int_eq(keel_node_state_encode(&st, &enc, &elen), 0);
            ck_assert_uint_eq(elen, len);
            ck_assert_uint_eq(enc[4], 3);
            ck_assert_int_eq(memcmp(enc + 5, buf + 5, len - 5 - 8), 0);
            if (cases[i].format == 3)
                ck_assert_int_eq(memcmp(enc, buf, len), 0);
            free(enc);
            keel_node_state_free(&st);
        }
        free(buf);
    }
}
END_TEST

/* Format 3: a primary's add list, names and store ids, through the
 * builder and the codec. */
START_TEST(test_node_state_adds)
{
    static const char *s1 = "00000000000000000000000000000001";
    static const char *s2 = "ab000000000000000000000000000002";
    keel_node_state st, back;
    const keel_state_entry *e;
    uint8_t *buf;
    size_t len, i;

    keel_node_state_init(&st);
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 1, KEEL_ROLE_PRIMARY, 3, NULL), 0);
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 2, KEEL_ROLE_RELEASED, 3, "node-m"), 0);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-x", s1), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "", 1, "node-x"), 0);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-c", s2), 0);
    /* listed already: takes the new store */
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-x", s2), 0);
    /* a new name sorting before the others renumbers every list */
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-a", s1), 0);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-z", s1), 0);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-q", s1),
                     KEEL_EOVERLOAD);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 2, "node-a", s1),
                     KEEL_ENOTFOUND); /* RELEASED */
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 3, "node-a", s1),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "no/de", s1),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-a", NULL),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_state_put_add(&st, "", 1, "node-a", "01"),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_state_put_add(
                         &st, "", 1, "node-a",
                         "0000000000000000000000000000000A"),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_state_put_add(
                         &st, "", 1, "node-a",
                         "00000000000000000000000000000000"),
                     KEEL_EINVAL);
    e = keel_node_state_find(&st, "", 2);
    ck_assert_str_eq(st.names[e->to], "node-m");
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    ck_assert_uint_eq(buf[4], 3);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &back), 0);
    e = keel_node_state_find(&back, "", 1);
    ck_assert_uint_eq(e->nadd, 4);
    ck_assert_str_eq(back.names[e->add[0]], "node-a");
    ck_assert_str_eq(e->add_store[0], s1);
    ck_assert_str_eq(back.names[e->add[1]], "node-c");
    ck_assert_str_eq(e->add_store[1], s2);
    ck_assert_str_eq(back.names[e->add[2]], "node-x");
    ck_assert_str_eq(e->add_store[2], s2);
    ck_assert_str_eq(back.names[e->add[3]], "node-z");
    ck_assert_str_eq(e->add_store[3], s1);
    ck_assert_uint_eq(e->ndrop, 1);
    ck_assert_str_eq(back.names[e->drop[0]], "node-x");
    e = keel_node_state_find(&back, "", 2);
    ck_assert_str_eq(back.names[e->to], "node-m");
    ck_assert_uint_eq(e->nadd, 0);
    keel_node_state_free(&back);
    for (i = 0; i < len; i++) {
        uint8_t *copy = malloc(i ? i : 1);
        memcpy(copy, buf, i);
        ck_assert_int_eq(keel_node_state_decode(copy, i, &back),
                         KEEL_ECORRUPT);
        free(copy);
        buf[i] ^= 0x10;
        ck_assert_int_eq(keel_node_state_decode(buf, len, &back),
                         KEEL_ECORRUPT);
        buf[i] ^= 0x10;
    }
    free(buf);
    /* replacing the entry clears its lists */
    ck_assert_int_eq(
        keel_node_state_put(&st, "", 1, KEEL_ROLE_PRIMARY, 4, NULL), 0);
    ck_assert_uint_eq(keel_node_state_find(&st, "", 1)->nadd, 0);
    ck_assert_uint_eq(keel_node_state_find(&st, "", 1)->ndrop, 0);
    keel_node_state_free(&st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_map");
    TCase *tc = tcase_create("map");

    tcase_add_test(tc, test_deterministic_and_order_free);
    tcase_add_test(tc, test_only_capable_nodes);
    tcase_add_test(tc, test_capability_without_members);
    tcase_add_test(tc, test_join_moves_one_nth);
    tcase_add_test(tc, test_leave_moves_one_nth);
    tcase_add_test(tc, test_replicas_top_k);
    tcase_add_test(tc, test_compute_rejects_bad_input);
    tcase_add_test(tc, test_codec_roundtrip_and_size);
    tcase_add_test(tc, test_codec_rejects_corruption);
    tcase_add_test(tc, test_codec_structure_checks);
    tcase_add_test(tc, test_add_node_renumbers);
    tcase_add_test(tc, test_node_state_roundtrip);
    tcase_add_test(tc, test_map_v2_roundtrip);
    tcase_add_test(tc, test_map_store_ids);
    tcase_add_test(tc, test_map_v1_decodes);
    tcase_add_test(tc, test_map_insync_flags_checked);
    tcase_add_test(tc, test_map_promoted_checked);
    tcase_add_test(tc, test_map_fallback_roundtrip);
    tcase_add_test(tc, test_node_state_drops);
    tcase_add_test(tc, test_node_state_v1_and_bad_drops);
    tcase_add_test(tc, test_node_state_adds);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
