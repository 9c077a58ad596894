/* The public header must compile as plain C (C99). */
#include "spinel/spinel.h"

int spinel_c_header_check(void) {
  spinel_model_t m = 0;
  spinel_status_t s = spinel_model_load("does-not-exist.spnl", &m);
  return s == SPINEL_OK ? 0 : 1;
}
