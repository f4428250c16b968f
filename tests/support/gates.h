/* Store hooks for tests: hold the committing thread at a chosen commit or
 * flushing sync, and fail a chosen commit. */
#ifndef KEEL_TEST_GATES_H
#define KEEL_TEST_GATES_H

#include <semaphore.h>

#include "persistence/store.h"

struct gates {
    sem_t entered;      /* posted when a gate is reached */
    sem_t release;      /* the gate waits here */
    int commits, syncs; /* calls so far (committing thread) */
    int hold_commit;    /* 1-based commit to hold at; 0: none */
    int fail_commit;    /* 1-based commit to fail ... */
    int fail_rc;        /* ... with this */
    int hold_sync;      /* 1-based flushing sync to hold at; 0: none */
    int fail_sync;      /* 1-based flushing sync to fail ... */
    int fail_sync_errno; /* ... with this errno value */
};

/* Installs g's hooks on s (counting from now); before any commit that
 * must not be counted. */
void gates_install(keel_store *s, struct gates *g);

#endif
