/* The public header must compile as plain C99 with every warning an error
 * (-std=c99 -Wall -Wextra -Werror -pedantic, see CMakeLists.txt). Every
 * function is called once with its declared types, so a prototype that is
 * not valid C (a C++ type, a default argument, a reference) fails here.
 * Compiled only, never run. */
#include "spinel/spinel.h"

int spinel_c_header_check(const char* path) {
  spinel_model_t m = 0;
  spinel_session_options_t o = 0;
  spinel_session_t s = 0;
  spinel_result_t r = 0;
  const char* str = 0;
  const char* texts[2] = {"a", "b"};
  const float* data = 0;
  const int64_t* offsets = 0;
  const int32_t* ids_out = 0;
  char buf[16];
  size_t needed = 0, count = 0;
  int64_t a = 0, b = 0, c = 0;
  int flag = 0;
  int32_t ids[4] = {0, 0, 0, 0};
  int64_t off[2] = {0, 4};
  float out[4];
  spinel_status_t st = SPINEL_OK;
  int bad = 0;

  bad += spinel_version()[0] == '\0';
  bad += spinel_format_version() < 1;
  bad += spinel_last_error() == 0;
  bad += spinel_status_name(SPINEL_OUT_OF_MEMORY) == 0;
  bad += spinel_backends(buf, sizeof buf, &needed) != SPINEL_OK;
  bad += spinel_set_isa_cap("avx2") != SPINEL_OK;

  st = spinel_model_load(path, &m);
  bad += st == SPINEL_INVALID_MODEL || st == SPINEL_RUNTIME_ERROR || st == SPINEL_INVALID_ARGUMENT;
  bad += spinel_model_load_from_memory(buf, sizeof buf, "buf", &m) != SPINEL_OK;
  bad += spinel_model_info(m, &a, &b, &c) != SPINEL_OK;
  bad += spinel_model_architecture(m, &str) != SPINEL_OK;
  bad += spinel_model_default_pooling(m, &str, &flag) != SPINEL_OK;
  bad += spinel_model_num_outputs(m, &a) != SPINEL_OK;
  bad += spinel_model_output(m, 0, &str, &a, &flag) != SPINEL_OK;
  bad += spinel_model_info_json(m, buf, sizeof buf, &needed) != SPINEL_OK;
  bad += spinel_model_kernels(m, "cpu", buf, sizeof buf, &needed) != SPINEL_OK;
  bad += spinel_tokenize(m, "text", 0, ids, 4, &count) != SPINEL_OK;

  bad += spinel_session_options_create(&o) != SPINEL_OK;
  bad += spinel_session_options_set_threads(o, 1) != SPINEL_OK;
  bad += spinel_session_options_set_backend(o, "cpu") != SPINEL_OK;
  bad += spinel_session_options_set_isa(o, 0) != SPINEL_OK;
  bad += spinel_session_options_set_max_batch(o, 8) != SPINEL_OK;
  bad += spinel_session_options_set_max_tokens(o, 512) != SPINEL_OK;
  bad += spinel_session_create_with(m, o, &s) != SPINEL_OK;
  spinel_session_options_free(o);
  spinel_session_free(s);
  bad += spinel_session_create(m, 0, &s) != SPINEL_OK;
  spinel_session_free(s);
  bad += spinel_session_create_on(m, 0, "reference", &s) != SPINEL_OK;

  bad += spinel_session_run_texts(s, texts, 2, &r) != SPINEL_OK;
  spinel_result_free(r);
  bad += spinel_session_run_ids(s, ids, 0, off, 1, &r) != SPINEL_OK;
  bad += spinel_session_run(s, ids, ids, off, 1, out, 4) != SPINEL_OK;
  bad += spinel_session_pooled(s, "mean", -1, out, 4, &a) != SPINEL_OK;
  bad += spinel_result_sequences(r, &a, &offsets) != SPINEL_OK;
  bad += spinel_result_ids(r, &ids_out, &a) != SPINEL_OK;
  bad += spinel_result_output(r, "last_hidden_state", &data, &a, &b) != SPINEL_OK;
  bad += spinel_result_pooled(r, 0, -1, out, 4, &a, &b) != SPINEL_OK;
  spinel_result_free(r);
  spinel_session_free(s);
  spinel_model_free(m);
  return bad + (int)(data != 0) + (int)(offsets != 0) + (int)(ids_out != 0);
}
