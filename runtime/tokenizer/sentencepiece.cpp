// SentencePiece through the shim (see spm_shim/spm_shim.h): loaded once per
// process with dlmopen into a new link namespace, so neither the shim's
// libsentencepiece nor its bundled protobuf-lite meets the libprotobuf that
// the ONNX importer uses. (RTLD_DEEPBIND would isolate it too, but the
// sanitizers refuse it.)
#include "runtime/tokenizer/sentencepiece.h"

#include <dlfcn.h>

#include <mutex>

#include "runtime/error.h"
#include "runtime/tokenizer/spm_shim/spm_shim.h"
#include "runtime/util/file_io.h"

namespace spinel {
namespace {

constexpr uint32_t kSerialMagic = 0x544D5053;  // "SPMT"
constexpr uint32_t kSerialVersion = 1;
constexpr const char* kShimName = "libspinel_sentencepiece.so";

struct Shim {
  spnl_spm_load_fn load = nullptr;
  spnl_spm_free_fn free = nullptr;
  spnl_spm_piece_size_fn piece_size = nullptr;
  spnl_spm_id_to_piece_fn id_to_piece = nullptr;
  spnl_spm_special_id_fn special_id = nullptr;
  spnl_spm_piece_type_fn piece_type = nullptr;
  spnl_spm_encode_fn encode = nullptr;
};

std::string dir_of_this_library() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&dir_of_this_library), &info) == 0 || !info.dli_fname)
    return "";
  std::string p = info.dli_fname;
  const auto slash = p.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

const Shim& shim() {
  static Shim s;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    void* h = nullptr;
    for (const std::string& path : SentencePieceTokenizer::shim_candidates()) {
      // A new namespace per process: glibc allows only a few.
      h = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      const char* e = dlerror();
      tried += "\n  " + path + ": " + (e ? e : "not loadable");
    }
    if (!h) {
      error = std::string("SentencePiece support is not available: cannot load ") + kShimName +
              " (set SPINEL_SENTENCEPIECE_SHIM to its path); tried:" + tried;
      return;
    }
    auto sym = [&](const char* name) {
      void* f = dlsym(h, name);
      if (!f && error.empty()) error = std::string(kShimName) + " lacks " + name;
      return f;
    };
    auto abi = reinterpret_cast<spnl_spm_abi_fn>(sym("spnl_spm_abi"));
    s.load = reinterpret_cast<spnl_spm_load_fn>(sym("spnl_spm_load"));
    s.free = reinterpret_cast<spnl_spm_free_fn>(sym("spnl_spm_free"));
    s.piece_size = reinterpret_cast<spnl_spm_piece_size_fn>(sym("spnl_spm_piece_size"));
    s.id_to_piece = reinterpret_cast<spnl_spm_id_to_piece_fn>(sym("spnl_spm_id_to_piece"));
    s.special_id = reinterpret_cast<spnl_spm_special_id_fn>(sym("spnl_spm_special_id"));
    s.piece_type = reinterpret_cast<spnl_spm_piece_type_fn>(sym("spnl_spm_piece_type"));
    s.encode = reinterpret_cast<spnl_spm_encode_fn>(sym("spnl_spm_encode"));
    if (error.empty() && abi() != SPNL_SPM_ABI)
      error = std::string(kShimName) + " has interface version " + std::to_string(abi()) +
              ", this spinel needs " + std::to_string(SPNL_SPM_ABI);
  });
  if (!error.empty()) fail(error);
  return s;
}

// Reads TrainerSpec.model_type (ModelProto field 2, TrainerSpec field 3)
// from the protobuf bytes; "" when absent or unreadable.
std::string read_model_type(const std::string& m) {
  auto varint = [](const std::string& b, size_t& i, uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && i < b.size(); shift += 7) {
      const auto c = static_cast<uint8_t>(b[i++]);
      v |= uint64_t(c & 0x7F) << shift;
      if (!(c & 0x80)) return true;
    }
    return false;
  };
  auto skip = [&](const std::string& b, size_t& i, uint64_t wire) {
    uint64_t v = 0;
    switch (wire) {
      case 0: return varint(b, i, v);
      case 1: i += 8; return i <= b.size();
      case 2: if (!varint(b, i, v) || v > b.size() - i) return false; i += v; return true;
      case 5: i += 4; return i <= b.size();
    }
    return false;
  };
  size_t i = 0;
  while (i < m.size()) {
    uint64_t key = 0, len = 0;
    if (!varint(m, i, key)) return "";
    if (key == ((2 << 3) | 2)) {
      if (!varint(m, i, len) || len > m.size() - i) return "";
      const std::string spec = m.substr(i, len);
      size_t j = 0;
      while (j < spec.size()) {
        uint64_t k2 = 0, v = 0;
        if (!varint(spec, j, k2)) return "";
        if (k2 == ((3 << 3) | 0)) {
          if (!varint(spec, j, v)) return "";
          switch (v) {
            case 1: return "unigram";
            case 2: return "bpe";
            case 3: return "word";
            case 4: return "char";
          }
          return "";
        }
        if (!skip(spec, j, k2 & 7)) return "";
      }
      return "unigram";  // the default
    }
    if (!skip(m, i, key & 7)) return "";
  }
  return "";
}

}  // namespace

struct SentencePieceTokenizer::Handle {
  void* sp = nullptr;
  ~Handle() {
    if (sp) shim().free(sp);
  }
};

std::vector<std::string> SentencePieceTokenizer::shim_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("SPINEL_SENTENCEPIECE_SHIM"); env && *env) c.push_back(env);
  const std::string here = dir_of_this_library();
  if (!here.empty()) c.push_back(here + "/" + kShimName);
#ifdef SPINEL_SPM_SHIM_RELATIVE
  // An installed program: bin/ -> the install's libdir, wherever it is.
  if (!here.empty()) c.push_back(here + "/" + SPINEL_SPM_SHIM_RELATIVE + "/" + kShimName);
#endif
#ifdef SPINEL_SPM_SHIM_DIRS
  // The build tree and the install prefix (set by CMake), ':'-separated.
  const std::string dirs = SPINEL_SPM_SHIM_DIRS;
  size_t pos = 0;
  while (pos <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', pos), dirs.size());
    if (end > pos) c.push_back(dirs.substr(pos, end - pos) + "/" + kShimName);
    pos = end + 1;
  }
#endif
  c.push_back(kShimName);  // the loader's own search path
  return c;
}

SentencePieceTokenizer::SentencePieceTokenizer(std::string model_bytes, const std::string& name)
    : model_(std::move(model_bytes)) {
  const Shim& s = shim();
  char err[512] = {0};
  void* sp = s.load(model_.data(), model_.size(), err, sizeof err);
  if (!sp) fail(name, ": not a SentencePiece model SentencePiece can load: ", err);
  h_ = std::make_shared<Handle>();
  h_->sp = sp;
  const int n = s.piece_size(sp);
  if (n <= 0) fail(name, ": SentencePiece model has no pieces");
  pieces_.resize(static_cast<size_t>(n));
  index_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::string& p = pieces_[static_cast<size_t>(i)];
    char buf[256];
    const size_t len = s.id_to_piece(sp, i, buf, sizeof buf);
    if (len <= sizeof buf) {
      p.assign(buf, len);
    } else {
      p.resize(len);
      s.id_to_piece(sp, i, p.data(), len);
    }
    index_.emplace(p, i);
  }
  model_type_ = read_model_type(model_);
  unk_id_ = s.special_id(sp, 0);
  pad_id_ = s.special_id(sp, 3);
  const int32_t cls = token_id("[CLS]"), sep = token_id("[SEP]");
  if (cls >= 0 && sep >= 0) {
    cls_id_ = cls, sep_id_ = sep, pair_type_ids_ = true;
  } else {
    cls_id_ = s.special_id(sp, 1);
    sep_id_ = s.special_id(sp, 2);
    if (cls_id_ < 0 || sep_id_ < 0) cls_id_ = sep_id_ = -1;
  }
}

SentencePieceTokenizer SentencePieceTokenizer::from_file(const std::string& path) {
  const std::vector<char> bytes = read_regular_file(path, "SentencePiece model", uint64_t{1} << 30);
  return SentencePieceTokenizer(std::string(bytes.begin(), bytes.end()), path);
}

std::string SentencePieceTokenizer::describe() const {
  return "SentencePiece" + (model_type_.empty() ? std::string() : " " + model_type_) + ", " +
         std::to_string(pieces_.size()) + " pieces";
}

int32_t SentencePieceTokenizer::token_id(const std::string& token) const {
  auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

const std::string& SentencePieceTokenizer::token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size())
    fail("SentencePiece tokenizer: token id ", id, " outside the vocabulary of ", pieces_.size());
  return pieces_[static_cast<size_t>(id)];
}

std::vector<int32_t> SentencePieceTokenizer::tokenize(std::string_view text) const {
  if (!h_) fail("SentencePiece tokenizer: not loaded");
  const Shim& s = shim();
  std::vector<int32_t> ids(text.size() + 16);
  char err[512] = {0};
  for (int attempt = 0; attempt < 2; ++attempt) {
    const long n = s.encode(h_->sp, text.data(), text.size(), ids.data(), ids.size(), err, sizeof err);
    if (n < 0) fail("SentencePiece: cannot encode the text: ", err);
    if (static_cast<size_t>(n) <= ids.size()) {
      ids.resize(static_cast<size_t>(n));
      return ids;
    }
    ids.resize(static_cast<size_t>(n));
  }
  fail("SentencePiece: the number of pieces changed between two encodings of one text");
}

Encoding SentencePieceTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                                        size_t max_length, bool /*stop_early*/) const {
  std::vector<int32_t> ta = tokenize(a), tb;
  if (b) tb = tokenize(*b);
  const bool specials_on = cls_id_ >= 0;
  const size_t specials = specials_on ? (b ? 3 : 2) : 0;
  Encoding enc;
  enc.untruncated_length = ta.size() + tb.size() + specials;
  if (max_length > 0 && enc.untruncated_length > max_length) {
    if (max_length < specials)
      fail("max_length ", max_length, " leaves no room for the ", specials, " special tokens");
    truncate_longest_first(ta, b ? &tb : nullptr, max_length - specials);
    enc.truncated = true;
  }
  if (specials_on) enc.ids.push_back(cls_id_);
  enc.ids.insert(enc.ids.end(), ta.begin(), ta.end());
  if (specials_on) enc.ids.push_back(sep_id_);
  enc.type_ids.assign(enc.ids.size(), 0);
  if (b) {
    enc.ids.insert(enc.ids.end(), tb.begin(), tb.end());
    if (specials_on) enc.ids.push_back(sep_id_);
    enc.type_ids.resize(enc.ids.size(), pair_type_ids_ || !specials_on ? 1 : 0);
  }
  return enc;
}

void SentencePieceTokenizer::serialize(ByteWriter& w) const {
  w.put<uint32_t>(kSerialMagic);
  w.put<uint32_t>(kSerialVersion);
  w.put_str(model_);
}

SentencePieceTokenizer SentencePieceTokenizer::deserialize(ByteReader& r) {
  const std::string& what = r.what();
  if (r.get<uint32_t>("tokenizer magic") != kSerialMagic)
    fail(what, ": SentencePiece tokenizer section has a bad magic number");
  const uint32_t version = r.get<uint32_t>("tokenizer version");
  if (version != kSerialVersion)
    fail(what, ": SentencePiece tokenizer section version ", version, " is not supported");
  std::string model = r.get_str("SentencePiece model");
  return SentencePieceTokenizer(std::move(model), what);
}

}  // namespace spinel
