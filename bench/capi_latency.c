/* Latency of one model through the public C API, for A/B runs of two builds
 * of libspinel.so on the same .spnl (LD_LIBRARY_PATH picks the library):
 *   bench_capi_latency MODEL.spnl SEQ BATCH THREADS REPS
 * Runs BATCH sequences of SEQ synthetic token ids (all full length) REPS
 * times after one warm-up run and prints the median and minimum in ms. Set
 * OMP_WAIT_POLICY=PASSIVE as the other benchmarks do. */
#include <spinel/spinel.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static long arg(const char* s, const char* what, long lo, long hi) {
  char* end = NULL;
  const long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) {
    fprintf(stderr, "bench_capi_latency: %s must be an integer in [%ld, %ld], got '%s'\n", what, lo, hi, s);
    exit(2);
  }
  return v;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: bench_capi_latency MODEL.spnl SEQ BATCH THREADS REPS\n");
    return 2;
  }
  const long seq = arg(argv[2], "SEQ", 1, 1 << 16), batch = arg(argv[3], "BATCH", 1, 1 << 12);
  const long threads = arg(argv[4], "THREADS", 1, 1024), reps = arg(argv[5], "REPS", 1, 1 << 20);
  spinel_model_t model = NULL;
  spinel_session_t session = NULL;
  if (spinel_model_load(argv[1], &model) != SPINEL_OK ||
      spinel_session_create(model, (int)threads, &session) != SPINEL_OK) {
    fprintf(stderr, "bench_capi_latency: %s\n", spinel_last_error());
    return 1;
  }
  int64_t hidden = 0, max_tokens = 0, vocab = 0;
  spinel_model_info(model, &hidden, &max_tokens, &vocab);
  const size_t n = (size_t)(seq * batch);
  int32_t* ids = malloc(n * sizeof *ids);
  int64_t* offsets = malloc((size_t)(batch + 1) * sizeof *offsets);
  float* out = malloc(n * (size_t)hidden * sizeof *out);
  double* t = malloc((size_t)reps * sizeof *t);
  if (!ids || !offsets || !out || !t) return 1;
  for (size_t i = 0; i < n; ++i) ids[i] = (int32_t)((i * 7919) % (size_t)vocab);  /* any id < vocab */
  for (long b = 0; b <= batch; ++b) offsets[b] = b * seq;
  for (long r = -1; r < reps; ++r) {
    const double a = now_s();
    if (spinel_session_run(session, ids, NULL, offsets, batch, out, n * (size_t)hidden) != SPINEL_OK) {
      fprintf(stderr, "bench_capi_latency: %s\n", spinel_last_error());
      return 1;
    }
    if (r >= 0) t[r] = now_s() - a;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  printf("median %.3f ms min %.3f ms (%ld runs, seq %ld, batch %ld, %ld threads)\n", t[reps / 2] * 1e3,
         t[0] * 1e3, reps, seq, batch, threads);
  spinel_session_free(session);
  spinel_model_free(model);
  free(ids);
  free(offsets);
  free(out);
  free(t);
  return 0;
}
