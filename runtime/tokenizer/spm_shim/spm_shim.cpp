// libspinel_sentencepiece.so: see spm_shim.h. Every function catches
// everything; nothing but C types leaves.
#include "runtime/tokenizer/spm_shim/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#define SHIM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

void set_error(char* err, size_t cap, const std::string& msg) {
  if (!err || cap == 0) return;
  const size_t n = msg.size() < cap - 1 ? msg.size() : cap - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

const sentencepiece::SentencePieceProcessor* proc(const void* sp) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(sp);
}

}  // namespace

SHIM_EXPORT int spnl_spm_abi() { return SPNL_SPM_ABI; }

SHIM_EXPORT void* spnl_spm_load(const char* data, size_t size, char* err, size_t err_cap) {
  try {
    auto* sp = new sentencepiece::SentencePieceProcessor();
    const auto status = sp->LoadFromSerializedProto(std::string(data, size));
    if (!status.ok()) {
      set_error(err, err_cap, status.ToString());
      delete sp;
      return nullptr;
    }
    return sp;
  } catch (const std::exception& e) {
    set_error(err, err_cap, e.what());
  } catch (...) {
    set_error(err, err_cap, "unknown error in SentencePiece");
  }
  return nullptr;
}

SHIM_EXPORT void spnl_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

SHIM_EXPORT int spnl_spm_piece_size(const void* sp) {
  try {
    return proc(sp)->GetPieceSize();
  } catch (...) {
    return -1;
  }
}

SHIM_EXPORT size_t spnl_spm_id_to_piece(const void* sp, int id, char* buf, size_t cap) {
  try {
    const std::string& p = proc(sp)->IdToPiece(id);
    std::memcpy(buf, p.data(), p.size() < cap ? p.size() : cap);
    return p.size();
  } catch (...) {
    return 0;
  }
}

SHIM_EXPORT int spnl_spm_special_id(const void* sp, int which) {
  switch (which) {
    case 0: return proc(sp)->unk_id();
    case 1: return proc(sp)->bos_id();
    case 2: return proc(sp)->eos_id();
    case 3: return proc(sp)->pad_id();
  }
  return -1;
}

SHIM_EXPORT int spnl_spm_piece_type(const void* sp, int id) {
  const auto* p = proc(sp);
  if (p->IsControl(id)) return 1;
  if (p->IsUnknown(id)) return 2;
  if (p->IsUnused(id)) return 3;
  if (p->IsByte(id)) return 4;
  return 0;
}

SHIM_EXPORT long spnl_spm_encode(const void* sp, const char* text, size_t size, int32_t* ids,
                                 size_t cap, char* err, size_t err_cap) {
  try {
    std::vector<int> out;
    const auto status = proc(sp)->Encode(std::string_view(text, size), &out);
    if (!status.ok()) {
      set_error(err, err_cap, status.ToString());
      return -1;
    }
    for (size_t i = 0; i < out.size() && i < cap; ++i) ids[i] = out[i];
    return static_cast<long>(out.size());
  } catch (const std::exception& e) {
    set_error(err, err_cap, e.what());
  } catch (...) {
    set_error(err, err_cap, "unknown error in SentencePiece");
  }
  return -1;
}
