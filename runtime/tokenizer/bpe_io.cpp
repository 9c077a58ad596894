// Loading a BPE tokenizer from an HF tokenizer.json, and its binary form
// inside a .spnl file.
#include <cmath>

#include "runtime/error.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/util/json.h"

namespace spinel {
namespace {

constexpr uint32_t kSerialMagic = 0x54455042;  // "BPET"
constexpr uint32_t kSerialVersion = 1;

// The features named in errors point here.
constexpr const char* kSupported =
    "see `spinel convert --help` for the tokenizer.json features spinel supports";

struct Reader {
  const std::string& path;

  const json::Value& member(const json::Value& obj, const char* key, const std::string& where) const {
    const json::Value* v = obj.find(key);
    if (!v) fail(path, ": ", where, " has no \"", key, "\"");
    return *v;
  }
  std::string str(const json::Value& obj, const char* key, const std::string& where) const {
    const json::Value& v = member(obj, key, where);
    if (!v.is_string()) fail(path, ": ", where, ".", key, " must be a string");
    return v.str;
  }
  // An optional string; nullopt when absent or null.
  std::optional<std::string> opt_str(const json::Value& obj, const char* key,
                                     const std::string& where) const {
    const json::Value* v = obj.find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) fail(path, ": ", where, ".", key, " must be a string or null");
    return v->str;
  }
  bool boolean(const json::Value& obj, const char* key, bool fallback,
               const std::string& where) const {
    const json::Value* v = obj.find(key);
    if (!v || v->is_null()) return fallback;
    if (!v->is_bool()) fail(path, ": ", where, ".", key, " must be true, false or null");
    return v->b;
  }
  int32_t id(const json::Value& v, const std::string& what) const {
    if (!v.is_number() || v.num != std::floor(v.num) || v.num < 0 || v.num > 2147483647.0)
      fail(path, ": ", what, " must be a non-negative integer");
    return static_cast<int32_t>(v.num);
  }
  std::string type_of(const json::Value& v, const std::string& where) const {
    if (!v.is_object()) fail(path, ": ", where, " must be an object or null");
    return str(v, "type", where);
  }
};

void read_normalizer(const Reader& rd, const json::Value& n, const std::string& where,
                     std::vector<BpeNormalizer>& out) {
  if (n.is_null()) return;
  const std::string type = rd.type_of(n, where);
  if (type == "Sequence") {
    const json::Value& list = rd.member(n, "normalizers", where);
    if (!list.is_array()) fail(rd.path, ": ", where, ".normalizers must be an array");
    for (size_t k = 0; k < list.arr.size(); ++k)
      read_normalizer(rd, list.arr[k], where + ".normalizers[" + std::to_string(k) + "]", out);
  } else if (type == "Lowercase") {
    out.push_back(BpeNormalizer::Lowercase);
  } else if (type == "Strip") {
    const bool l = rd.boolean(n, "strip_left", true, where);
    const bool r = rd.boolean(n, "strip_right", true, where);
    if (l && r) out.push_back(BpeNormalizer::StripBoth);
    else if (l) out.push_back(BpeNormalizer::StripLeft);
    else if (r) out.push_back(BpeNormalizer::StripRight);
  } else {
    fail(rd.path, ": ", where, " \"", type,
         "\" is not supported for BPE tokenizers (supported: Lowercase, Strip, and a Sequence of "
         "them; not NFC/NFD/NFKC/NFKD, Replace, Prepend, BertNormalizer, ...); ",
         kSupported);
  }
}

void read_pre_tokenizer(const Reader& rd, const json::Value& p, const std::string& where,
                        std::vector<BpePreTokenizer>& out) {
  if (p.is_null()) return;
  const std::string type = rd.type_of(p, where);
  BpePreTokenizer pt;
  if (type == "Sequence") {
    const json::Value& list = rd.member(p, "pretokenizers", where);
    if (!list.is_array()) fail(rd.path, ": ", where, ".pretokenizers must be an array");
    for (size_t k = 0; k < list.arr.size(); ++k)
      read_pre_tokenizer(rd, list.arr[k], where + ".pretokenizers[" + std::to_string(k) + "]",
                         out);
    return;
  } else if (type == "Whitespace") {
    pt.kind = BpePreTokenizer::Whitespace;
  } else if (type == "WhitespaceSplit") {
    pt.kind = BpePreTokenizer::WhitespaceSplit;
  } else if (type == "ByteLevel") {
    pt.kind = BpePreTokenizer::ByteLevel;
    pt.add_prefix_space = rd.boolean(p, "add_prefix_space", true, where);
    pt.use_regex = rd.boolean(p, "use_regex", true, where);
  } else {
    fail(rd.path, ": ", where, " \"", type,
         "\" is not supported for BPE tokenizers (supported: Whitespace, WhitespaceSplit, "
         "ByteLevel, and a Sequence of them; not Metaspace, Split, Punctuation, Digits, "
         "BertPreTokenizer, ...); ",
         kSupported);
  }
  out.push_back(pt);
}

// [token, id] of RobertaProcessing / BertProcessing.
TemplatePiece special_pair(const Reader& rd, const json::Value& pp, const char* key,
                           const std::string& where) {
  const json::Value& v = rd.member(pp, key, where);
  if (!v.is_array() || v.arr.size() != 2 || !v.arr[0].is_string())
    fail(rd.path, ": ", where, ".", key, " must be [token, id]");
  TemplatePiece t;
  t.kind = TemplatePiece::Special;
  t.name = v.arr[0].str;
  t.ids = {rd.id(v.arr[1], where + "." + key + " id")};
  return t;
}

TemplatePiece seq(TemplatePiece::Kind k, int32_t type_id) {
  TemplatePiece t;
  t.kind = k;
  t.type_id = type_id;
  return t;
}

void read_template(const Reader& rd, const json::Value& pp, const char* key,
                   const std::string& where, std::vector<TemplatePiece>& out) {
  const json::Value& list = rd.member(pp, key, where);
  if (!list.is_array()) fail(rd.path, ": ", where, ".", key, " must be an array");
  const json::Value& specials = rd.member(pp, "special_tokens", where);
  if (!specials.is_object()) fail(rd.path, ": ", where, ".special_tokens must be an object");
  for (size_t k = 0; k < list.arr.size(); ++k) {
    const std::string w = where + "." + key + "[" + std::to_string(k) + "]";
    const json::Value& piece = list.arr[k];
    TemplatePiece t;
    if (const json::Value* s = piece.find("Sequence")) {
      const std::string id = rd.str(*s, "id", w);
      if (id != "A" && id != "B") fail(rd.path, ": ", w, " names sequence '", id, "' (A or B)");
      t.kind = id == "A" ? TemplatePiece::SequenceA : TemplatePiece::SequenceB;
      t.type_id = rd.id(rd.member(*s, "type_id", w), w + ".type_id");
    } else if (const json::Value* sp = piece.find("SpecialToken")) {
      t.kind = TemplatePiece::Special;
      t.name = rd.str(*sp, "id", w);
      t.type_id = rd.id(rd.member(*sp, "type_id", w), w + ".type_id");
      const json::Value* def = specials.find(t.name);
      if (!def) fail(rd.path, ": ", w, " uses '", t.name, "', which special_tokens does not define");
      const json::Value& ids = rd.member(*def, "ids", where + ".special_tokens." + t.name);
      if (!ids.is_array()) fail(rd.path, ": ", where, ".special_tokens.", t.name, ".ids must be an array");
      for (const auto& v : ids.arr) t.ids.push_back(rd.id(v, where + ".special_tokens." + t.name));
    } else {
      fail(rd.path, ": ", w, " is neither a Sequence nor a SpecialToken");
    }
    out.push_back(std::move(t));
  }
}

// Returns true when the post-processor set the templates.
bool read_post_processor(const Reader& rd, const json::Value& pp, const std::string& where,
                         BpeConfig& c) {
  if (pp.is_null()) return false;
  const std::string type = rd.type_of(pp, where);
  if (type == "Sequence") {
    const json::Value& list = rd.member(pp, "processors", where);
    if (!list.is_array()) fail(rd.path, ": ", where, ".processors must be an array");
    bool set = false;
    for (size_t k = 0; k < list.arr.size(); ++k) {
      const bool s = read_post_processor(rd, list.arr[k],
                                         where + ".processors[" + std::to_string(k) + "]", c);
      if (s && set) fail(rd.path, ": ", where, " has two processors that add special tokens");
      set = set || s;
    }
    return set;
  }
  if (type == "ByteLevel") return false;  // offsets only
  if (type == "TemplateProcessing") {
    read_template(rd, pp, "single", where, c.single);
    read_template(rd, pp, "pair", where, c.pair);
    return true;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const TemplatePiece cls = special_pair(rd, pp, "cls", where);
    const TemplatePiece sep = special_pair(rd, pp, "sep", where);
    const bool roberta = type == "RobertaProcessing";
    c.single = {cls, seq(TemplatePiece::SequenceA, 0), sep};
    if (roberta) {
      // <s> A </s></s> B </s>, every type id 0 (tokenizers 0.19).
      c.pair = {cls, seq(TemplatePiece::SequenceA, 0), sep, sep, seq(TemplatePiece::SequenceB, 0),
                sep};
    } else {
      TemplatePiece sep1 = sep;
      sep1.type_id = 1;
      c.pair = {cls, seq(TemplatePiece::SequenceA, 0), sep, seq(TemplatePiece::SequenceB, 1), sep1};
    }
    return true;
  }
  fail(rd.path, ": ", where, " \"", type,
       "\" is not supported (supported: TemplateProcessing, RobertaProcessing, BertProcessing, "
       "ByteLevel, and a Sequence of them); ",
       kSupported);
}

}  // namespace

BpeTokenizer BpeTokenizer::from_tokenizer_json(const std::string& path) {
  const json::Value doc = json::parse_file(path);
  const Reader rd{path};
  if (!doc.is_object()) fail(path, ": top level must be an object");
  const json::Value& model = rd.member(doc, "model", "tokenizer.json");
  if (!model.is_object()) fail(path, ": \"model\" must be an object");
  const std::string type = rd.str(model, "type", "model");
  if (type != "BPE") fail(path, ": model type is \"", type, "\", not BPE");

  static const char* const kModelKeys[] = {"type",          "dropout",
                                           "unk_token",     "continuing_subword_prefix",
                                           "end_of_word_suffix", "fuse_unk",
                                           "byte_fallback", "ignore_merges",
                                           "vocab",         "merges"};
  for (const auto& [key, v] : model.obj) {
    bool known = false;
    for (const char* k : kModelKeys) known = known || key == k;
    if (!known)
      fail(path, ": model option \"", key, "\" is not supported by spinel's BPE; ", kSupported);
  }
  BpeConfig c;
  if (const json::Value* d = model.find("dropout"); d && !d->is_null()) {
    if (!d->is_number()) fail(path, ": model.dropout must be a number or null");
    if (d->num != 0)
      fail(path, ": model.dropout is ", d->num,
           ": BPE dropout (random merges) is not supported, ids would not be reproducible");
  }
  c.unk_token = rd.opt_str(model, "unk_token", "model");
  c.continuing_subword_prefix = rd.opt_str(model, "continuing_subword_prefix", "model").value_or("");
  c.end_of_word_suffix = rd.opt_str(model, "end_of_word_suffix", "model").value_or("");
  c.fuse_unk = rd.boolean(model, "fuse_unk", false, "model");
  c.byte_fallback = rd.boolean(model, "byte_fallback", false, "model");
  c.ignore_merges = rd.boolean(model, "ignore_merges", false, "model");

  const json::Value& vj = rd.member(model, "vocab", "model");
  if (!vj.is_object()) fail(path, ": model.vocab must be an object of token -> id");
  if (vj.obj.empty()) fail(path, ": model.vocab is empty");
  c.vocab.reserve(vj.obj.size());
  for (const auto& [tok, idv] : vj.obj)
    c.vocab.emplace_back(tok, rd.id(idv, "id of vocab token '" + tok + "'"));

  const json::Value& mj = rd.member(model, "merges", "model");
  if (!mj.is_array()) fail(path, ": model.merges must be an array");
  c.merges.reserve(mj.arr.size());
  for (size_t k = 0; k < mj.arr.size(); ++k) {
    const json::Value& m = mj.arr[k];
    if (m.is_string()) {
      // "a b": exactly one space, as HF requires.
      const size_t sp = m.str.find(' ');
      if (sp == std::string::npos || m.str.find(' ', sp + 1) != std::string::npos)
        fail(path, ": model.merges[", k, "] \"", m.str, "\" must be two tokens separated by one space");
      c.merges.emplace_back(m.str.substr(0, sp), m.str.substr(sp + 1));
    } else if (m.is_array() && m.arr.size() == 2 && m.arr[0].is_string() && m.arr[1].is_string()) {
      c.merges.emplace_back(m.arr[0].str, m.arr[1].str);
    } else {
      fail(path, ": model.merges[", k, "] must be \"a b\" or [\"a\", \"b\"]");
    }
  }

  if (const json::Value* n = doc.find("normalizer")) read_normalizer(rd, *n, "normalizer", c.normalizers);
  if (const json::Value* p = doc.find("pre_tokenizer"))
    read_pre_tokenizer(rd, *p, "pre_tokenizer", c.pre_tokenizers);
  if (const json::Value* pp = doc.find("post_processor"))
    read_post_processor(rd, *pp, "post_processor", c);
  if (const json::Value* pad = doc.find("padding"); pad && pad->is_object()) {
    if (const json::Value* t = pad->find("pad_token"); t && t->is_string()) c.pad_token = t->str;
  }
  if (const json::Value* at = doc.find("added_tokens"); at && !at->is_null()) {
    if (!at->is_array()) fail(path, ": added_tokens must be an array");
    for (size_t k = 0; k < at->arr.size(); ++k) {
      const json::Value& t = at->arr[k];
      const std::string where = "added_tokens[" + std::to_string(k) + "]";
      if (!t.is_object()) fail(path, ": ", where, " must be an object");
      AddedToken a;
      a.content = rd.str(t, "content", where);
      a.id = rd.id(rd.member(t, "id", where), where + ".id");
      a.special = rd.boolean(t, "special", false, where);
      a.normalized = rd.boolean(t, "normalized", !a.special, where);
      a.lstrip = rd.boolean(t, "lstrip", false, where);
      a.rstrip = rd.boolean(t, "rstrip", false, where);
      a.single_word = rd.boolean(t, "single_word", false, where);
      c.added.push_back(std::move(a));
    }
  }
  try {
    return BpeTokenizer(std::move(c));
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

// ---- binary form --------------------------------------------------------------

namespace {

void put_template(ByteWriter& w, const std::vector<TemplatePiece>& tpl) {
  w.put<uint32_t>(static_cast<uint32_t>(tpl.size()));
  for (const auto& p : tpl) {
    w.put<uint8_t>(p.kind);
    w.put<int32_t>(p.type_id);
    w.put_str(p.name);
    w.put<uint32_t>(static_cast<uint32_t>(p.ids.size()));
    for (const int32_t id : p.ids) w.put<int32_t>(id);
  }
}

std::vector<TemplatePiece> get_template(ByteReader& r) {
  const uint32_t n = r.get<uint32_t>("template length");
  if (n > r.remaining() / 13) fail(r.what(), ": template length ", n, " exceeds the section size");
  std::vector<TemplatePiece> tpl(n);
  for (auto& p : tpl) {
    const uint8_t kind = r.get<uint8_t>("template piece kind");
    if (kind > TemplatePiece::SequenceB)
      fail(r.what(), ": template piece kind ", int(kind), " is unknown");
    p.kind = static_cast<TemplatePiece::Kind>(kind);
    p.type_id = r.get<int32_t>("template type id");
    p.name = r.get_str("template token");
    const uint32_t k = r.get<uint32_t>("template id count");
    if (k > r.remaining() / 4) fail(r.what(), ": template id count ", k, " exceeds the section size");
    for (uint32_t i = 0; i < k; ++i) p.ids.push_back(r.get<int32_t>("template id"));
  }
  return tpl;
}

}  // namespace

void BpeTokenizer::serialize(ByteWriter& w) const {
  w.put<uint32_t>(kSerialMagic);
  w.put<uint32_t>(kSerialVersion);
  w.put<uint8_t>((cfg_.fuse_unk ? 1 : 0) | (cfg_.byte_fallback ? 2 : 0) |
                 (cfg_.ignore_merges ? 4 : 0) | (cfg_.unk_token ? 8 : 0));
  w.put_str(cfg_.unk_token.value_or(""));
  w.put_str(cfg_.continuing_subword_prefix);
  w.put_str(cfg_.end_of_word_suffix);
  w.put_str(cfg_.pad_token);
  w.put<uint32_t>(static_cast<uint32_t>(cfg_.normalizers.size()));
  for (const auto n : cfg_.normalizers) w.put<uint8_t>(static_cast<uint8_t>(n));
  w.put<uint32_t>(static_cast<uint32_t>(cfg_.pre_tokenizers.size()));
  for (const auto& p : cfg_.pre_tokenizers) {
    w.put<uint8_t>(p.kind);
    w.put<uint8_t>((p.add_prefix_space ? 1 : 0) | (p.use_regex ? 2 : 0));
  }
  w.put<uint32_t>(static_cast<uint32_t>(cfg_.vocab.size()));
  for (const auto& [tok, id] : cfg_.vocab) {
    w.put_str(tok);
    w.put<int32_t>(id);
  }
  w.put<uint32_t>(static_cast<uint32_t>(cfg_.merges.size()));
  for (const auto& [a, b] : cfg_.merges) {
    w.put_str(a);
    w.put_str(b);
  }
  w.put<uint32_t>(static_cast<uint32_t>(cfg_.added.size()));
  for (const auto& a : cfg_.added) {
    w.put<int32_t>(a.id);
    w.put<uint8_t>((a.special ? 1 : 0) | (a.normalized ? 2 : 0) | (a.lstrip ? 4 : 0) |
                   (a.rstrip ? 8 : 0) | (a.single_word ? 16 : 0));
    w.put_str(a.content);
  }
  put_template(w, cfg_.single);
  put_template(w, cfg_.pair);
}

BpeTokenizer BpeTokenizer::deserialize(ByteReader& r) {
  const std::string& what = r.what();
  if (r.get<uint32_t>("tokenizer magic") != kSerialMagic)
    fail(what, ": BPE tokenizer section has a bad magic number");
  const uint32_t version = r.get<uint32_t>("tokenizer version");
  if (version != kSerialVersion)
    fail(what, ": BPE tokenizer section version ", version, " is not supported");
  const uint8_t flags = r.get<uint8_t>("BPE flags");
  if (flags & ~0x0F) fail(what, ": BPE flags ", int(flags), " have unknown bits (known: 0-15)");
  BpeConfig c;
  c.fuse_unk = flags & 1;
  c.byte_fallback = flags & 2;
  c.ignore_merges = flags & 4;
  std::string unk = r.get_str("unk token");
  if (flags & 8) c.unk_token = std::move(unk);
  c.continuing_subword_prefix = r.get_str("continuing subword prefix");
  c.end_of_word_suffix = r.get_str("end of word suffix");
  c.pad_token = r.get_str("pad token");
  const uint32_t nn = r.get<uint32_t>("normalizer count");
  if (nn > r.remaining()) fail(what, ": normalizer count ", nn, " exceeds the section size");
  for (uint32_t i = 0; i < nn; ++i) {
    const uint8_t k = r.get<uint8_t>("normalizer");
    if (k < 1 || k > 4) fail(what, ": normalizer kind ", int(k), " is unknown");
    c.normalizers.push_back(static_cast<BpeNormalizer>(k));
  }
  const uint32_t np = r.get<uint32_t>("pre-tokenizer count");
  if (np > r.remaining() / 2) fail(what, ": pre-tokenizer count ", np, " exceeds the section size");
  for (uint32_t i = 0; i < np; ++i) {
    BpePreTokenizer p;
    const uint8_t k = r.get<uint8_t>("pre-tokenizer");
    if (k < 1 || k > 3) fail(what, ": pre-tokenizer kind ", int(k), " is unknown");
    p.kind = static_cast<BpePreTokenizer::Kind>(k);
    const uint8_t f = r.get<uint8_t>("pre-tokenizer flags");
    if (f & ~3) fail(what, ": pre-tokenizer flags have unknown bits");
    p.add_prefix_space = f & 1;
    p.use_regex = f & 2;
    c.pre_tokenizers.push_back(p);
  }
  const uint32_t nv = r.get<uint32_t>("vocab size");
  if (nv > r.remaining() / 8) fail(what, ": BPE vocab size ", nv, " exceeds the section size");
  c.vocab.reserve(nv);
  for (uint32_t i = 0; i < nv; ++i) {
    std::string tok = r.get_str("vocab token");
    c.vocab.emplace_back(std::move(tok), r.get<int32_t>("vocab id"));
  }
  const uint32_t nm = r.get<uint32_t>("merge count");
  if (nm > r.remaining() / 8) fail(what, ": BPE merge count ", nm, " exceeds the section size");
  c.merges.reserve(nm);
  for (uint32_t i = 0; i < nm; ++i) {
    std::string a = r.get_str("merge left");
    c.merges.emplace_back(std::move(a), r.get_str("merge right"));
  }
  const uint32_t na = r.get<uint32_t>("added token count");
  if (na > r.remaining() / 9) fail(what, ": added token count ", na, " exceeds the section size");
  c.added.resize(na);
  for (auto& a : c.added) {
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
  c.single = get_template(r);
  c.pair = get_template(r);
  try {
    return BpeTokenizer(std::move(c));
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
}

}  // namespace spinel
