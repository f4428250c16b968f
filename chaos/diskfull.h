/* The disk-full fault of keel-chaos run (docs/chaos.md): each node's data
 * directory on a small tmpfs of its own, mounted by the harness, which a
 * fault fills with a file of zeros until the file system refuses more,
 * and heals by removing that file. Mounting needs CAP_SYS_ADMIN (root):
 * chaos_disk_check says whether it can be done. The activation logs stay
 * elsewhere, on a file system that does not fill. */
#ifndef KEEL_CHAOS_DISKFULL_H
#define KEEL_CHAOS_DISKFULL_H

#include <stddef.h>

#define CHAOS_DISK_BYTES (128u << 20) /* each node's file system */

/* 0, or -1 with why (one line). */
int chaos_disk_check(char *why, size_t cap);
/* Mounts a tmpfs of `bytes` at dir (created). 0, or -1 with err. */
int chaos_disk_mount(const char *dir, size_t bytes, char *err, size_t cap);
/* Unmounts it (lazily: a process may still hold a file open). */
void chaos_disk_umount(const char *dir);
/* Writes dir/chaos-filler until the file system is full; *filled gets
 * the bytes written. 0, or -1 when it could not be written at all. */
int chaos_disk_fill(const char *dir, size_t *filled);
/* Removes the filler. */
void chaos_disk_free(const char *dir);

#endif
