/* The files of a store's data directory as files: making and syncing the
 * directory, and what LMDB's data file says about its own age (for the
 * open's check that the data file, checkpoint and log belong together,
 * store.c store_check_ckpt). Internal to persistence/. Every function
 * returns 0 or an errno value. */
#ifndef KEEL_PERSISTENCE_DATADIR_H
#define KEEL_PERSISTENCE_DATADIR_H

#include <stdint.h>

/* fsync of directory path: the names made in it are on the disk. */
int keel_dir_sync(const char *path);

/* mkdir -p; the last component gets mode 0700, and each directory made
 * has its name synced in its parent (a machine crash must not take away
 * the directory of a store that answered). ENOTDIR when path is not a
 * directory. */
int keel_dir_make(const char *path);

/* The newest transaction of the two LMDB meta pages in pages (2 * psize
 * bytes), or 0 when neither is a meta page. */
uint64_t keel_lmdb_meta_txnid(const uint8_t *pages, uint32_t psize);

/* The newest transaction dir/data.mdb's own meta pages record (page size
 * psize) into *txn (0: neither is a meta page). ENOENT when there is no
 * such file, ENODATA when it is shorter than its two meta pages. */
int keel_data_file_txnid(const char *dir, uint32_t psize, uint64_t *txn);

#endif
