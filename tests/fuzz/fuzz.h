/* What every fuzz target shares: the libFuzzer entry points and a check
 * that stops the run on a broken property.
 *
 * A target defines LLVMFuzzerTestOneInput() (and, if it needs one-time
 * set-up, LLVMFuzzerInitialize()) and nothing else: built with clang and
 * -fsanitize=fuzzer it is a libFuzzer binary; built with any compiler and
 * replay_main.c it replays files, which is how the test suite runs every
 * target over its checked-in corpus (docs/fuzzing.md). */
#ifndef KEEL_TESTS_FUZZ_H
#define KEEL_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test must keep. abort() rather than assert():
 * the checks stay in every build type, and both libFuzzer and the replay
 * driver report an abort as a crash with the input that caused it. */
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: fuzz property broken: %s\n", __FILE__,   \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
