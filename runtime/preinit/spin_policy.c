/* The OpenMP spin policy of every process that loads spinel.
 *
 * oneDNN runs on OpenMP (Debian's build). With libgomp's default spin (300k
 * iterations), idle OpenMP workers burn the cores that TBB and other tenants
 * need, and a oneDNN call on a loaded 2-core machine ran up to 10x slower.
 * libgomp reads GOMP_SPINCOUNT once, in its own constructor, so the variable
 * must be set before that runs. This library is linked with -z initfirst:
 * the dynamic loader runs its constructor before any other object's among
 * those loaded together (the program and its libraries at start-up, or a
 * dlopen of libspinel.so in a process without libgomp yet). A user's own
 * GOMP_SPINCOUNT or OMP_WAIT_POLICY is left alone. */
#include <stdlib.h>

static int g_applied = 0;

__attribute__((constructor)) static void spinel_spin_policy(void) {
  if (getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY")) return;
  setenv("GOMP_SPINCOUNT", "10000", 0);
  g_applied = 1;
}

/* 1 when this library set GOMP_SPINCOUNT (the user had set neither). */
__attribute__((visibility("default"))) int spinel_spin_policy_applied(void) { return g_applied; }
