/* See fakeclu.h. */
#include "fakeclu.h"

#include <check.h>

void tu_fake_settle(keel_zk_fake *f, tu_fake_cluster_at at, size_t n,
                    int rounds)
{
    int round;
    size_t i;

    for (round = 0; round < rounds; round++) {
        size_t ran = keel_zk_fake_run(f, 0);
        for (i = 0; i < n; i++) {
            keel_cluster *c = at(i);
            if (c != NULL)
                keel_cluster_tick(c, keel_zk_fake_now(f));
        }
        if (ran == 0 && keel_zk_fake_run(f, 0) == 0)
            return;
    }
    ck_abort_msg("the cluster did not settle");
}

void tu_fake_advance(keel_zk_fake *f, uint64_t ms, tu_fake_cluster_at at,
                     size_t n, int rounds)
{
    keel_zk_fake_advance(f, ms);
    tu_fake_settle(f, at, n, rounds);
}

keel_shard_map tu_fake_map(keel_zk_fake *f, const char *path)
{
    static uint8_t buf[1 << 20];
    size_t len = sizeof buf;
    keel_shard_map m;

    ck_assert_int_eq(keel_zk_fake_get(f, path, buf, &len, NULL), 0);
    ck_assert_int_eq(keel_map_decode(buf, len, &m), 0);
    return m;
}
