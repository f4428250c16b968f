/* The error table's internal side (keel.h has the codes, error.c the
 * names and texts). */
#ifndef KEEL_COMMON_ERROR_H
#define KEEL_COMMON_ERROR_H

/* Whether code is 0 or one of the KEEL_E* codes. */
int keel__err_known(int code);

#endif
