/* Runs a fuzz target over files, without libFuzzer: the regression half of
 * fuzzing. Each argument is a file (one input) or a directory (each
 * regular file in it, in name order, one input each; not recursive).
 *
 *   fuzz_wire tests/fuzz/corpus/wire tests/fuzz/found/crash-1234
 *
 * A broken property aborts, with the file's name printed just before, so
 * a failing ctest names the input to look at. Exit status 0 when every
 * input ran, 1 when an argument could not be read (a missing corpus must
 * not pass as an empty one). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Optional in a target: the weak reference is NULL when it has none. */
extern int LLVMFuzzerInitialize(int *argc, char ***argv)
    __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return -1;
    }
    /* One byte more than needed, so that an empty file is not malloc(0). */
    buf = malloc((size_t)len + 1);
    if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "replay: %s: cannot read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    fprintf(stderr, "replay: %s (%ld bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns how many inputs ran, or -1. */
static long run_path(const char *path)
{
    struct stat st;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    long ran = 0;
    DIR *d;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path) == 0 ? 1 : -1;
    if ((d = opendir(path)) == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        char *full;
        if (e->d_name[0] == '.')
            continue;
        if (asprintf(&full, "%s/%s", path, e->d_name) < 0)
            abort();
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(full);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof *names);
            if (names == NULL)
                abort();
        }
        names[n++] = full;
    }
    closedir(d);
    /* Name order: the same run every time, whatever readdir returns. */
    qsort(names, n, sizeof *names, cmp_names);
    for (i = 0; i < n; i++) {
        if (ran >= 0 && run_file(names[i]) == 0)
            ran++;
        else
            ran = -1;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    long total = 0;
    int i, bad = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        long r = run_path(argv[i]);
        if (r < 0)
            bad = 1;
        else
            total += r;
    }
    fprintf(stderr, "replay: %ld inputs, %s\n", total,
            bad ? "some could not be read" : "all passed");
    return bad ? 1 : 0;
}
