/* Fuzz target: store recovery from a damaged checkpoint file (keel.ckpt),
 * through keel_store_open, with the template's log. The harness and the
 * property are in recovery.c.
 *
 * The file is two slots 256 KiB apart: a flat input would be mostly the
 * zeros between them. So the input is: a reserved byte, a big-endian u32
 * n, then the bytes of the file from offset 0 (n of them, at most
 * 256 KiB, fewer if the input ends first), then the bytes of the file
 * from offset 256 KiB (the rest of the input; none: the file ends after
 * the first part). The state must be one after a prefix of the
 * template's commits; inputs with a forged slot are skipped
 * (recovery.c). */
#include <string.h>

#include "fuzz.h"
#include "recovery.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rh_template_get();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const rh_template *t = rh_template_get();
    size_t n0, n1, len;
    uint8_t *ckpt;

    if (size < 5)
        return 0;
    n0 = (size_t)data[1] << 24 | (size_t)data[2] << 16 |
         (size_t)data[3] << 8 | data[4];
    data += 5;
    size -= 5;
    if (n0 > RH_CKPT_STRIDE)
        n0 = RH_CKPT_STRIDE;
    if (n0 > size)
        n0 = size;
    n1 = size - n0;
    len = n1 > 0 ? RH_CKPT_STRIDE + n1 : n0;
    ckpt = calloc(1, len + 1);
    FUZZ_CHECK(ckpt != NULL);
    memcpy(ckpt, data, n0);
    if (n1 > 0)
        memcpy(ckpt + RH_CKPT_STRIDE, data + n0, n1);
    if (!rh_ckpt_forged(ckpt, len))
        rh_recover(t->wal.p, t->wal.len, ckpt, len, 1);
    free(ckpt);
    return 0;
}
