// The C API: exceptions stop here and become a status plus a thread-local
// message. Every entry point runs its whole body inside `guarded`, so that
// also the argument checks and the message itself cannot throw past it.
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/prepared.h"
#include "runtime/session.h"
#include "runtime/util/json.h"
#include "spinel/spinel.h"

#define SPINEL_STR2(x) #x
#define SPINEL_STR(x) SPINEL_STR2(x)

namespace {
constexpr bool same(const char* a, const char* b) { return *a == *b && (*a == '\0' || same(a + 1, b + 1)); }
}  // namespace
// The header's version macros follow CMake's project(VERSION ...).
#ifdef SPINEL_PROJECT_VERSION
static_assert(same(SPINEL_PROJECT_VERSION, SPINEL_STR(SPINEL_VERSION_MAJOR) "." SPINEL_STR(
                                               SPINEL_VERSION_MINOR) "." SPINEL_STR(SPINEL_VERSION_PATCH)),
              "SPINEL_VERSION_* in spinel.h differ from the project version in CMakeLists.txt");
#endif

struct spinel_model {
  std::shared_ptr<const spinel::Model> model;
};
struct spinel_session_options {
  spinel::SessionOptions opts;
  std::string isa;  // empty: leave the process-wide cap alone
};
struct spinel_session {
  std::shared_ptr<const spinel::Model> model;
  std::unique_ptr<spinel::Session> session;
  spinel::HiddenStates last;  // of the last successful run (points into the session)
  bool has_run = false;
};
// Copies of one run's outputs: independent of the session afterwards.
struct spinel_result {
  std::shared_ptr<const spinel::Model> model;  // for pooling names and defaults
  std::vector<int32_t> ids;
  std::vector<int64_t> offsets;
  int64_t hidden_width = 0;
  std::vector<float> hidden;
  struct Output {
    std::string name;
    int64_t rows = 0, width = 0;
    std::vector<float> data;
    bool is_hidden = false;  // the hidden states themselves: read from `hidden`, not copied twice
  };
  std::vector<Output> outputs;  // the graph's per-sequence outputs
};

namespace {

// An error found by the C layer itself, with its status.
struct ApiError {
  spinel_status_t status;
  std::string message;
};

thread_local std::string g_last_error;
thread_local const char* g_fixed_error = nullptr;  // when the message could not be stored

void set_error(spinel_status_t s, const char* fn, const char* what) noexcept {
  try {
    g_fixed_error = nullptr;
    g_last_error.assign(fn);
    g_last_error += ": ";
    g_last_error += spinel::printable(what);
  } catch (...) {
    g_fixed_error = s == SPINEL_OUT_OF_MEMORY ? "out of memory (and no room for the message)"
                                              : "an error occurred (no room for its message)";
  }
}

// Runs f; an exception becomes a status and the thread's message, prefixed
// with the function's name. `on_error` is the status of a spinel::Error
// (which names bad input: INVALID_ARGUMENT, or INVALID_MODEL when loading).
template <typename F>
spinel_status_t guarded(const char* fn, spinel_status_t on_error, F&& f) noexcept {
  spinel_status_t s = SPINEL_RUNTIME_ERROR;
  try {
    g_fixed_error = nullptr;
    g_last_error.clear();
    f();
    return SPINEL_OK;
  } catch (const ApiError& e) {
    s = e.status;
    set_error(s, fn, e.message.c_str());
  } catch (const spinel::Error& e) {
    s = on_error;
    set_error(s, fn, e.what());
  } catch (const std::bad_alloc&) {
    s = SPINEL_OUT_OF_MEMORY;
    set_error(s, fn, "out of memory");
  } catch (const std::exception& e) {
    s = SPINEL_RUNTIME_ERROR;
    set_error(s, fn, e.what());
  } catch (...) {
    s = SPINEL_RUNTIME_ERROR;
    set_error(s, fn, "unknown exception");
  }
  return s;
}

[[noreturn]] void bad_arg(const std::string& msg) { throw ApiError{SPINEL_INVALID_ARGUMENT, msg}; }

template <typename T>
void need(const T* p, const char* name) {
  if (!p) bad_arg(std::string(name) + " is NULL");
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// Copies `s` (with its NUL) into `buf` of `capacity` bytes, cut short when
// too small; capacity 0 only reports the size.
void copy_out(const std::string& s, char* buf, size_t capacity, size_t* needed) {
  *needed = s.size() + 1;
  if (capacity > 0) {
    const size_t n = std::min(capacity - 1, s.size());
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
  }
}

void check_threads(int threads) {
  if (threads < 0 || threads > spinel::kMaxThreads)
    bad_arg("threads is " + std::to_string(threads) + "; use 0 (every core) or 1.." +
            std::to_string(spinel::kMaxThreads));
}

void check_isa(const char* arg, const char* isa) {
  const auto levels = spinel::isa_levels();
  if (std::find(levels.begin(), levels.end(), isa) == levels.end())
    bad_arg(std::string(arg) + ": unknown instruction set '" + spinel::printable(isa) + "' (use " +
            join(levels, ", ") + ")");
}

void check_backend(const char* backend) {
  // Names the known ones (this build's; "cuda" is listed once it is built in).
  spinel::backend_or_fail(backend);
}

// The packed batch of run / run_ids, checked before anything is copied.
std::vector<spinel::Sequence> packed_batch(const spinel::Model& model, const int32_t* ids,
                                           const int32_t* type_ids, const int64_t* seq_offsets,
                                           int64_t num_seqs) {
  need(seq_offsets, "seq_offsets");
  if (num_seqs <= 0) bad_arg("num_seqs is " + std::to_string(num_seqs) + "; give at least one sequence");
  if (seq_offsets[0] != 0) bad_arg("seq_offsets[0] must be 0, not " + std::to_string(seq_offsets[0]));
  const int64_t limit = model.config().max_position;
  for (int64_t i = 0; i < num_seqs; ++i) {
    if (seq_offsets[i + 1] < seq_offsets[i])
      bad_arg("seq_offsets must not decrease: seq_offsets[" + std::to_string(i + 1) + "] = " +
              std::to_string(seq_offsets[i + 1]) + " < seq_offsets[" + std::to_string(i) +
              "] = " + std::to_string(seq_offsets[i]));
    const int64_t len = seq_offsets[i + 1] - seq_offsets[i];  // both >= 0: no overflow
    if (len > limit)
      bad_arg("sequence " + std::to_string(i) + " has " + std::to_string(len) +
              " tokens; the model accepts at most " + std::to_string(limit));
  }
  need(ids, "ids");
  std::vector<spinel::Sequence> batch(static_cast<size_t>(num_seqs));
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t b = seq_offsets[i], e = seq_offsets[i + 1];
    batch[i].ids.assign(ids + b, ids + e);
    if (type_ids) batch[i].type_ids.assign(type_ids + b, type_ids + e);
  }
  return batch;
}

// Checks, then runs; the session's last run is kept unless this one started.
const spinel::HiddenStates& run_batch(spinel_session& s, const std::vector<spinel::Sequence>& batch) {
  s.session->check(batch);
  s.has_run = false;
  s.last = s.session->run(batch);
  s.has_run = true;
  return s.last;
}

// Copies what the run left in the session into a result of its own.
std::unique_ptr<spinel_result> make_result(const spinel_session& s, const spinel::HiddenStates& h) {
  auto r = std::make_unique<spinel_result>();
  r->model = s.model;
  r->offsets = h.offsets;
  r->hidden_width = h.width;
  const size_t tokens = static_cast<size_t>(h.offsets.back());
  r->hidden.assign(h.data, h.data + tokens * static_cast<size_t>(h.width));
  r->ids.reserve(tokens);
  const spinel::Graph& g = s.model->graph();
  for (const spinel::GraphOutput& o : g.outputs) {
    const spinel::OutputView v = s.session->output(o.name);
    spinel_result::Output out;
    out.name = o.name;
    out.rows = v.rows;
    out.width = v.width;
    // An output that is the hidden states (last_hidden_state) is the copy in
    // r->hidden already: a second 0.4 MB copy per run at BERT-base 128 tokens.
    out.is_hidden = v.data == h.data && v.rows == h.offsets.back() && v.width == h.width;
    if (!out.is_hidden) out.data.assign(v.data, v.data + static_cast<size_t>(v.rows * v.width));
    r->outputs.push_back(std::move(out));
  }
  return r;
}

void append_ids(spinel_result& r, const std::vector<spinel::Sequence>& batch) {
  for (const spinel::Sequence& q : batch) r.ids.insert(r.ids.end(), q.ids.begin(), q.ids.end());
}

spinel::OutputView view(const spinel_result& r, const spinel_result::Output& o) {
  spinel::OutputView v;
  v.name = o.name;
  v.rows = o.rows;
  v.width = o.width;
  v.data = o.is_hidden ? r.hidden.data() : o.data.data();
  return v;
}

const spinel_result::Output* find_output(const spinel_result& r, const std::string& name) {
  for (const auto& o : r.outputs)
    if (o.name == name) return &o;
  return nullptr;
}

// Pool name and normalization as the header defines them for NULL / -1.
std::vector<std::vector<float>> pooled_vectors(const spinel::Model& m, const spinel::HiddenStates& h,
                                               const std::function<spinel::OutputView(const std::string&)>& output,
                                               const char* pool, int normalize) {
  if (normalize < -1 || normalize > 1)
    bad_arg("normalize is " + std::to_string(normalize) + "; use 1, 0 or -1 (the model's default)");
  const spinel::ModelConfig& c = m.config();
  const std::string how = pool ? pool : c.default_pool;
  if (how == "none")
    bad_arg("pool 'none' gives no sentence vectors; read the output last_hidden_state instead");
  const auto names = spinel::pooling_names(m);
  if (std::find(names.begin(), names.end(), how) == names.end())
    bad_arg("pool: '" + spinel::printable(how) + "' is not available for this model (it has: " + join(names) + ")");
  const bool norm = normalize == -1 ? (!pool && c.normalize) : normalize == 1;
  return spinel::pooled(m, h, output, how, norm);
}

}  // namespace

extern "C" {

// ---- library ------------------------------------------------------------------

const char* spinel_version(void) {
  return SPINEL_STR(SPINEL_VERSION_MAJOR) "." SPINEL_STR(SPINEL_VERSION_MINOR) "." SPINEL_STR(SPINEL_VERSION_PATCH);
}

int spinel_format_version(void) { return static_cast<int>(spinel::kSpnlVersion); }

const char* spinel_last_error(void) { return g_fixed_error ? g_fixed_error : g_last_error.c_str(); }

const char* spinel_status_name(spinel_status_t status) {
  // A C caller may pass any int; reading it as the C++ enum type would be
  // undefined for values outside the enum's range.
  int value = 0;
  static_assert(sizeof value == sizeof status, "spinel_status_t is int-sized");
  std::memcpy(&value, &status, sizeof value);
  switch (value) {
    case SPINEL_OK: return "SPINEL_OK";
    case SPINEL_INVALID_ARGUMENT: return "SPINEL_INVALID_ARGUMENT";
    case SPINEL_INVALID_MODEL: return "SPINEL_INVALID_MODEL";
    case SPINEL_RUNTIME_ERROR: return "SPINEL_RUNTIME_ERROR";
    case SPINEL_OUT_OF_MEMORY: return "SPINEL_OUT_OF_MEMORY";
  }
  return "unknown status";
}

spinel_status_t spinel_backends(char* names, size_t capacity, size_t* needed) {
  return guarded("spinel_backends", SPINEL_INVALID_ARGUMENT, [&] {
    need(needed, "needed");
    if (capacity > 0) need(names, "names (with capacity > 0)");
    copy_out(join(spinel::backend_names(), ","), names, capacity, needed);
  });
}

spinel_status_t spinel_set_isa_cap(const char* level) {
  return guarded("spinel_set_isa_cap", SPINEL_INVALID_ARGUMENT, [&] {
    need(level, "level");
    check_isa("level", level);
    spinel::set_isa_cap(level);
  });
}

// ---- models -------------------------------------------------------------------

spinel_status_t spinel_model_load(const char* path, spinel_model_t* model) {
  if (model) *model = nullptr;
  return guarded("spinel_model_load", SPINEL_INVALID_MODEL, [&] {
    need(model, "model");
    need(path, "path");
    auto m = std::make_unique<spinel_model>();
    m->model = spinel::Model::load(path);
    *model = m.release();
  });
}

spinel_status_t spinel_model_load_from_memory(const void* data, size_t size, const char* name,
                                              spinel_model_t* model) {
  if (model) *model = nullptr;
  return guarded("spinel_model_load_from_memory", SPINEL_INVALID_MODEL, [&] {
    need(model, "model");
    need(data, "data");
    if (size == 0) bad_arg("size is 0: a .spnl file is never empty");
    auto m = std::make_unique<spinel_model>();
    m->model = spinel::Model::from_memory(data, size, name ? name : "<memory>");
    *model = m.release();
  });
}

void spinel_model_free(spinel_model_t model) { delete model; }

spinel_status_t spinel_model_info(spinel_model_t model, int64_t* hidden_size, int64_t* max_tokens,
                                  int64_t* vocab_size) {
  return guarded("spinel_model_info", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    const auto& c = model->model->config();
    if (hidden_size) *hidden_size = c.hidden_size;
    if (max_tokens) *max_tokens = c.max_position;
    if (vocab_size) *vocab_size = c.vocab_size;
  });
}

spinel_status_t spinel_model_architecture(spinel_model_t model, const char** name) {
  return guarded("spinel_model_architecture", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    need(name, "name");
    *name = model->model->config().architecture.c_str();
  });
}

spinel_status_t spinel_model_default_pooling(spinel_model_t model, const char** pool, int* normalize) {
  return guarded("spinel_model_default_pooling", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    const auto& c = model->model->config();
    if (pool) *pool = c.default_pool.c_str();
    if (normalize) *normalize = c.normalize ? 1 : 0;
  });
}

spinel_status_t spinel_model_num_outputs(spinel_model_t model, int64_t* count) {
  return guarded("spinel_model_num_outputs", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    need(count, "count");
    *count = 1 + static_cast<int64_t>(model->model->graph().outputs.size());
  });
}

spinel_status_t spinel_model_output(spinel_model_t model, int64_t index, const char** name, int64_t* width,
                                    int* per_token) {
  return guarded("spinel_model_output", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    const spinel::Graph& g = model->model->graph();
    const int64_t count = 1 + static_cast<int64_t>(g.outputs.size());
    if (index < 0 || index >= count)
      bad_arg("index " + std::to_string(index) + " is outside [0, " + std::to_string(count) +
              ") (the model has " + std::to_string(count) + " outputs)");
    if (index == 0) {
      if (name) *name = "last_hidden_state";
      if (width) *width = g.values[static_cast<size_t>(g.output)].width;
      if (per_token) *per_token = 1;
      return;
    }
    const spinel::GraphOutput& o = g.outputs[static_cast<size_t>(index - 1)];
    if (name) *name = o.name.c_str();
    if (width) *width = g.values[static_cast<size_t>(o.value)].width;
    if (per_token) *per_token = g.values[static_cast<size_t>(o.value)].rows == spinel::Rows::Tokens ? 1 : 0;
  });
}

spinel_status_t spinel_model_info_json(spinel_model_t model, char* json, size_t capacity, size_t* needed) {
  return guarded("spinel_model_info_json", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    need(needed, "needed");
    if (capacity > 0) need(json, "json (with capacity > 0)");
    namespace js = spinel::json;
    const spinel::Model& m = *model->model;
    const spinel::ModelConfig& c = m.config();
    const spinel::Graph& g = m.graph();
    auto num = [](int64_t v) { return std::to_string(v); };
    std::string o = "{\"architecture\":" + js::quote(c.architecture) + ",\"hidden_size\":" + num(c.hidden_size) +
                    ",\"max_tokens\":" + num(c.max_position) + ",\"vocab_size\":" + num(c.vocab_size) +
                    ",\"type_vocab_size\":" + num(c.type_vocab_size) + ",\"num_layers\":" + num(c.num_layers) +
                    ",\"num_heads\":" + num(c.num_heads) + ",\"intermediate_size\":" + num(c.intermediate_size) +
                    ",\"tokenizer\":" + js::quote(m.tokenizer_kind()) +
                    ",\"format_version\":" + num(m.format_version()) + ",\"source\":" + js::quote(c.source) +
                    ",\"default_pool\":" + js::quote(c.default_pool) +
                    ",\"normalize\":" + (c.normalize ? "true" : "false") + ",\"poolings\":[";
    const auto names = spinel::pooling_names(m);
    for (size_t i = 0; i < names.size(); ++i) o += (i ? "," : "") + js::quote(names[i]);
    o += "],\"outputs\":[{\"name\":\"last_hidden_state\",\"width\":" +
         num(g.values[static_cast<size_t>(g.output)].width) + ",\"per_token\":true}";
    for (const spinel::GraphOutput& out : g.outputs) {
      const spinel::Value& v = g.values[static_cast<size_t>(out.value)];
      o += ",{\"name\":" + js::quote(out.name) + ",\"width\":" + num(v.width) +
           ",\"per_token\":" + (v.rows == spinel::Rows::Tokens ? "true" : "false") + "}";
    }
    o += "]}";
    copy_out(o, json, capacity, needed);
  });
}

spinel_status_t spinel_model_kernels(spinel_model_t model, const char* backend, char* json, size_t capacity,
                                     size_t* needed) {
  return guarded("spinel_model_kernels", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    need(needed, "needed");
    if (capacity > 0) need(json, "json (with capacity > 0)");
    namespace js = spinel::json;
    const spinel::Backend& b = spinel::backend_or_fail(backend ? backend : "cpu");
    const auto ops = spinel::kernel_report(*model->model, b);
    const spinel::CpuReport cpu = spinel::cpu_report();
    std::string o = "{\"backend\":" + js::quote(b.name()) + ",\"device\":" + js::quote(b.describe()) +
                    ",\"cpu\":{\"detected_isa\":" + js::quote(cpu.detected_isa) +
                    ",\"active_isa\":" + js::quote(cpu.active_isa) +
                    ",\"amx_int8\":" + (cpu.amx_int8 ? "true" : "false") +
                    ",\"dense_int8_on_sparse\":" + (cpu.dense_int8_on_sparse ? "true" : "false") +
                    ",\"omp_spin_policy\":" + js::quote(cpu.omp_spin_policy) + "},\"ops\":[";
    for (size_t i = 0; i < ops.size(); ++i)
      o += std::string(i ? "," : "") + "{\"index\":" + std::to_string(ops[i].op_index) +
           ",\"kind\":" + js::quote(spinel::op_kind_name(ops[i].kind)) +
           ",\"name\":" + js::quote(ops[i].op_name) + ",\"kernel\":" + js::quote(ops[i].kernel) +
           ",\"why\":" + js::quote(ops[i].why) + "}";
    o += "]}";
    copy_out(o, json, capacity, needed);
  });
}

spinel_status_t spinel_tokenize(spinel_model_t model, const char* text, size_t max_length, int32_t* ids,
                                size_t capacity, size_t* count) {
  return guarded("spinel_tokenize", SPINEL_INVALID_ARGUMENT, [&] {
    need(model, "model");
    need(text, "text");
    need(count, "count");
    if (capacity > 0) need(ids, "ids (with capacity > 0)");
    const size_t limit = static_cast<size_t>(model->model->config().max_position);
    if (max_length == 0 || max_length > limit) max_length = limit;
    const auto e = model->model->tokenizer().encode(text, std::nullopt, max_length, true);
    // capacity 0 with ids NULL is a size query: nothing to copy (and memcpy
    // must not see a null pointer even for 0 bytes).
    if (capacity) std::memcpy(ids, e.ids.data(), std::min(capacity, e.ids.size()) * sizeof(int32_t));
    *count = e.ids.size();
  });
}

// ---- session options ------------------------------------------------------------

spinel_status_t spinel_session_options_create(spinel_session_options_t* options) {
  if (options) *options = nullptr;
  return guarded("spinel_session_options_create", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    *options = new spinel_session_options();
  });
}

void spinel_session_options_free(spinel_session_options_t options) { delete options; }

spinel_status_t spinel_session_options_set_threads(spinel_session_options_t options, int threads) {
  return guarded("spinel_session_options_set_threads", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    check_threads(threads);
    options->opts.threads = threads;
  });
}

spinel_status_t spinel_session_options_set_backend(spinel_session_options_t options, const char* backend) {
  return guarded("spinel_session_options_set_backend", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    const char* name = backend ? backend : "cpu";
    check_backend(name);
    options->opts.backend = name;
  });
}

spinel_status_t spinel_session_options_set_isa(spinel_session_options_t options, const char* isa) {
  return guarded("spinel_session_options_set_isa", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    if (isa) check_isa("isa", isa);
    options->isa = isa ? isa : "";
  });
}

spinel_status_t spinel_session_options_set_max_batch(spinel_session_options_t options, int64_t max_batch) {
  return guarded("spinel_session_options_set_max_batch", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    if (max_batch < 0) bad_arg("max_batch is " + std::to_string(max_batch) + "; use 0 (no limit) or more");
    options->opts.max_batch = max_batch;
  });
}

spinel_status_t spinel_session_options_set_max_tokens(spinel_session_options_t options, int64_t max_tokens) {
  return guarded("spinel_session_options_set_max_tokens", SPINEL_INVALID_ARGUMENT, [&] {
    need(options, "options");
    if (max_tokens < 0) bad_arg("max_tokens is " + std::to_string(max_tokens) + "; use 0 (no limit) or more");
    options->opts.max_tokens = max_tokens;
  });
}

// ---- sessions -------------------------------------------------------------------

namespace {
spinel_session* new_session(spinel_model_t model, const spinel::SessionOptions& o, const std::string& isa) {
  need(model, "model");
  check_threads(o.threads);
  check_backend(o.backend.c_str());
  // Process-wide (spinel.h says so): set only once everything else is checked.
  if (!isa.empty()) spinel::set_isa_cap(isa);
  auto s = std::make_unique<spinel_session>();
  s->model = model->model;
  s->session = std::make_unique<spinel::Session>(model->model, o);
  return s.release();
}
}  // namespace

spinel_status_t spinel_session_create_with(spinel_model_t model, spinel_session_options_t options,
                                           spinel_session_t* session) {
  if (session) *session = nullptr;
  return guarded("spinel_session_create_with", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    const spinel_session_options defaults;
    const spinel_session_options& o = options ? *options : defaults;
    *session = new_session(model, o.opts, o.isa);
  });
}

spinel_status_t spinel_session_create(spinel_model_t model, int threads, spinel_session_t* session) {
  if (session) *session = nullptr;
  return guarded("spinel_session_create", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    spinel::SessionOptions o;
    o.threads = threads;
    *session = new_session(model, o, "");
  });
}

spinel_status_t spinel_session_create_on(spinel_model_t model, int threads, const char* backend,
                                         spinel_session_t* session) {
  if (session) *session = nullptr;
  return guarded("spinel_session_create_on", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    spinel::SessionOptions o;
    o.threads = threads;
    if (backend) o.backend = backend;
    *session = new_session(model, o, "");
  });
}

void spinel_session_free(spinel_session_t session) { delete session; }

spinel_status_t spinel_session_run_texts(spinel_session_t session, const char* const* texts, int64_t num_texts,
                                         spinel_result_t* result) {
  if (result) *result = nullptr;
  return guarded("spinel_session_run_texts", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    need(result, "result");
    need(texts, "texts");
    if (num_texts <= 0) bad_arg("num_texts is " + std::to_string(num_texts) + "; give at least one text");
    const int64_t max_batch = session->session->max_batch();
    if (max_batch > 0 && num_texts > max_batch)
      bad_arg("num_texts is " + std::to_string(num_texts) + ", more than this session's max_batch of " +
              std::to_string(max_batch));
    for (int64_t i = 0; i < num_texts; ++i)
      if (!texts[i]) bad_arg("texts[" + std::to_string(i) + "] is NULL");
    const spinel::Model& m = *session->model;
    const size_t limit = static_cast<size_t>(m.config().max_position);
    std::vector<spinel::Sequence> batch(static_cast<size_t>(num_texts));
    for (int64_t i = 0; i < num_texts; ++i) {
      spinel::Encoding e = m.tokenizer().encode(texts[i], std::nullopt, limit, true);
      batch[static_cast<size_t>(i)].ids = std::move(e.ids);
      batch[static_cast<size_t>(i)].type_ids = std::move(e.type_ids);
    }
    const spinel::HiddenStates& h = run_batch(*session, batch);
    auto r = make_result(*session, h);
    append_ids(*r, batch);
    *result = r.release();
  });
}

spinel_status_t spinel_session_run_ids(spinel_session_t session, const int32_t* ids, const int32_t* type_ids,
                                       const int64_t* seq_offsets, int64_t num_seqs, spinel_result_t* result) {
  if (result) *result = nullptr;
  return guarded("spinel_session_run_ids", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    need(result, "result");
    const auto batch = packed_batch(*session->model, ids, type_ids, seq_offsets, num_seqs);
    const spinel::HiddenStates& h = run_batch(*session, batch);
    auto r = make_result(*session, h);
    append_ids(*r, batch);
    *result = r.release();
  });
}

spinel_status_t spinel_session_run(spinel_session_t session, const int32_t* ids, const int32_t* type_ids,
                                   const int64_t* seq_offsets, int64_t num_seqs, float* hidden, size_t capacity) {
  return guarded("spinel_session_run", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    need(hidden, "hidden");
    const auto batch = packed_batch(*session->model, ids, type_ids, seq_offsets, num_seqs);
    // The output size is checked before anything runs.
    const size_t tokens = static_cast<size_t>(seq_offsets[num_seqs]);
    const size_t width = static_cast<size_t>(session->model->config().hidden_size);
    if (tokens > std::numeric_limits<size_t>::max() / sizeof(float) / width)
      bad_arg("the batch's " + std::to_string(tokens) + " tokens do not fit in memory");
    const size_t need_floats = tokens * width;
    if (capacity < need_floats)
      bad_arg("capacity: the output buffer holds " + std::to_string(capacity) + " floats, the batch needs " +
              std::to_string(need_floats));
    const spinel::HiddenStates& h = run_batch(*session, batch);
    std::memcpy(hidden, h.data, need_floats * sizeof(float));
  });
}

spinel_status_t spinel_session_pooled(spinel_session_t session, const char* pool, int normalize, float* out,
                                      size_t capacity, int64_t* width) {
  return guarded("spinel_session_pooled", SPINEL_INVALID_ARGUMENT, [&] {
    need(session, "session");
    need(out, "out");
    need(width, "width");
    if (!session->has_run) bad_arg("no successful run yet on this session");
    const spinel::Session& s = *session->session;
    const auto v = pooled_vectors(*session->model, session->last,
                                  [&](const std::string& n) { return s.output(n); }, pool, normalize);
    const int64_t w = v.empty() ? 0 : static_cast<int64_t>(v[0].size());
    const size_t need_floats = v.size() * static_cast<size_t>(w);
    if (capacity < need_floats)
      bad_arg("capacity: the output buffer holds " + std::to_string(capacity) + " floats, the vectors need " +
              std::to_string(need_floats));
    for (size_t i = 0; i < v.size(); ++i)
      std::memcpy(out + i * static_cast<size_t>(w), v[i].data(), static_cast<size_t>(w) * sizeof(float));
    *width = w;
  });
}

// ---- results --------------------------------------------------------------------

void spinel_result_free(spinel_result_t result) { delete result; }

spinel_status_t spinel_result_sequences(spinel_result_t result, int64_t* num_seqs, const int64_t** offsets) {
  return guarded("spinel_result_sequences", SPINEL_INVALID_ARGUMENT, [&] {
    need(result, "result");
    if (num_seqs) *num_seqs = static_cast<int64_t>(result->offsets.size()) - 1;
    if (offsets) *offsets = result->offsets.data();
  });
}

spinel_status_t spinel_result_ids(spinel_result_t result, const int32_t** ids, int64_t* tokens) {
  return guarded("spinel_result_ids", SPINEL_INVALID_ARGUMENT, [&] {
    need(result, "result");
    if (ids) *ids = result->ids.data();
    if (tokens) *tokens = static_cast<int64_t>(result->ids.size());
  });
}

spinel_status_t spinel_result_output(spinel_result_t result, const char* name, const float** data, int64_t* rows,
                                     int64_t* width) {
  return guarded("spinel_result_output", SPINEL_INVALID_ARGUMENT, [&] {
    need(result, "result");
    need(name, "name");
    need(data, "data");
    const std::string n = name;
    if (n == "last_hidden_state") {
      *data = result->hidden.data();
      if (rows) *rows = result->offsets.back();
      if (width) *width = result->hidden_width;
      return;
    }
    const spinel_result::Output* o = find_output(*result, n);
    if (!o) {
      std::vector<std::string> known{"last_hidden_state"};
      for (const auto& x : result->outputs) known.push_back(x.name);
      bad_arg("name: the model has no output '" + spinel::printable(n) + "' (it has: " + join(known) + ")");
    }
    *data = o->is_hidden ? result->hidden.data() : o->data.data();
    if (rows) *rows = o->rows;
    if (width) *width = o->width;
  });
}

spinel_status_t spinel_result_pooled(spinel_result_t result, const char* pool, int normalize, float* out,
                                     size_t capacity, int64_t* rows, int64_t* width) {
  return guarded("spinel_result_pooled", SPINEL_INVALID_ARGUMENT, [&] {
    need(result, "result");
    spinel::HiddenStates h;
    h.offsets = result->offsets;
    h.width = result->hidden_width;
    h.data = result->hidden.data();
    const auto v = pooled_vectors(*result->model, h,
                                  [&](const std::string& n) {
                                    const spinel_result::Output* o = find_output(*result, n);
                                    if (!o) spinel::fail("the result has no output '", n, "'");
                                    return view(*result, *o);
                                  },
                                  pool, normalize);
    const int64_t n = static_cast<int64_t>(v.size());
    const int64_t w = v.empty() ? 0 : static_cast<int64_t>(v[0].size());
    const size_t need_floats = static_cast<size_t>(n) * static_cast<size_t>(w);
    if (capacity > 0) {
      need(out, "out (with capacity > 0)");
      if (capacity < need_floats)
        bad_arg("capacity: the output buffer holds " + std::to_string(capacity) + " floats, the " +
                std::to_string(n) + " vectors of " + std::to_string(w) + " need " + std::to_string(need_floats));
      for (size_t i = 0; i < v.size(); ++i)
        std::memcpy(out + i * static_cast<size_t>(w), v[i].data(), static_cast<size_t>(w) * sizeof(float));
    }
    if (rows) *rows = n;
    if (width) *width = w;
  });
}

}  // extern "C"
