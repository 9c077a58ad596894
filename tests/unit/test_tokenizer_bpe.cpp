// BPE tokenizer on small hand-made vocabularies: merges by rank, unknowns,
// prefixes, byte-level mapping, templates and truncation, the tokenizer.json
// subset and its errors, the binary round trip. Expected ids are worked out
// by hand from HF's rules; the conformance test compares with HF itself.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>
#include <string>
#include <vector>

#include "runtime/bytes.h"
#include "runtime/error.h"
#include "runtime/spnl.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/sentencepiece.h"

using spinel::BpeConfig;
using spinel::BpePreTokenizer;
using spinel::BpeTokenizer;
using spinel::TemplatePiece;
using Ids = std::vector<int32_t>;

namespace {

// [UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3 [MASK]=4 A=5 C=6 G=7 T=8 AC=9 GT=10 ACGT=11 CG=12
BpeConfig dna_config() {
  BpeConfig c;
  const char* toks[] = {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "A", "C",
                        "G",     "T",     "AC",    "GT",    "ACGT",   "CG"};
  for (int32_t i = 0; i < 13; ++i) c.vocab.emplace_back(toks[i], i);
  c.merges = {{"A", "C"}, {"G", "T"}, {"AC", "GT"}, {"C", "G"}};
  c.unk_token = "[UNK]";
  c.pre_tokenizers = {BpePreTokenizer{BpePreTokenizer::Whitespace, false, true}};
  for (int32_t i = 0; i < 5; ++i) c.added.push_back({toks[i], i, true, false, false, false, false});
  TemplatePiece cls{TemplatePiece::Special, "[CLS]", {1}, 0};
  TemplatePiece sep{TemplatePiece::Special, "[SEP]", {2}, 0};
  TemplatePiece sep1{TemplatePiece::Special, "[SEP]", {2}, 1};
  c.single = {cls, {TemplatePiece::SequenceA, "", {}, 0}, sep};
  c.pair = {cls, {TemplatePiece::SequenceA, "", {}, 0}, sep, {TemplatePiece::SequenceB, "", {}, 1}, sep1};
  return c;
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text, const char* name = "tokenizer.json") {
    path = (std::filesystem::temp_directory_path() /
            ("spinel_bpe_test_" + std::to_string(::getpid()) + "_" + name)).string();
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const spinel::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* kDnaJson = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
    "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                       "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}}},
  "decoder": null,
  "model": {"type": "BPE", "dropout": null, "unk_token": "[UNK]", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "A": 3, "C": 4, "G": 5, "T": 6, "AC": 7, "GT": 8, "ACGT": 9},
            "merges": ["A C", ["G", "T"], "AC GT"]}
})";

}  // namespace

TEST_CASE("BPE applies merges by rank, lowest first, leftmost among equals") {
  const BpeTokenizer t(dna_config());
  CHECK(t.tokenize("ACGT") == Ids{11});     // A C -> AC, G T -> GT, AC GT -> ACGT
  CHECK(t.tokenize("CGT") == Ids{6, 10});   // G T (rank 1) before C G (rank 3)
  CHECK(t.tokenize("CG") == Ids{12});
  CHECK(t.tokenize("ACGTACGT") == Ids{11, 11});
  CHECK(t.tokenize("AAC") == Ids{5, 9});    // (A,A) has no merge; (A,C) at 1
  CHECK(t.tokenize("") == Ids{});
}

TEST_CASE("BPE unknown characters: one [UNK] each, fused with fuse_unk, dropped without unk_token") {
  BpeConfig c = dna_config();
  CHECK(BpeTokenizer(c).tokenize("ACNNGT") == Ids{9, 0, 0, 10});
  c.fuse_unk = true;
  CHECK(BpeTokenizer(c).tokenize("ACNNGT") == Ids{9, 0, 10});
  c.unk_token.reset();  // dropped: AC and GT become neighbours and merge
  CHECK(BpeTokenizer(c).tokenize("ACNNGT") == Ids{11});
  // Lower case is not A/C/G/T without a Lowercase normalizer ...
  c = dna_config();
  CHECK(BpeTokenizer(c).tokenize("acgt") == Ids{0, 0, 0, 0});
  // ... and is with one.
  c.normalizers = {spinel::BpeNormalizer::Lowercase};
  for (auto& [tok, id] : c.vocab)
    if (tok.size() <= 4 && tok[0] != '[') for (auto& ch : tok) ch = static_cast<char>(std::tolower(ch));
  for (auto& [a, b] : c.merges) {
    for (auto& ch : a) ch = static_cast<char>(std::tolower(ch));
    for (auto& ch : b) ch = static_cast<char>(std::tolower(ch));
  }
  CHECK(BpeTokenizer(c).tokenize("ACgt") == Ids{11});
}

TEST_CASE("BPE: Whitespace pre-tokenizer splits words and punctuation; added tokens are kept whole") {
  const BpeTokenizer t(dna_config());
  CHECK(t.tokenize("AC GT") == Ids{9, 10});
  CHECK(t.tokenize("AC,GT") == Ids{9, 0, 10});       // "," is a word of its own, unknown
  CHECK(t.tokenize("AC[MASK]GT") == Ids{9, 4, 10});
  CHECK(t.tokenize("[CLS]") == Ids{1});
}

TEST_CASE("BPE encode: template, pair type ids, truncation keeps the specials") {
  const BpeTokenizer t(dna_config());
  CHECK(t.cls_id() == 1);
  CHECK(t.sep_id() == 2);
  CHECK(t.pad_id() == 3);
  CHECK(t.unk_id() == 0);
  auto e = t.encode("ACGT CG", std::nullopt, 0);
  CHECK(e.ids == Ids{1, 11, 12, 2});
  CHECK(e.type_ids == Ids{0, 0, 0, 0});
  CHECK(!e.truncated);
  e = t.encode("ACGT", std::string_view("CG"), 0);
  CHECK(e.ids == Ids{1, 11, 2, 12, 2});
  CHECK(e.type_ids == Ids{0, 0, 0, 1, 1});
  e = t.encode("ACGT CG ACGT", std::nullopt, 3);
  CHECK(e.ids == Ids{1, 11, 2});
  CHECK(e.truncated);
  CHECK(e.untruncated_length == 5);
  CHECK_THROWS_AS(t.encode("ACGT", std::nullopt, 1), spinel::Error);
  // stop_early gives the same ids (a cut after whitespace is a boundary).
  std::string long_text;
  for (int i = 0; i < 20000; ++i) long_text += "ACGT CG ";
  const auto full = t.encode(long_text, std::nullopt, 100);
  const auto early = t.encode(long_text, std::nullopt, 100, true);
  CHECK(full.ids == early.ids);
  CHECK(early.truncated);
  CHECK(!early.length_is_exact);
}

TEST_CASE("BPE continuing_subword_prefix and end_of_word_suffix") {
  BpeConfig c;
  c.vocab = {{"a", 0}, {"##b", 1}, {"ab", 2}, {"##c</w>", 3}, {"abc</w>", 4}, {"[UNK]", 5}};
  c.merges = {{"a", "##b"}, {"ab", "##c</w>"}};
  c.continuing_subword_prefix = "##";
  c.end_of_word_suffix = "</w>";
  c.unk_token = "[UNK]";
  c.pre_tokenizers = {BpePreTokenizer{BpePreTokenizer::WhitespaceSplit, false, true}};
  const BpeTokenizer t(c);
  CHECK(t.tokenize("abc") == Ids{4});
  CHECK(t.tokenize("ab") == Ids{0, 5});  // "##b</w>" is not in the vocabulary
}

TEST_CASE("BPE byte-level: bytes as GPT-2 characters, prefix space, the regex split") {
  BpeConfig c;
  // U+0120 'Ġ' is the space byte; U+010A 'Ċ' is '\n'.
  c.vocab = {{"\xC4\xA0", 0}, {"a", 1}, {"b", 2}, {"\xC4\xA0" "a", 3}, {"'", 4}, {"s", 5},
             {"'s", 6}, {"\xC4\x8A", 7}, {"\xC3\xA9", 8}, {"\xC3", 9}, {"\xA9", 10}};
  // 'é' (C3 A9) is the two byte characters Ã (U+00C3) and © (U+00A9).
  c.vocab[8].first = "\xC3\x83\xC2\xA9";
  c.vocab[9].first = "\xC3\x83";
  c.vocab[10].first = "\xC2\xA9";
  c.merges = {{"\xC4\xA0", "a"}, {"'", "s"}, {"\xC3\x83", "\xC2\xA9"}};
  c.pre_tokenizers = {BpePreTokenizer{BpePreTokenizer::ByteLevel, true, true}};
  const BpeTokenizer t(c);
  CHECK(t.tokenize("a") == Ids{3});             // " a"
  CHECK(t.tokenize("a a") == Ids{3, 3});
  CHECK(t.tokenize("a's") == Ids{3, 6});        // 's is its own piece
  CHECK(t.tokenize("a  a") == Ids{3, 0, 3});     // "  a" -> " ", " a"
  CHECK(t.tokenize("\xC3\xA9") == Ids{0, 8});    // " é"
  CHECK(t.tokenize("") == Ids{});
  c.pre_tokenizers[0].add_prefix_space = false;
  CHECK(BpeTokenizer(c).tokenize("a a") == Ids{1, 3});
}

TEST_CASE("BPE tokenizer.json: the DNABERT-2 layout loads; both merge forms") {
  const TempFile f(kDnaJson);
  const BpeTokenizer t = BpeTokenizer::from_tokenizer_json(f.path);
  CHECK(t.vocab_size() == 10);
  CHECK(t.encode("ACGT AC", std::nullopt, 0).ids == Ids{1, 9, 7, 2});
  CHECK(t.token(9) == "ACGT");
  CHECK(t.token_id("GT") == 8);
  CHECK(t.describe() == "BPE, 10 tokens, 3 merges, Whitespace pre-tokenizer");
  // load_tokenizer_file picks BPE by the model type.
  const spinel::AnyTokenizer any = spinel::load_tokenizer_file(f.path);
  CHECK(std::string(any.kind()) == "bpe");
  CHECK(any.as<BpeTokenizer>() != nullptr);
}

TEST_CASE("BPE tokenizer.json: unsupported features are errors naming the file and the feature") {
  auto err = [](const std::string& from, const std::string& to) {
    std::string j = kDnaJson;
    const size_t at = j.find(from);
    REQUIRE(at != std::string::npos);
    j.replace(at, from.size(), to);
    const TempFile f(j);
    const std::string e = error_of([&] { spinel::load_tokenizer_file(f.path); });
    if (!e.empty()) CHECK(contains(e, f.path));
    return e;
  };
  CHECK(contains(err(R"("normalizer": null)", R"("normalizer": {"type": "NFKC"})"), "normalizer \"NFKC\""));
  CHECK(contains(err(R"("pre_tokenizer": {"type": "Whitespace"})", R"("pre_tokenizer": {"type": "Metaspace"})"),
                 "pre_tokenizer \"Metaspace\""));
  CHECK(contains(err(R"("dropout": null)", R"("dropout": 0.1)"), "dropout"));
  CHECK(contains(err(R"("type": "BPE")", R"("type": "WordLevel")"), "model type is \"WordLevel\""));
  CHECK(contains(err(R"("type": "BPE")", R"("type": "Unigram")"), "model type is \"Unigram\""));
  CHECK(contains(err(R"("AC GT"])", R"("AC GT", "A X"])"), "'X', which is not in the vocabulary"));
  CHECK(contains(err(R"("AC GT"])", R"("AC GT", "A C G"])"), "two tokens separated by one space"));
  CHECK(contains(err(R"("fuse_unk": false)", R"("fuse_unk": false, "new_option": 1)"),
                 "model option \"new_option\""));
  CHECK(contains(err(R"({"type": "TemplateProcessing")", R"({"type": "PostNew")"), "\"PostNew\""));
  // A Sequence normalizer of supported parts is fine.
  CHECK(err(R"("normalizer": null)",
            R"("normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]})")
            .empty());
}

TEST_CASE("BPE serialize/deserialize keeps every option and the ids") {
  BpeConfig c = dna_config();
  c.fuse_unk = true;
  c.normalizers = {spinel::BpeNormalizer::StripBoth};
  c.pad_token = "[PAD]";
  const BpeTokenizer t(c);
  spinel::ByteWriter w;
  t.serialize(w);
  spinel::ByteReader r(w.bytes().data(), w.bytes().size(), "tokenizer");
  const BpeTokenizer back = BpeTokenizer::deserialize(r);
  CHECK(r.remaining() == 0);
  for (const char* s : {"ACGT", "  ACNNGT CG ", "AC[MASK]GT", ""})
    CHECK(back.encode(s, std::string_view("CG"), 0).ids == t.encode(s, std::string_view("CG"), 0).ids);
  CHECK(back.config().fuse_unk);
  // A truncated section is an error, not a crash.
  for (size_t cut : {size_t{0}, size_t{5}, w.bytes().size() / 2, w.bytes().size() - 1}) {
    spinel::ByteReader rc(w.bytes().data(), cut, "tokenizer");
    CHECK_THROWS_AS(BpeTokenizer::deserialize(rc), spinel::Error);
  }
}

TEST_CASE("BPE config errors: merge outside the vocabulary, ids with gaps, unknown unk_token") {
  BpeConfig c = dna_config();
  c.merges.push_back({"A", "N"});
  CHECK(contains(error_of([&] { BpeTokenizer{c}; }), "'N', which is not in the vocabulary"));
  c = dna_config();
  c.merges.push_back({"T", "T"});
  CHECK(contains(error_of([&] { BpeTokenizer{c}; }), "makes 'TT'"));
  c = dna_config();
  c.vocab.emplace_back("X", 20);
  CHECK(contains(error_of([&] { BpeTokenizer{c}; }), "no token has id 13"));
  c = dna_config();
  c.unk_token = "<unk>";
  CHECK(contains(error_of([&] { BpeTokenizer{c}; }), "unk_token '<unk>'"));
}

TEST_CASE("AnyTokenizer holds a BPE tokenizer by value") {
  // The tiny model's writer takes any tokenizer kind; the reader gives it back.
  spinel::ByteWriter w;
  const spinel::AnyTokenizer any = BpeTokenizer(dna_config());
  CHECK(std::string(any.kind()) == "bpe");
  CHECK(any.vocab_size() == 13);
  CHECK(any.encode("ACGT", std::nullopt, 0).ids == Ids{1, 11, 2});
}

TEST_CASE("SentencePiece: a file that is not a model is a clear error") {
  const TempFile f(std::string("\x0a\x05hello\xff\xff not a model", 22), "bad.model");
  const std::string e = error_of([&] { spinel::load_tokenizer_file(f.path); });
  CHECK(contains(e, f.path));
  CHECK(contains(e, "SentencePiece"));
}
