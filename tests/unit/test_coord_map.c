/* Shard map computation (rendezvous hashing), the `map` znode codec and the
 * `nodes/<node>/state` codec. The properties that matter for handoff cost
 * are checked over 4096 shards: one node joining or leaving moves about
 * 1/N of the units, and only those that must move. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

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
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
