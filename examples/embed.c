/* Embeds two sentences with a spinel model and prints their cosine similarity.
 *   cc embed.c $(pkg-config --cflags --libs spinel) -o embed
 *   ./embed minilm.spnl "A man is playing a guitar." "Someone plays an instrument."
 * Prints the cosine, then each sentence's embedding (mean pooling, L2-normalized,
 * as `spinel run --pool mean --normalize`) on a line of its own. */
#include <spinel/spinel.h>

#include <stdio.h>
#include <stdlib.h>

static void check(spinel_status_t status) {
  if (status != SPINEL_OK) {
    fprintf(stderr, "embed: %s: %s\n", spinel_status_name(status), spinel_last_error());
    exit(1);
  }
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL.spnl TEXT1 TEXT2\n", argv[0]);
    return 2;
  }
  spinel_model_t model;
  check(spinel_model_load(argv[1], &model));

  spinel_session_options_t options;
  check(spinel_session_options_create(&options));
  check(spinel_session_options_set_threads(options, 0)); /* 0 = every core */
  spinel_session_t session;
  check(spinel_session_create_with(model, options, &session));
  spinel_session_options_free(options); /* the session has its own copy */

  const char* texts[2] = {argv[2], argv[3]};
  spinel_result_t result;
  check(spinel_session_run_texts(session, texts, 2, &result));

  /* Ask for the size (capacity 0), then copy the two vectors out. */
  int64_t rows, width;
  check(spinel_result_pooled(result, "mean", 1, NULL, 0, &rows, &width));
  float* v = malloc((size_t)(rows * width) * sizeof *v);
  if (!v) return 1;
  check(spinel_result_pooled(result, "mean", 1, v, (size_t)(rows * width), &rows, &width));

  /* Both vectors have length 1: their cosine is their dot product. */
  double cosine = 0;
  for (int64_t j = 0; j < width; ++j) cosine += (double)v[j] * v[width + j];
  printf("cosine %.6f\n", cosine);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < width; ++j) printf(j ? " %.9g" : "%.9g", v[i * width + j]);
    printf("\n");
  }

  free(v);
  spinel_result_free(result);
  spinel_session_free(session);
  spinel_model_free(model);
  return 0;
}
