/* spinel C API: load a .spnl model once, create sessions (one per thread of
 * the application), run packed batches of token ids.
 *
 * Every call returns a spinel_status_t; on failure spinel_last_error()
 * returns a message for the calling thread naming what was wrong. No call
 * aborts the process on bad input. Handles are opaque. */
#ifndef SPINEL_SPINEL_H
#define SPINEL_SPINEL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SPINEL_API __attribute__((visibility("default")))
#else
#define SPINEL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  SPINEL_OK = 0,
  SPINEL_INVALID_ARGUMENT = 1, /* a null pointer, a bad size, an id out of range */
  SPINEL_INVALID_MODEL = 2,    /* the file is missing, damaged or not a .spnl */
  SPINEL_RUNTIME_ERROR = 3     /* anything else (out of memory, ...) */
} spinel_status_t;

typedef struct spinel_model* spinel_model_t;
typedef struct spinel_session* spinel_session_t;

/* The last error message of the calling thread ("" if none). */
SPINEL_API const char* spinel_last_error(void);

/* Maps the .spnl at `path`. The model is read-only and may be shared by any
 * number of sessions on any threads. */
SPINEL_API spinel_status_t spinel_model_load(const char* path, spinel_model_t* model);
SPINEL_API void spinel_model_free(spinel_model_t model);
/* hidden_size: width of each output row; max_tokens: longest sequence. */
SPINEL_API spinel_status_t spinel_model_info(spinel_model_t model, int64_t* hidden_size, int64_t* max_tokens,
                                  int64_t* vocab_size);

/* Tokenizes `text` with the model's tokenizer into [CLS] text [SEP],
 * truncated to max_length tokens (0 = the model's limit). Writes at most
 * `capacity` ids and the full count to *count. */
SPINEL_API spinel_status_t spinel_tokenize(spinel_model_t model, const char* text, size_t max_length,
                                int32_t* ids, size_t capacity, size_t* count);

/* threads: 0 = all cores, else 1..1024. The session keeps the model alive. */
SPINEL_API spinel_status_t spinel_session_create(spinel_model_t model, int threads, spinel_session_t* session);
SPINEL_API void spinel_session_free(spinel_session_t session);

/* The same on a named backend: "cpu" (also when NULL) or "reference" (plain
 * loops on one thread: slow, the definition tests compare against). Sessions
 * over one model share its prepared weights: the first session on a backend
 * prepares them (packing, kernel choice), later ones take milliseconds. */
SPINEL_API spinel_status_t spinel_session_create_on(spinel_model_t model, int threads, const char* backend,
                                                    spinel_session_t* session);

/* Runs num_seqs sequences packed back to back: sequence i is
 * ids[seq_offsets[i] .. seq_offsets[i+1]). type_ids may be NULL (all 0).
 * Writes last_hidden_state, [seq_offsets[num_seqs], hidden_size] row-major,
 * to `hidden`, which holds `capacity` floats. */
SPINEL_API spinel_status_t spinel_session_run(spinel_session_t session, const int32_t* ids,
                                   const int32_t* type_ids, const int64_t* seq_offsets,
                                   int64_t num_seqs, float* hidden, size_t capacity);

/* After a successful spinel_session_run: one vector per sequence of that
 * batch, [num_seqs, *width] row-major into `out` (`capacity` floats).
 * pool: "cls", "mean", "pooler" (BERT's pooler_output, when the model has
 * it) or the name of another per-sequence output; NULL = the model's default.
 * normalize: 1 = L2-normalize, 0 = do not, -1 = the model's default. */
SPINEL_API spinel_status_t spinel_session_pooled(spinel_session_t session, const char* pool, int normalize,
                                                 float* out, size_t capacity, int64_t* width);

/* What a session on `backend` (NULL = "cpu") runs this model with, as JSON:
 * {"backend": "...", "device": "...", "cpu": {...}, "ops": [{"index", "kind",
 * "name", "kernel", "why"}, ...]}. Prepares the model for that backend if no
 * session has yet. Writes at most `capacity` bytes (NUL-terminated when
 * capacity > 0) and the full size including the NUL to *needed; pass
 * capacity 0 to ask for the size. */
SPINEL_API spinel_status_t spinel_model_kernels(spinel_model_t model, const char* backend, char* json,
                                                size_t capacity, size_t* needed);

#ifdef __cplusplus
}
#endif

#endif /* SPINEL_SPINEL_H */
