/* keel-chaos — checks a recorded chaos run (docs/chaos.md).
 *
 *   keel-chaos check [--max-states N] [--detail N] DIR
 *
 * reads DIR/history.jsonl and DIR/actlogs/NODE.log and prints a verdict
 * per check: linearizability, lost-writes, at-most-one-activation.
 *
 * Exit status: 0 every check passed (or was skipped for lack of input),
 * 1 a violation, 2 bad input or usage, 3 linearizability undecided
 * within --max-states. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/checkdir.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel-chaos check [--max-states N] [--detail N] DIR\n"
            "\n"
            "Checks a recorded run: DIR/history.jsonl (the clients'\n"
            "operations) and DIR/actlogs/NODE.log (each node's activation\n"
            "log, optional), and prints a verdict per check:\n"
            "  linearizability         per actor, against its model\n"
            "  lost-writes             every acknowledged write is in the\n"
            "                          final reads\n"
            "  at-most-one-activation  no actor active on two nodes at once\n"
            "\n"
            "options:\n"
            "  --max-states N  give up on an actor's linearizability after N\n"
            "                  configurations (undecided); default: no bound\n"
            "  --detail N      describe at most N violations per check\n"
            "                  (default 3)\n"
            "\n"
            "exit status: 0 passed (or skipped), 1 violation, 2 bad input\n"
            "or usage, 3 undecided within --max-states. docs/chaos.md has\n"
            "the formats and what each check proves.\n");
}

static int number(const char *opt, const char *s, unsigned long long *out)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        goto bad;
    *out = strtoull(s, &end, 10);
    if (*end == '\0')
        return 0;
bad:
    fprintf(stderr, "keel-chaos: %s takes a number, not '%s'\n", opt, s);
    return -1;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"max-states", required_argument, NULL, 's'},
        {"detail", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    chaos_check_opts o;
    unsigned long long v;
    int c;

    chaos_check_opts_init(&o);
    if (argc < 2) {
        usage(stderr);
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "check") != 0) {
        fprintf(stderr, "keel-chaos: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return CHAOS_EXIT_BAD_INPUT;
    }
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (number("--max-states", optarg, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.max_states = v;
            break;
        case 'd':
            if (number("--detail", optarg, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.max_detail = (size_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return CHAOS_EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "keel-chaos: check takes one directory\n\n");
        usage(stderr);
        return CHAOS_EXIT_BAD_INPUT;
    }
    return chaos_check_dir(argv[optind], &o, stdout, stderr);
}
