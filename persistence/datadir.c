/* The data directory's files as files: see datadir.h. */
#include "persistence/datadir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int keel_dir_sync(const char *path)
{
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

    if (dfd < 0 || fsync(dfd) < 0)
        err = errno;
    if (dfd >= 0)
        close(dfd);
    return err;
}

/* keel_dir_sync of the directory that holds path (a directory just
 * made). */
static int parent_sync(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *parent;
    int err;

    if (slash == NULL)
        err = keel_dir_sync(".");
    else if (slash == path)
        err = keel_dir_sync("/");
    else if ((parent = strndup(path, (size_t)(slash - path))) == NULL)
        return ENOMEM;
    else {
        err = keel_dir_sync(parent);
        free(parent);
    }
    /* A parent this process may write into but not read (mode 0733)
     * cannot be opened to be synced: that must not stop the store. */
    return err == EACCES || err == EPERM ? 0 : err;
}

/* mkdir of one directory with mode, its name synced in its parent when
 * it was made; one that exists already is fine. */
static int make_one(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0)
        return parent_sync(path);
    return errno == EEXIST ? 0 : errno;
}

int keel_dir_make(const char *path)
{
    char *tmp = strdup(path);
    struct stat st;
    int err = 0;

    if (tmp == NULL)
        return ENOMEM;
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        err = make_one(tmp, 0755);
        *p = '/';
        if (err != 0)
            goto out;
    }
    if ((err = make_one(tmp, 0700)) != 0)
        goto out;
    if (stat(tmp, &st) < 0)
        err = errno;
    else if (!S_ISDIR(st.st_mode))
        err = ENOTDIR;
out:
    free(tmp);
    return err;
}

/* LMDB's meta page (mdb.c, MDB_meta after the page header): its magic
 * and the transaction it is of. */
#define LMDB_META_MAGIC 0xBEEFC0DEu
#define LMDB_META_MAGIC_OFF 16
#define LMDB_META_TXNID_OFF 144

uint64_t keel_lmdb_meta_txnid(const uint8_t *pages, uint32_t psize)
{
    uint64_t best = 0;

    for (int i = 0; i < 2; i++) {
        const uint8_t *m = pages + (size_t)i * psize;
        uint32_t magic;
        uint64_t txnid;

        memcpy(&magic, m + LMDB_META_MAGIC_OFF, sizeof magic);
        memcpy(&txnid, m + LMDB_META_TXNID_OFF, sizeof txnid);
        if (magic == LMDB_META_MAGIC && txnid > best)
            best = txnid;
    }
    return best;
}

int keel_data_file_txnid(const char *dir, uint32_t psize, uint64_t *txn)
{
    size_t n = 2u * (size_t)psize;
    uint8_t *cur;
    char *dpath;
    ssize_t got;
    int fd, err = 0;

    if (asprintf(&dpath, "%s/data.mdb", dir) < 0)
        return ENOMEM;
    fd = open(dpath, O_RDONLY | O_CLOEXEC);
    free(dpath);
    if (fd < 0)
        return errno;
    cur = malloc(n);
    if (cur == NULL) {
        close(fd);
        return ENOMEM;
    }
    got = pread(fd, cur, n, 0);
    if (got < 0)
        err = errno;
    else if (got != (ssize_t)n)
        err = ENODATA;
    else
        *txn = keel_lmdb_meta_txnid(cur, psize);
    free(cur);
    close(fd);
    return err;
}
