// Loading a WordPiece tokenizer from vocab.txt or an HF tokenizer.json, and
// its binary form inside a .spnl file.
#include <cmath>
#include <fstream>

#include "runtime/error.h"
#include "runtime/util/file_io.h"
#include "runtime/tokenizer/wordpiece.h"
#include "runtime/util/json.h"

namespace spinel {
namespace {

constexpr uint32_t kSerialMagic = 0x4B545057;  // "WPTK"
constexpr uint32_t kSerialVersion = 1;

const json::Value& member(const json::Value& obj, const char* key, const std::string& where,
                          const std::string& path) {
  const json::Value* v = obj.find(key);
  if (!v) fail(path, ": ", where, " has no \"", key, "\"");
  return *v;
}

std::string get_string(const json::Value& obj, const char* key, const std::string& where,
                       const std::string& path) {
  const json::Value& v = member(obj, key, where, path);
  if (!v.is_string()) fail(path, ": ", where, ".", key, " must be a string");
  return v.str;
}

// An optional boolean; `fallback` when absent or null.
bool get_bool(const json::Value& obj, const char* key, bool fallback, const std::string& where,
              const std::string& path) {
  const json::Value* v = obj.find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_bool()) fail(path, ": ", where, ".", key, " must be true, false or null");
  return v->b;
}

int64_t as_int(const json::Value& v, const std::string& what, const std::string& path) {
  if (!v.is_number() || v.num != std::floor(v.num) || v.num < 0 || v.num > 2147483647.0) {
    fail(path, ": ", what, " must be a non-negative integer");
  }
  return static_cast<int64_t>(v.num);
}

// The text of a template's special token ({"SpecialToken": {"id": "[CLS]"}}).
const json::Value* special_piece(const json::Value& piece) {
  const json::Value* sp = piece.find("SpecialToken");
  return sp ? sp->find("id") : nullptr;
}

// Reads [CLS]/[SEP] from a post_processor, checking it is BERT's layout:
// [CLS] A [SEP] for one text and [CLS] A [SEP] B [SEP] (B with type 1) for two.
void read_post_processor(const json::Value& pp, WordPieceOptions& o, const std::string& path) {
  const std::string type = get_string(pp, "type", "post_processor", path);
  if (type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const json::Value& v = member(pp, key, "post_processor", path);
      if (!v.is_array() || v.arr.empty() || !v.arr[0].is_string()) {
        fail(path, ": post_processor.", key, " must be [token, id]");
      }
      (std::string(key) == "cls" ? o.cls_token : o.sep_token) = v.arr[0].str;
    }
    return;
  }
  if (type != "TemplateProcessing") {
    fail(path, ": unsupported post_processor type \"", type,
         "\" (need BertProcessing or TemplateProcessing)");
  }
  const json::Value& single = member(pp, "single", "post_processor", path);
  const json::Value& pair = member(pp, "pair", "post_processor", path);
  auto is_seq = [](const json::Value& p, const char* id, int type_id) {
    const json::Value* s = p.find("Sequence");
    if (!s) return false;
    const json::Value* i = s->find("id");
    const json::Value* t = s->find("type_id");
    return i && i->is_string() && i->str == id && t && t->is_number() && t->num == type_id;
  };
  auto is_special = [](const json::Value& p, const std::string& tok, int type_id) {
    const json::Value* id = special_piece(p);
    const json::Value* t =
        p.find("SpecialToken") ? p.find("SpecialToken")->find("type_id") : nullptr;
    return id && id->is_string() && id->str == tok && t && t->is_number() && t->num == type_id;
  };
  bool ok = single.is_array() && single.arr.size() == 3 && pair.is_array() && pair.arr.size() == 5;
  if (ok) {
    const json::Value* cls = special_piece(single.arr[0]);
    const json::Value* sep = special_piece(single.arr[2]);
    ok = cls && cls->is_string() && sep && sep->is_string();
    if (ok) {
      o.cls_token = cls->str;
      o.sep_token = sep->str;
      ok = is_special(single.arr[0], o.cls_token, 0) && is_seq(single.arr[1], "A", 0) &&
           is_special(single.arr[2], o.sep_token, 0) && is_special(pair.arr[0], o.cls_token, 0) &&
           is_seq(pair.arr[1], "A", 0) && is_special(pair.arr[2], o.sep_token, 0) &&
           is_seq(pair.arr[3], "B", 1) && is_special(pair.arr[4], o.sep_token, 1);
    }
  }
  if (!ok) {
    fail(path,
         ": unsupported post_processor template (need \"[CLS] $A [SEP]\" and \"[CLS] $A [SEP] $B:1 "
         "[SEP]:1\")");
  }
}

}  // namespace

WordPieceTokenizer WordPieceTokenizer::from_vocab_file(const std::string& path,
                                                       const WordPieceOptions& opts) {
  const std::vector<char> bytes = read_regular_file(path, "vocabulary file", uint64_t{1} << 30);
  std::vector<std::string> vocab;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t end = pos;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    std::string line(bytes.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab.push_back(std::move(line));
    pos = end + 1;
  }
  if (vocab.empty()) fail(path, ": vocabulary file is empty");
  try {
    return WordPieceTokenizer(std::move(vocab), opts);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

WordPieceTokenizer WordPieceTokenizer::from_tokenizer_json(const std::string& path) {
  const json::Value doc = json::parse_file(path);
  if (!doc.is_object()) fail(path, ": top level must be an object");
  const json::Value& model = member(doc, "model", "tokenizer.json", path);
  if (!model.is_object()) fail(path, ": \"model\" must be an object");
  const json::Value* type = model.find("type");
  if (!type || !type->is_string()) fail(path, ": model has no \"type\"");
  if (type->str != "WordPiece") {
    fail(path, ": model type is \"", type->str,
         "\"; only WordPiece (BERT-style) tokenizers are supported");
  }

  WordPieceOptions o;
  o.unk_token = get_string(model, "unk_token", "model", path);
  if (const json::Value* p = model.find("continuing_subword_prefix"); p && !p->is_null()) {
    if (!p->is_string()) fail(path, ": model.continuing_subword_prefix must be a string");
    o.continuing_prefix = p->str;
  }
  if (const json::Value* m = model.find("max_input_chars_per_word"); m && !m->is_null()) {
    o.max_input_chars_per_word =
        static_cast<int>(as_int(*m, "model.max_input_chars_per_word", path));
  }

  // Vocabulary: token -> id, ids dense 0..n-1.
  const json::Value& vj = member(model, "vocab", "model", path);
  if (!vj.is_object()) fail(path, ": model.vocab must be an object of token -> id");
  if (vj.obj.empty()) fail(path, ": model.vocab is empty");
  std::vector<std::string> vocab(vj.obj.size());
  std::vector<bool> filled(vj.obj.size(), false);
  for (const auto& [tok, idv] : vj.obj) {
    const int64_t id = as_int(idv, "id of vocab token '" + tok + "'", path);
    if (static_cast<size_t>(id) >= vocab.size()) {
      fail(path, ": vocab token '", tok, "' has id ", id, " but the vocabulary has ", vocab.size(),
           " entries (ids must be 0..n-1)");
    }
    if (filled[id])
      fail(path, ": vocab id ", id, " is used by both '", vocab[id], "' and '", tok, "'");
    vocab[id] = tok;
    filled[id] = true;
  }

  // Normaliser: BertNormalizer or none.
  const json::Value* norm = doc.find("normalizer");
  if (!norm || norm->is_null()) {
    o.clean_text = o.handle_chinese_chars = o.lowercase = o.strip_accents = false;
  } else {
    const std::string nt = norm->is_object() ? get_string(*norm, "type", "normalizer", path) : "";
    if (nt != "BertNormalizer") {
      fail(path, ": unsupported normalizer \"", nt, "\" (only BertNormalizer is supported)");
    }
    o.clean_text = get_bool(*norm, "clean_text", true, "normalizer", path);
    o.handle_chinese_chars = get_bool(*norm, "handle_chinese_chars", true, "normalizer", path);
    o.lowercase = get_bool(*norm, "lowercase", true, "normalizer", path);
    // null means "same as lowercase" in HF.
    o.strip_accents = get_bool(*norm, "strip_accents", o.lowercase, "normalizer", path);
  }

  const json::Value* pre = doc.find("pre_tokenizer");
  if (!pre || !pre->is_object() || !pre->find("type") || !pre->find("type")->is_string() ||
      pre->find("type")->str != "BertPreTokenizer") {
    const std::string pt =
        pre && pre->is_object() && pre->find("type") && pre->find("type")->is_string()
            ? pre->find("type")->str
            : std::string("none");
    fail(path, ": unsupported pre_tokenizer \"", pt, "\" (only BertPreTokenizer is supported)");
  }

  if (const json::Value* pp = doc.find("post_processor"); pp && !pp->is_null()) {
    if (!pp->is_object()) fail(path, ": post_processor must be an object");
    read_post_processor(*pp, o, path);
  }
  if (const json::Value* pad = doc.find("padding"); pad && pad->is_object()) {
    if (const json::Value* t = pad->find("pad_token"); t && t->is_string()) o.pad_token = t->str;
  }

  // Added tokens: matched before WordPiece. Ids past the model's vocabulary
  // extend it, and must continue it densely.
  std::vector<AddedToken> added;
  if (const json::Value* at = doc.find("added_tokens"); at && !at->is_null()) {
    if (!at->is_array()) fail(path, ": added_tokens must be an array");
    for (size_t k = 0; k < at->arr.size(); ++k) {
      const json::Value& t = at->arr[k];
      const std::string where = "added_tokens[" + std::to_string(k) + "]";
      if (!t.is_object()) fail(path, ": ", where, " must be an object");
      AddedToken a;
      a.content = get_string(t, "content", where, path);
      a.id = static_cast<int32_t>(as_int(member(t, "id", where, path), where + ".id", path));
      a.special = get_bool(t, "special", false, where, path);
      a.normalized = get_bool(t, "normalized", !a.special, where, path);
      a.lstrip = get_bool(t, "lstrip", false, where, path);
      a.rstrip = get_bool(t, "rstrip", false, where, path);
      a.single_word = get_bool(t, "single_word", false, where, path);
      if (static_cast<size_t>(a.id) == vocab.size()) {
        vocab.push_back(a.content);
      } else if (static_cast<size_t>(a.id) > vocab.size()) {
        fail(path, ": ", where, " '", a.content, "' has id ", a.id,
             " leaving a gap after the vocabulary of ", vocab.size());
      } else if (vocab[a.id] != a.content) {
        fail(path, ": ", where, " '", a.content, "' has id ", a.id,
             " which the vocabulary gives to '", vocab[a.id], "'");
      }
      added.push_back(std::move(a));
    }
  }
  try {
    return WordPieceTokenizer(std::move(vocab), std::move(o), std::move(added));
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

// ---- binary form --------------------------------------------------------------

void WordPieceTokenizer::serialize(ByteWriter& w) const {
  w.put<uint32_t>(kSerialMagic);
  w.put<uint32_t>(kSerialVersion);
  const uint8_t flags = (opts_.clean_text ? 1 : 0) | (opts_.handle_chinese_chars ? 2 : 0) |
                        (opts_.lowercase ? 4 : 0) | (opts_.strip_accents ? 8 : 0);
  w.put<uint8_t>(flags);
  w.put<int32_t>(opts_.max_input_chars_per_word);
  w.put_str(opts_.continuing_prefix);
  w.put_str(opts_.unk_token);
  w.put_str(opts_.cls_token);
  w.put_str(opts_.sep_token);
  w.put_str(opts_.pad_token);
  w.put<uint32_t>(static_cast<uint32_t>(vocab_.size()));
  for (const auto& t : vocab_) w.put_str(t);
  w.put<uint32_t>(static_cast<uint32_t>(added_.size()));
  for (const auto& a : added_) {
    w.put<int32_t>(a.id);
    w.put<uint8_t>((a.special ? 1 : 0) | (a.normalized ? 2 : 0) | (a.lstrip ? 4 : 0) |
                   (a.rstrip ? 8 : 0) | (a.single_word ? 16 : 0));
    w.put_str(a.content);
  }
}

WordPieceTokenizer WordPieceTokenizer::deserialize(ByteReader& r) {
  const std::string& what = r.what();
  if (r.get<uint32_t>("tokenizer magic") != kSerialMagic)
    fail(what, ": tokenizer section has a bad magic number");
  const uint32_t version = r.get<uint32_t>("tokenizer version");
  if (version != kSerialVersion)
    fail(what, ": tokenizer section version ", version, " is not supported");
  const uint8_t flags = r.get<uint8_t>("tokenizer flags");
  if (flags & ~0x0F)
    fail(what, ": tokenizer flags ", static_cast<int>(flags), " have unknown bits (known: 0-15)");
  WordPieceOptions o;
  o.clean_text = flags & 1;
  o.handle_chinese_chars = flags & 2;
  o.lowercase = flags & 4;
  o.strip_accents = flags & 8;
  o.max_input_chars_per_word = r.get<int32_t>("max_input_chars_per_word");
  o.continuing_prefix = r.get_str("continuing prefix");
  o.unk_token = r.get_str("unk token");
  o.cls_token = r.get_str("cls token");
  o.sep_token = r.get_str("sep token");
  o.pad_token = r.get_str("pad token");
  const uint32_t n = r.get<uint32_t>("vocab size");
  if (n == 0) fail(what, ": tokenizer vocabulary is empty");
  // Every entry takes at least its 4-byte length: reject impossible counts
  // before allocating.
  if (n > r.remaining() / 4) fail(what, ": tokenizer vocab size ", n, " exceeds the section size");
  std::vector<std::string> vocab;
  vocab.reserve(n);
  for (uint32_t i = 0; i < n; ++i) vocab.push_back(r.get_str("vocab token"));
  const uint32_t na = r.get<uint32_t>("added token count");
  if (na > r.remaining() / 9)
    fail(what, ": tokenizer added token count ", na, " exceeds the section size");
  std::vector<AddedToken> added(na);
  for (auto& a : added) {
    a.id = r.get<int32_t>("added token id");
    const uint8_t af = r.get<uint8_t>("added token flags");
    if (af & ~0x1F) fail(what, ": added token flags have unknown bits");
    a.special = af & 1;
    a.normalized = af & 2;
    a.lstrip = af & 4;
    a.rstrip = af & 8;
    a.single_word = af & 16;
    a.content = r.get_str("added token");
  }
  try {
    // The constructor checks the special tokens and added ids against the vocabulary.
    return WordPieceTokenizer(std::move(vocab), std::move(o), std::move(added));
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
}

}  // namespace spinel
