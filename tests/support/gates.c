#include "gates.h"

static int gates_commit(void *data)
{
    struct gates *g = data;
    int c = ++g->commits;

    if (c == g->hold_commit) {
        sem_post(&g->entered);
        sem_wait(&g->release);
    }
    return c == g->fail_commit ? g->fail_rc : 0;
}

static int gates_sync(void *data)
{
    struct gates *g = data;
    int c = ++g->syncs;

    if (c == g->hold_sync) {
        sem_post(&g->entered);
        sem_wait(&g->release);
    }
    return c == g->fail_sync ? g->fail_sync_errno : 0;
}

void gates_install(keel_store *s, struct gates *g)
{
    keel_store_hooks h = {gates_commit, gates_sync, g};

    sem_init(&g->entered, 0, 0);
    sem_init(&g->release, 0, 0);
    keel_store_set_hooks(s, &h);
}
