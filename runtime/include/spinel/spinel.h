/* spinel C API: load a .spnl model once, create sessions (one per thread of
 * the application), run batches of texts or of token ids, read the outputs.
 *
 * Conventions, for every function below unless it says otherwise:
 *
 * - Status. Every call returns a spinel_status_t. On failure
 *   spinel_last_error() returns a message for the calling thread that names
 *   what was wrong (the function, the argument, the file, the sequence and
 *   token, the limit); a successful call clears it. No call aborts the
 *   process or lets a C++ exception out, also when memory runs out.
 * - Failed calls change nothing: an out-handle is set to NULL, output buffers
 *   and out-values are left alone, and a session stays usable (the next good
 *   run gives what it would have given without the bad one).
 * - Handles are opaque pointers, created by one *_create / *_load / run call
 *   and released by the matching *_free, which accepts NULL. Using a handle
 *   after its *_free is undefined.
 * - Strings are NUL-terminated UTF-8. A `const char*` returned through an
 *   out-pointer is owned by the handle it came from and stays valid for the
 *   lifetime stated with the function; the caller never frees it.
 * - Copy-out functions take (buffer, capacity, ...) and say per function what
 *   happens when capacity is 0 or too small.
 *
 * Thread safety:
 * - A model is read-only after loading: any number of threads may use it at
 *   once (tokenize, info, kernels, create sessions).
 * - A session runs one batch at a time: use it from one thread at a time
 *   (one session per worker thread). Sessions on one model share its
 *   prepared weights; each has its own activation memory.
 * - A result is independent of its session (its outputs are copies): read it
 *   from any thread, free it once.
 * - Session options objects are not synchronized; spinel_session_create_with
 *   copies them, so one options object may serve many sessions.
 * - spinel_last_error() is per thread.
 * - Speed: on the cpu backend each session runs its batches on a thread of
 *   its own (started by its first run; the caller waits for it), so any
 *   thread may call it: oneDNN's OpenMP pool then always belongs to that one
 *   thread. (Before, a session run from one thread and then from another kept
 *   two pools alive, and libgomp, which spins much less once it manages more
 *   threads than CPUs, made every run up to 3.6x slower: bench/RESULTS.md.)
 *   Many sessions in one process each have their pool: more sessions times
 *   threads than CPUs costs speed for the same reason. */
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

/* The version of this header; spinel_version() gives the library's. */
#define SPINEL_VERSION_MAJOR 0
#define SPINEL_VERSION_MINOR 1
#define SPINEL_VERSION_PATCH 0

typedef enum {
  SPINEL_OK = 0,
  SPINEL_INVALID_ARGUMENT = 1, /* a null pointer, a bad size or name, an id out of range, a limit */
  SPINEL_INVALID_MODEL = 2,    /* the file is missing, damaged or not a .spnl */
  SPINEL_RUNTIME_ERROR = 3,    /* anything else */
  SPINEL_OUT_OF_MEMORY = 4     /* an allocation failed; nothing was changed */
} spinel_status_t;

typedef struct spinel_model* spinel_model_t;
typedef struct spinel_session_options* spinel_session_options_t;
typedef struct spinel_session* spinel_session_t;
typedef struct spinel_result* spinel_result_t;

/* ---- library ------------------------------------------------------------ */

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). */
SPINEL_API const char* spinel_version(void);
/* The .spnl format version this library reads and writes (3). */
SPINEL_API int spinel_format_version(void);
/* The last error message of the calling thread ("" after a successful call).
 * Valid until the thread's next spinel call. */
SPINEL_API const char* spinel_last_error(void);
/* "SPINEL_OK", "SPINEL_INVALID_ARGUMENT", ... ("unknown status" for other
 * values); static storage. */
SPINEL_API const char* spinel_status_name(spinel_status_t status);

/* The backends of this build, comma-separated ("cpu,reference"), into `names`
 * (`capacity` bytes, NUL-terminated, cut short if too small); *needed gets the
 * full size with the NUL. Pass capacity 0 (names may be NULL) to ask the size. */
SPINEL_API spinel_status_t spinel_backends(char* names, size_t capacity, size_t* needed);

/* Caps the instruction set of the CPU kernels: "avx512vnni", "avxvnni",
 * "avx2" or "scalar" (a level above what the CPU runs has no effect beyond
 * it; SPINEL_ISA in the environment caps too, the lower one wins).
 * PROCESS-WIDE: there is one cap per process, read by every kernel call, so
 * it applies at once to every session, including ones running on other
 * threads (their next kernel call uses it). Set it before creating sessions.
 * Sessions created after a change prepare the model again for the new level
 * (once per level); spinel_model_kernels reports the level in use. */
SPINEL_API spinel_status_t spinel_set_isa_cap(const char* level);

/* ---- models ------------------------------------------------------------- */

/* Maps the .spnl at `path` (read-only; the file must not be changed while
 * the model is loaded) and checks every size and checksum.
 * path:  file name; read during the call only.
 * model: out, the new model; free with spinel_model_free. */
SPINEL_API spinel_status_t spinel_model_load(const char* path, spinel_model_t* model);

/* The same from a .spnl in memory. The bytes are COPIED (into a 64-byte
 * aligned buffer owned by the model): `data` may be freed or reused as soon
 * as the call returns.
 * data, size: the whole file's bytes (data may not be NULL).
 * name:  used in error messages, e.g. where the bytes came from; NULL =
 *        "<memory>". Read during the call only.
 * model: out, the new model; free with spinel_model_free. */
SPINEL_API spinel_status_t spinel_model_load_from_memory(const void* data, size_t size, const char* name,
                                                         spinel_model_t* model);

/* Releases the caller's reference. Sessions created from the model keep it
 * alive until they are freed; strings returned by the spinel_model_*
 * functions are valid until this call. NULL is ignored. */
SPINEL_API void spinel_model_free(spinel_model_t model);

/* Sizes of the model; each out-pointer may be NULL.
 * hidden_size: width of each last_hidden_state row.
 * max_tokens:  longest sequence the model accepts (position table).
 * vocab_size:  token ids must lie in [0, vocab_size). */
SPINEL_API spinel_status_t spinel_model_info(spinel_model_t model, int64_t* hidden_size, int64_t* max_tokens,
                                             int64_t* vocab_size);

/* The model family ("bert", "distilbert", "dnabert2", ...).
 * name: out, owned by the model, valid until spinel_model_free. */
SPINEL_API spinel_status_t spinel_model_architecture(spinel_model_t model, const char** name);

/* What a NULL pool of spinel_result_pooled uses.
 * pool:      out (may be NULL): "cls", "mean" or an output's name; owned by
 *            the model, valid until spinel_model_free.
 * normalize: out (may be NULL): 1 if the default L2-normalizes, else 0. */
SPINEL_API spinel_status_t spinel_model_default_pooling(spinel_model_t model, const char** pool,
                                                        int* normalize);

/* The model's outputs: index 0 is "last_hidden_state" (one row per token,
 * hidden_size wide); indices 1 .. count-1 are per-sequence outputs of the
 * graph (one row per sequence), e.g. "pooler_output", "sentence_embedding",
 * or "logits" for a classifier.
 * count: out, the number of outputs (at least 1). */
SPINEL_API spinel_status_t spinel_model_num_outputs(spinel_model_t model, int64_t* count);
/* index:     0 .. count-1 (else an error naming the index and the count).
 * name:      out (may be NULL), owned by the model, valid until spinel_model_free.
 * width:     out (may be NULL), floats per row.
 * per_token: out (may be NULL), 1 for one row per token, 0 for one per sequence. */
SPINEL_API spinel_status_t spinel_model_output(spinel_model_t model, int64_t index, const char** name,
                                               int64_t* width, int* per_token);

/* Everything above as one JSON object: {"architecture", "hidden_size",
 * "max_tokens", "vocab_size", "type_vocab_size", "num_layers", "num_heads",
 * "intermediate_size", "tokenizer", "format_version", "source",
 * "default_pool", "normalize", "poolings": [names spinel_result_pooled
 * accepts], "outputs": [{"name", "width", "per_token"}]}. Copy-out as
 * spinel_backends: at most `capacity` bytes (NUL-terminated when capacity > 0),
 * *needed = full size with the NUL; capacity 0 asks the size. */
SPINEL_API spinel_status_t spinel_model_info_json(spinel_model_t model, char* json, size_t capacity,
                                                  size_t* needed);

/* What a session on `backend` (NULL = "cpu") runs this model with, as JSON:
 * {"backend": "...", "device": "...", "cpu": {...}, "ops": [{"index", "kind",
 * "name", "kernel", "why"}, ...]}. Prepares the model for that backend if no
 * session has yet. Copy-out as spinel_model_info_json. */
SPINEL_API spinel_status_t spinel_model_kernels(spinel_model_t model, const char* backend, char* json,
                                                size_t capacity, size_t* needed);

/* Tokenizes `text` with the model's tokenizer into [CLS] text [SEP] (or the
 * model's own special tokens), truncated to max_length tokens (0 = the
 * model's limit; larger values are lowered to it).
 * ids:      out, at most `capacity` ids are written (the first ones).
 * capacity: 0 with ids NULL asks for the count only.
 * count:    out, the full number of ids (may exceed capacity). */
SPINEL_API spinel_status_t spinel_tokenize(spinel_model_t model, const char* text, size_t max_length,
                                           int32_t* ids, size_t capacity, size_t* count);

/* ---- session options ---------------------------------------------------- */

/* A set of options with the defaults: threads 0 (all cores), backend "cpu",
 * no ISA cap, no max_batch, no max_tokens. Free with
 * spinel_session_options_free. Setters check their value at once (an
 * invalid value is an error naming it and leaves the option unchanged). */
SPINEL_API spinel_status_t spinel_session_options_create(spinel_session_options_t* options);
SPINEL_API void spinel_session_options_free(spinel_session_options_t options);
/* threads: 0 = every hardware thread, else 1..1024. */
SPINEL_API spinel_status_t spinel_session_options_set_threads(spinel_session_options_t options, int threads);
/* backend: "cpu" or "reference" (plain loops on one thread: slow, the
 * definition tests compare against), or "cuda" (a build with
 * -DSPINEL_CUDA=ON and a CUDA device; otherwise SPINEL_INVALID_ARGUMENT
 * with the reason: "spinel was built without CUDA ..." or "no CUDA device:
 * ..."); spinel_backends lists this build's. NULL = "cpu". Copied. */
SPINEL_API spinel_status_t spinel_session_options_set_backend(spinel_session_options_t options,
                                                              const char* backend);
/* isa: a level as for spinel_set_isa_cap, or NULL for none (the default).
 * Creating a session with a level set calls spinel_set_isa_cap(level): the
 * cap is PROCESS-WIDE, not per session (see there). Copied. */
SPINEL_API spinel_status_t spinel_session_options_set_isa(spinel_session_options_t options, const char* isa);
/* max_batch: sequences per run, 0 = no limit. A run with more is an error
 * naming the limit. */
SPINEL_API spinel_status_t spinel_session_options_set_max_batch(spinel_session_options_t options,
                                                                int64_t max_batch);
/* max_tokens: tokens per run, all sequences together, 0 = no limit. A run
 * with more is an error naming the limit. The session's activation memory
 * grows with the largest batch it has run, so this also bounds it. */
SPINEL_API spinel_status_t spinel_session_options_set_max_tokens(spinel_session_options_t options,
                                                                 int64_t max_tokens);

/* ---- sessions ----------------------------------------------------------- */

/* A session on `model` with `options` (NULL = the defaults; copied: the
 * options object may be changed or freed afterwards). The session holds a
 * reference to the model. The first session on a backend (and ISA level)
 * prepares the model's weights (packing, kernel choice); later ones share
 * them and take milliseconds.
 * session: out, free with spinel_session_free. */
SPINEL_API spinel_status_t spinel_session_create_with(spinel_model_t model, spinel_session_options_t options,
                                                      spinel_session_t* session);
/* Shorthands: the defaults with `threads` (0 = all cores, else 1..1024), and
 * on a named `backend` (NULL = "cpu"). */
SPINEL_API spinel_status_t spinel_session_create(spinel_model_t model, int threads, spinel_session_t* session);
SPINEL_API spinel_status_t spinel_session_create_on(spinel_model_t model, int threads, const char* backend,
                                                    spinel_session_t* session);
/* NULL is ignored. Results of the session stay valid. */
SPINEL_API void spinel_session_free(spinel_session_t session);

/* Tokenizes each text with the model's tokenizer ([CLS] text [SEP],
 * truncated to the model's max_tokens) and runs them as one batch.
 * texts:     num_texts pointers to NUL-terminated UTF-8 (none NULL); read
 *            during the call only.
 * num_texts: >= 1 (and <= max_batch when set).
 * result:    out, the outputs of this run; free with spinel_result_free. */
SPINEL_API spinel_status_t spinel_session_run_texts(spinel_session_t session, const char* const* texts,
                                                    int64_t num_texts, spinel_result_t* result);

/* Runs num_seqs sequences of token ids packed back to back: sequence i is
 * ids[seq_offsets[i] .. seq_offsets[i+1]), with [CLS]/[SEP] already in place.
 * ids:         seq_offsets[num_seqs] ids, each in [0, vocab_size).
 * type_ids:    NULL (all 0), or as many token type ids as ids.
 * seq_offsets: num_seqs + 1 offsets: 0, then non-decreasing; every sequence
 *              1..max_tokens (the model's) long.
 * num_seqs:    >= 1.
 * All inputs are read during the call only.
 * result:      out, the outputs of this run; free with spinel_result_free. */
SPINEL_API spinel_status_t spinel_session_run_ids(spinel_session_t session, const int32_t* ids,
                                                  const int32_t* type_ids, const int64_t* seq_offsets,
                                                  int64_t num_seqs, spinel_result_t* result);

/* The same as spinel_session_run_ids, writing last_hidden_state,
 * [seq_offsets[num_seqs], hidden_size] row-major, into `hidden`, which holds
 * `capacity` floats (fewer than needed is an error naming both sizes). */
SPINEL_API spinel_status_t spinel_session_run(spinel_session_t session, const int32_t* ids,
                                              const int32_t* type_ids, const int64_t* seq_offsets,
                                              int64_t num_seqs, float* hidden, size_t capacity);

/* After a successful run of any kind on this session: the sentence vectors
 * of that run, as spinel_result_pooled (but `width` is required and capacity
 * 0 is not a size query: fewer floats than needed is an error). */
SPINEL_API spinel_status_t spinel_session_pooled(spinel_session_t session, const char* pool, int normalize,
                                                 float* out, size_t capacity, int64_t* width);

/* ---- results ------------------------------------------------------------ */

/* NULL is ignored. Pointers obtained from the result become invalid. */
SPINEL_API void spinel_result_free(spinel_result_t result);

/* The batch layout: sequence i owns rows offsets[i] .. offsets[i+1] of
 * last_hidden_state and ids[offsets[i] .. offsets[i+1]).
 * num_seqs: out (may be NULL).
 * offsets:  out (may be NULL), num_seqs + 1 values, owned by the result and
 *           valid until spinel_result_free. */
SPINEL_API spinel_status_t spinel_result_sequences(spinel_result_t result, int64_t* num_seqs,
                                                   const int64_t** offsets);

/* The token ids that ran (after tokenization and truncation).
 * ids:    out (may be NULL), owned by the result, valid until spinel_result_free.
 * tokens: out (may be NULL), their number (= offsets[num_seqs]). */
SPINEL_API spinel_status_t spinel_result_ids(spinel_result_t result, const int32_t** ids, int64_t* tokens);

/* An output by name, row-major [rows, width]: "last_hidden_state" (rows =
 * tokens) or a per-sequence output of the model (rows = sequences), see
 * spinel_model_output. An unknown name is an error listing the known ones.
 * data:  out, owned by the result, valid until spinel_result_free (no copy).
 * rows, width: out (each may be NULL). */
SPINEL_API spinel_status_t spinel_result_output(spinel_result_t result, const char* name, const float** data,
                                                int64_t* rows, int64_t* width);

/* One vector per sequence, [rows = num_seqs, width] row-major, COPIED into
 * `out`, which holds `capacity` floats.
 * pool:      "cls" (the first token's row), "mean" (of the sequence's rows),
 *            "pooler" (BERT's pooler_output, when the model has it) or the
 *            name of a per-sequence output ("logits", ...); NULL = the
 *            model's default (spinel_model_default_pooling).
 * normalize: 1 = L2-normalize each vector, 0 = do not, -1 = the model's
 *            default when pool is NULL, else do not.
 * capacity:  0 asks for the size (out may be NULL; rows and width are set);
 *            a non-zero capacity below rows * width is an error naming both.
 * rows, width: out (each may be NULL). */
SPINEL_API spinel_status_t spinel_result_pooled(spinel_result_t result, const char* pool, int normalize,
                                                float* out, size_t capacity, int64_t* rows, int64_t* width);

#ifdef __cplusplus
}
#endif

#endif /* SPINEL_SPINEL_H */
