/* State versions (keel_actor_type.state_version and upgrade; README,
 * "State versions"): the version a type's state layout was written by is
 * a runtime entry of the actor, checked when it is activated and recorded
 * with its first write. Loop thread, inside a turn. */
#ifndef KEEL_RUNTIME_STATEVER_H
#define KEEL_RUNTIME_STATEVER_H

#include "runtime/node.h"

/* Stages the type's state version among the turn's writes; *staged = 1
 * when it did. */
int keel__statever_stage(keel_turn *t, int *staged);
/* On activation, once the state is loaded: reads the version the
 * actor's state was written by into the actor, and upgrades a state an
 * older version wrote (then staging the new version: *staged = 1).
 * KEEL_ESTATEVER for a newer version or an old one without an upgrade
 * function, KEEL_ECORRUPT for a damaged record, or the upgrade's error;
 * the turn's error text says which. */
int keel__statever_check(keel_turn *t, int *staged);

#endif
