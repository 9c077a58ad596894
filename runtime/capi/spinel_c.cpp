// The C API: exceptions stop here and become a status plus a thread-local
// message.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/prepared.h"
#include "runtime/session.h"
#include "runtime/util/json.h"
#include "spinel/spinel.h"

struct spinel_model {
  std::shared_ptr<const spinel::Model> model;
};
struct spinel_session {
  std::unique_ptr<spinel::Session> session;
  spinel::HiddenStates last;  // of the last successful run
  bool has_run = false;
};

namespace {

thread_local std::string g_last_error;

spinel_status_t set_error(spinel_status_t s, const std::string& msg) {
  g_last_error = spinel::printable(msg);
  return s;
}

template <typename F>
spinel_status_t guarded(spinel_status_t on_error, F&& f) {
  try {
    g_last_error.clear();
    f();
    return SPINEL_OK;
  } catch (const spinel::Error& e) {
    return set_error(on_error, e.what());
  } catch (const std::bad_alloc&) {
    return set_error(SPINEL_RUNTIME_ERROR, "out of memory");
  } catch (const std::exception& e) {
    return set_error(SPINEL_RUNTIME_ERROR, e.what());
  }
}

}  // namespace

extern "C" {

const char* spinel_last_error(void) { return g_last_error.c_str(); }

spinel_status_t spinel_model_load(const char* path, spinel_model_t* model) {
  if (!path || !model) return set_error(SPINEL_INVALID_ARGUMENT, "spinel_model_load: null argument");
  *model = nullptr;
  return guarded(SPINEL_INVALID_MODEL, [&] { *model = new spinel_model{spinel::Model::load(path)}; });
}

void spinel_model_free(spinel_model_t model) { delete model; }

spinel_status_t spinel_model_info(spinel_model_t model, int64_t* hidden_size, int64_t* max_tokens,
                                  int64_t* vocab_size) {
  if (!model) return set_error(SPINEL_INVALID_ARGUMENT, "spinel_model_info: null model");
  const auto& c = model->model->config();
  if (hidden_size) *hidden_size = c.hidden_size;
  if (max_tokens) *max_tokens = c.max_position;
  if (vocab_size) *vocab_size = c.vocab_size;
  return SPINEL_OK;
}

spinel_status_t spinel_tokenize(spinel_model_t model, const char* text, size_t max_length,
                                int32_t* ids, size_t capacity, size_t* count) {
  if (!model || !text || !count || (capacity && !ids))
    return set_error(SPINEL_INVALID_ARGUMENT, "spinel_tokenize: null argument");
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    const size_t limit = static_cast<size_t>(model->model->config().max_position);
    if (max_length == 0 || max_length > limit) max_length = limit;
    const auto e = model->model->tokenizer().encode(text, std::nullopt, max_length, true);
    *count = e.ids.size();
    // capacity 0 with ids NULL is a size query: nothing to copy (and memcpy
    // must not see a null pointer even for 0 bytes).
    if (capacity) std::memcpy(ids, e.ids.data(), std::min(capacity, e.ids.size()) * sizeof(int32_t));
  });
}

spinel_status_t spinel_session_create(spinel_model_t model, int threads, spinel_session_t* session) {
  if (!model || !session) return set_error(SPINEL_INVALID_ARGUMENT, "spinel_session_create: null argument");
  *session = nullptr;
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    *session = new spinel_session{std::make_unique<spinel::Session>(model->model, threads), {}, false};
  });
}

spinel_status_t spinel_session_create_on(spinel_model_t model, int threads, const char* backend,
                                         spinel_session_t* session) {
  if (!model || !session) return set_error(SPINEL_INVALID_ARGUMENT, "spinel_session_create_on: null argument");
  *session = nullptr;
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    spinel::SessionOptions o;
    o.threads = threads;
    if (backend) o.backend = backend;
    *session = new spinel_session{std::make_unique<spinel::Session>(model->model, o), {}, false};
  });
}

spinel_status_t spinel_session_pooled(spinel_session_t session, const char* pool, int normalize,
                                      float* out, size_t capacity, int64_t* width) {
  if (!session || !out || !width) return set_error(SPINEL_INVALID_ARGUMENT, "spinel_session_pooled: null argument");
  if (normalize < -1 || normalize > 1)
    return set_error(SPINEL_INVALID_ARGUMENT, "spinel_session_pooled: normalize must be -1, 0 or 1");
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    if (!session->has_run) spinel::fail("spinel_session_pooled: no successful run yet on this session");
    const spinel::ModelConfig& c = session->session->model().config();
    const std::string how = pool ? pool : c.default_pool;
    if (how == "none") spinel::fail("pool 'none' gives no sentence vectors; read last_hidden_state from spinel_session_run");
    const bool norm = normalize == -1 ? (!pool && c.normalize) : normalize == 1;
    const auto v = spinel::pooled(*session->session, session->last, how, norm);
    const int64_t w = v.empty() ? 0 : static_cast<int64_t>(v[0].size());
    const size_t need = v.size() * static_cast<size_t>(w);
    if (capacity < need) spinel::fail("output buffer holds ", capacity, " floats, the vectors need ", need);
    for (size_t i = 0; i < v.size(); ++i)
      std::memcpy(out + i * static_cast<size_t>(w), v[i].data(), static_cast<size_t>(w) * sizeof(float));
    *width = w;
  });
}

spinel_status_t spinel_model_kernels(spinel_model_t model, const char* backend, char* json, size_t capacity,
                                     size_t* needed) {
  if (!model || !needed || (capacity > 0 && !json))
    return set_error(SPINEL_INVALID_ARGUMENT, "spinel_model_kernels: null argument");
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    namespace json_ = spinel::json;
    const spinel::Backend& b = spinel::backend_or_fail(backend ? backend : "cpu");
    const auto ops = spinel::kernel_report(*model->model, b);
    const spinel::CpuReport cpu = spinel::cpu_report();
    std::string o = "{\"backend\":" + json_::quote(b.name()) + ",\"device\":" + json_::quote(b.describe()) +
                    ",\"cpu\":{\"detected_isa\":" + json_::quote(cpu.detected_isa) +
                    ",\"active_isa\":" + json_::quote(cpu.active_isa) +
                    ",\"amx_int8\":" + (cpu.amx_int8 ? "true" : "false") +
                    ",\"omp_spin_policy\":" + json_::quote(cpu.omp_spin_policy) + "},\"ops\":[";
    for (size_t i = 0; i < ops.size(); ++i)
      o += std::string(i ? "," : "") + "{\"index\":" + std::to_string(ops[i].op_index) +
           ",\"kind\":" + json_::quote(spinel::op_kind_name(ops[i].kind)) +
           ",\"name\":" + json_::quote(ops[i].op_name) + ",\"kernel\":" + json_::quote(ops[i].kernel) +
           ",\"why\":" + json_::quote(ops[i].why) + "}";
    o += "]}";
    *needed = o.size() + 1;
    if (capacity > 0) {
      const size_t n = std::min(capacity - 1, o.size());
      std::memcpy(json, o.data(), n);
      json[n] = '\0';
    }
  });
}

void spinel_session_free(spinel_session_t session) { delete session; }

spinel_status_t spinel_session_run(spinel_session_t session, const int32_t* ids,
                                   const int32_t* type_ids, const int64_t* seq_offsets,
                                   int64_t num_seqs, float* hidden, size_t capacity) {
  if (!session || !ids || !seq_offsets || !hidden || num_seqs <= 0)
    return set_error(SPINEL_INVALID_ARGUMENT, "spinel_session_run: null argument or no sequences");
  return guarded(SPINEL_INVALID_ARGUMENT, [&] {
    // Offsets and the output size are checked before anything is copied.
    if (seq_offsets[0] != 0) spinel::fail("seq_offsets[0] must be 0, not ", seq_offsets[0]);
    const spinel::Model& model = session->session->model();
    const int64_t limit = model.config().max_position;
    for (int64_t i = 0; i < num_seqs; ++i) {
      if (seq_offsets[i + 1] < seq_offsets[i])
        spinel::fail("seq_offsets must not decrease (sequence ", i, ")");
      const int64_t len = seq_offsets[i + 1] - seq_offsets[i];  // both >= 0: no overflow
      if (len > limit)
        spinel::fail("sequence ", i, " has ", len, " tokens; the model accepts at most ", limit);
    }
    const int64_t tokens = seq_offsets[num_seqs];  // <= num_seqs * limit: no overflow below
    const int64_t width = model.config().hidden_size;
    const size_t need = static_cast<size_t>(tokens) * static_cast<size_t>(width);
    if (capacity < need)
      spinel::fail("output buffer holds ", capacity, " floats, the batch needs ", need);
    std::vector<spinel::Sequence> batch(static_cast<size_t>(num_seqs));
    for (int64_t i = 0; i < num_seqs; ++i) {
      const int64_t b = seq_offsets[i], e = seq_offsets[i + 1];
      batch[i].ids.assign(ids + b, ids + e);
      if (type_ids) batch[i].type_ids.assign(type_ids + b, type_ids + e);
    }
    session->has_run = false;
    const spinel::HiddenStates h = session->session->run(batch);
    std::memcpy(hidden, h.data, need * sizeof(float));
    session->last = h;
    session->has_run = true;
  });
}

}  // extern "C"
