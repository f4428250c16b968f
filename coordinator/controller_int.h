/* Internals of the controller shared by its files (loop thread):
 *   controller.c   the node table, the epoch bump, reading the map, the
 *                  node states and forgotten/, writing the map, the pump;
 *   reconcile.c    the map the controller wants written now.
 * Not part of any API: coordinator/controller.h is the cluster agent's
 * view. */
#ifndef KEEL_COORDINATOR_CONTROLLER_INT_H
#define KEEL_COORDINATOR_CONTROLLER_INT_H

#include <stdint.h>

#include "coordinator/controller.h"
#include "coordinator/handoff.h"
#include "coordinator/shardmap.h"

/* --- controller.c: the node table --------------------------------------*/

/* The id of name, adding it (to be read) if new; -1 on ENOMEM. */
int keel__ctl_track(keel_controller *ctl, const char *name);
/* The handoff machine of (cap, shard), made idle if `create` is set and
 * the capability is new; NULL if absent (or out of memory). */
keel_handoff *keel__ctl_machine(keel_controller *ctl, const char *cap,
                                uint32_t shard, int create);
/* Whether name is a member now. */
int keel__ctl_live(const keel_controller *ctl, const char *name);
/* May a move of the units of `owner` complete without its release? When
 * the operator allowed it for every dead owner, or forgot this one. */
int keel__ctl_loss_ok(const keel_controller *ctl, const char *owner);
/* Records what the member view says of node id (its session timeout, when
 * it was first seen missing); _all: of every node of the table. */
void keel__ctl_observe(keel_controller *ctl, int id);
void keel__ctl_observe_all(keel_controller *ctl);
/* The wait after the owner's member znode is gone before its units move
 * without it. */
uint32_t keel__ctl_grace_of(keel_controller *ctl, const char *owner);

/* --- reconcile.c -------------------------------------------------------*/

/* Builds the map the controller wants written now into *next. Returns 0
 * or a code (KEEL_ENOMEM, KEEL_EINVAL); *next is freed on failure. */
int keel__ctl_reconcile(keel_controller *ctl, keel_shard_map *next);

#endif
