// WordPiece tokenizer on a small hand-made vocabulary. The expected ids are
// worked out by hand from BERT's rules (lowercase, strip accents, split
// punctuation, greedy longest match with "##"), not taken from the code.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/bytes.h"
#include "runtime/error.h"
#include "runtime/tokenizer/wordpiece.h"

using spinel::Encoding;
using spinel::WordPieceOptions;
using spinel::WordPieceTokenizer;
using Ids = std::vector<int32_t>;

namespace {

const std::vector<std::string> kVocab = {
    "[PAD]",           // 0
    "[UNK]",           // 1
    "[CLS]",           // 2
    "[SEP]",           // 3
    "[MASK]",          // 4
    "hello",           // 5
    "world",           // 6
    ",",               // 7
    "!",               // 8
    "un",              // 9
    "##aff",           // 10
    "##able",          // 11
    "want",            // 12
    "##ed",            // 13
    "runn",            // 14
    "##ing",           // 15
    "cafe",            // 16
    "\xE5\x8C\x97",    // 17 北
    "\xE4\xBA\xAC",    // 18 京
    "a",               // 19
    "##b",             // 20
    ".",               // 21
    "i",               // 22
    "##s",             // 23
    "Hello",           // 24
    "caf",             // 25
    "##\xC3\xA9",      // 26 ##é
    "$",               // 27
    "5",               // 28
    "\xE1\x84\x92",    // 29 ᄒ (Hangul choseong hieuh)
    "##\xE1\x85\xA1",  // 30 ##ᅡ (jungseong a)
    "##\xE1\x86\xAB",  // 31 ##ᆫ (jongseong nieun)
};

WordPieceTokenizer make(WordPieceOptions opts = {}) { return WordPieceTokenizer(kVocab, opts); }

std::filesystem::path temp_file(const std::string& name, const std::string& content) {
  const auto path = std::filesystem::temp_directory_path() / ("spinel_test_tokenizer_" + name);
  std::ofstream f(path, std::ios::binary);
  f << content;
  return path;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const spinel::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("wordpiece: special token ids") {
  const auto t = make();
  CHECK(t.vocab_size() == kVocab.size());
  CHECK(t.pad_id() == 0);
  CHECK(t.unk_id() == 1);
  CHECK(t.cls_id() == 2);
  CHECK(t.sep_id() == 3);
  CHECK(t.token_id("hello") == 5);
  CHECK(t.token_id("nope") == -1);
  CHECK(t.token(17) == "\xE5\x8C\x97");
  CHECK_THROWS_AS(t.token(32), spinel::Error);
  CHECK_THROWS_AS(t.token(-1), spinel::Error);
}

TEST_CASE("wordpiece: basic splitting and word pieces") {
  const auto t = make();
  CHECK(t.tokenize("") == Ids{});
  CHECK(t.tokenize(" \t\n ") == Ids{});
  CHECK(t.tokenize("Hello, World!") == Ids{5, 7, 6, 8});
  CHECK(t.tokenize("hello,world!!") == Ids{5, 7, 6, 8, 8});
  CHECK(t.tokenize("unaffable") == Ids{9, 10, 11});
  CHECK(t.tokenize("wanted running") == Ids{12, 13, 14, 15});
  CHECK(t.tokenize("ab") == Ids{19, 20});
  CHECK(t.tokenize("abbb") == Ids{19, 20, 20, 20});
  // "c" has no piece, so the whole word is [UNK], not "a ##b [UNK]".
  CHECK(t.tokenize("abc hello") == Ids{1, 5});
  CHECK(t.tokenize("xyz") == Ids{1});
  // '$' is ASCII punctuation for BERT although it is a currency symbol.
  CHECK(t.tokenize("$5.") == Ids{27, 28, 21});
}

TEST_CASE("wordpiece: normalisation") {
  const auto t = make();
  CHECK(t.tokenize("CAF\xC3\x89") == Ids{16});                   // CAFÉ -> cafe
  CHECK(t.tokenize("cafe\xCC\x81") == Ids{16});                  // e + combining acute
  CHECK(t.tokenize("\xE5\x8C\x97\xE4\xBA\xAC") == Ids{17, 18});  // 北京 split per ideograph
  CHECK(t.tokenize("hello\xE5\x8C\x97world") == Ids{5, 17, 6});
  CHECK(t.tokenize(std::string("hel\0lo wo\x01rld", 13)) ==
        Ids{5, 6});  // control characters dropped
  CHECK(t.tokenize("hello\xE2\x80\x8Bworld") ==
        Ids{1});  // U+200B (Cf) is dropped, joining the words
  CHECK(t.tokenize("hello\xC2\xA0world\xE3\x80\x80!") == Ids{5, 6, 8});  // NBSP, ideographic space
  CHECK(t.tokenize("hello\xEF\xBF\xBDworld") == Ids{1});  // U+FFFD dropped: "helloworld"
  CHECK(t.tokenize("hello\xFF") == Ids{5});               // invalid UTF-8 -> U+FFFD -> dropped
  // U+0130 İ: NFD is I + U+0307, the mark goes, then I lowercases to i.
  CHECK(t.tokenize("\xC4\xB0S") == Ids{22, 23});
  // Hangul syllable 한 decomposes into three jamo under NFD.
  CHECK(t.tokenize("\xED\x95\x9C") == Ids{29, 30, 31});
  // U+00BF ¿ is Unicode punctuation (Po).
  CHECK(t.tokenize("\xC2\xBFhello") == Ids{1, 5});
}

TEST_CASE("wordpiece: cased options keep case and accents") {
  WordPieceOptions o;
  o.lowercase = false;
  o.strip_accents = false;
  const auto t = make(o);
  CHECK(t.tokenize("Hello hello") == Ids{24, 5});
  CHECK(t.tokenize("caf\xC3\xA9") == Ids{25, 26});
  CHECK(t.tokenize("HELLO") == Ids{1});

  o.lowercase = true;  // lowercase without stripping: é stays
  CHECK(make(o).tokenize("CAF\xC3\x89") == Ids{25, 26});

  WordPieceOptions no_cjk;
  no_cjk.handle_chinese_chars = false;
  CHECK(make(no_cjk).tokenize("\xE5\x8C\x97\xE4\xBA\xAC") == Ids{1});  // one unknown word
}

TEST_CASE("wordpiece: long words become [UNK]") {
  WordPieceOptions o;
  o.max_input_chars_per_word = 5;
  const auto t = make(o);
  CHECK(t.tokenize("hello") == Ids{5});          // 5 characters: allowed
  CHECK(t.tokenize("abbbbb") == Ids{1});         // 6 characters: too long
  CHECK(t.tokenize("cafe\xCC\x81") == Ids{16});  // counted after normalisation
  CHECK(make().tokenize(std::string(100, 'b').insert(0, "a")) == Ids{1});  // 101 > 100
  Ids hundred(100, 20);
  hundred[0] = 19;
  CHECK(make().tokenize("a" + std::string(99, 'b')) == hundred);
}

TEST_CASE("wordpiece: special tokens in the text are kept whole") {
  const auto t = make();
  CHECK(t.tokenize("hello[MASK]world") == Ids{5, 4, 6});
  CHECK(t.tokenize("[CLS] [SEP]") == Ids{2, 3});
  // Special tokens are matched before normalisation, so case matters.
  CHECK(t.tokenize("[mask]") == Ids{1, 1, 1});  // "[", "mask", "]"; "[" is not in the vocab either
}

TEST_CASE("wordpiece: encode adds [CLS]/[SEP] and type ids") {
  const auto t = make();
  Encoding e = t.encode("hello", std::nullopt, 0);
  CHECK(e.ids == Ids{2, 5, 3});
  CHECK(e.type_ids == Ids{0, 0, 0});
  CHECK_FALSE(e.truncated);
  CHECK(e.untruncated_length == 3);

  e = t.encode("hello", std::string_view("world!"), 0);
  CHECK(e.ids == Ids{2, 5, 3, 6, 8, 3});
  CHECK(e.type_ids == Ids{0, 0, 0, 1, 1, 1});

  e = t.encode("", std::string_view(""), 0);
  CHECK(e.ids == Ids{2, 3, 3});
  CHECK(e.type_ids == Ids{0, 0, 1});
}

TEST_CASE("wordpiece: truncation, longest first") {
  const auto t = make();
  // Single text: keep max_length - 2 word pieces.
  Encoding e = t.encode("hello world hello", std::nullopt, 4);
  CHECK(e.ids == Ids{2, 5, 6, 3});
  CHECK(e.truncated);
  CHECK(e.untruncated_length == 5);
  e = t.encode("hello world", std::nullopt, 4);
  CHECK(e.ids == Ids{2, 5, 6, 3});
  CHECK_FALSE(e.truncated);

  // 4 + 1 pieces into a budget of 6 - 3 = 3: the short one stays whole.
  e = t.encode("hello hello hello hello", std::string_view("world"), 6);
  CHECK(e.ids == Ids{2, 5, 5, 3, 6, 3});
  CHECK(e.type_ids == Ids{0, 0, 0, 0, 1, 1});
  CHECK(e.truncated);
  CHECK(e.untruncated_length == 8);

  // Same, with the long one second.
  e = t.encode("world", std::string_view("hello hello hello hello"), 6);
  CHECK(e.ids == Ids{2, 6, 3, 5, 5, 3});

  // 4 + 4 into 5: both cut, the odd token goes to the second text.
  e = t.encode("hello hello hello hello", std::string_view("world world world world"), 8);
  CHECK(e.ids == Ids{2, 5, 5, 3, 6, 6, 6, 3});

  // 4 + 2 into 4: the shorter keeps its 2.
  e = t.encode("hello hello hello hello", std::string_view("world world"), 7);
  CHECK(e.ids == Ids{2, 5, 5, 3, 6, 6, 3});

  // Exactly at the limit is not truncation.
  e = t.encode("hello", std::string_view("world"), 5);
  CHECK(e.ids == Ids{2, 5, 3, 6, 3});
  CHECK_FALSE(e.truncated);

  // Room only for the special tokens.
  e = t.encode("hello", std::string_view("world"), 3);
  CHECK(e.ids == Ids{2, 3, 3});

  CHECK_THROWS_AS(t.encode("hello", std::string_view("world"), 2), spinel::Error);
  CHECK_THROWS_AS(t.encode("hello", std::nullopt, 1), spinel::Error);
}

TEST_CASE("wordpiece: constructor checks") {
  CHECK_THROWS_AS(WordPieceTokenizer({}, WordPieceOptions{}), spinel::Error);
  const std::string msg = error_of([] {
    WordPieceTokenizer({"[CLS]", "[SEP]", "a"}, WordPieceOptions{});
  });
  CHECK(msg.find("[UNK]") != std::string::npos);
  // No [PAD] is allowed: pad_id is -1.
  CHECK(WordPieceTokenizer({"[UNK]", "[CLS]", "[SEP]"}, WordPieceOptions{}).pad_id() == -1);
}

TEST_CASE("wordpiece: vocab.txt") {
  std::string text;
  for (const auto& tok : kVocab) text += tok + "\r\n";  // Windows line ends are stripped
  const auto path = temp_file("vocab.txt", text);
  const auto t = WordPieceTokenizer::from_vocab_file(path.string(), WordPieceOptions{});
  CHECK(t.vocab_size() == kVocab.size());
  CHECK(t.token(5) == "hello");
  CHECK(t.tokenize("Hello, World!") == Ids{5, 7, 6, 8});

  const auto empty = temp_file("empty.txt", "");
  CHECK(error_of([&] {
          WordPieceTokenizer::from_vocab_file(empty.string(), {});
        }).find(empty.string()) != std::string::npos);
  const std::string missing =
      (std::filesystem::temp_directory_path() / "spinel_no_such_vocab.txt").string();
  CHECK(error_of([&] { WordPieceTokenizer::from_vocab_file(missing, {}); }).find(missing) !=
        std::string::npos);
  const auto no_unk = temp_file("no_unk.txt", "[CLS]\n[SEP]\nhello\n");
  const std::string e = error_of([&] { WordPieceTokenizer::from_vocab_file(no_unk.string(), {}); });
  CHECK(e.find(no_unk.string()) != std::string::npos);
  CHECK(e.find("[UNK]") != std::string::npos);
  std::filesystem::remove(path);
  std::filesystem::remove(empty);
  std::filesystem::remove(no_unk);
}

TEST_CASE("wordpiece: tokenizer.json") {
  const std::string json = R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 0, "content": "[PAD]", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
      {"id": 1, "content": "<unk>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
      {"id": 5, "content": "[X]", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false}
    ],
    "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                   "strip_accents": null, "lowercase": false},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
               {"SpecialToken": {"id": "</s>", "type_id": 1}}],
      "special_tokens": {}},
    "model": {"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "@@",
              "max_input_chars_per_word": 7,
              "vocab": {"[PAD]": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "Hi": 4, "@@s": 6}}
  })";
  // id 6 is used by the vocab but 5 is not: dense ids are required.
  const auto bad_ids = temp_file("bad_ids.json", json);
  const std::string e =
      error_of([&] { WordPieceTokenizer::from_tokenizer_json(bad_ids.string()); });
  CHECK(e.find(bad_ids.string()) != std::string::npos);
  CHECK(e.find("id 6") != std::string::npos);

  std::string fixed = json;
  fixed.replace(fixed.find("\"@@s\": 6"), 8, "\"@@s\": 5");
  fixed.replace(fixed.find("\"id\": 5,"), 8, "\"id\": 6,");
  const auto good = temp_file("good.json", fixed);
  const auto t = WordPieceTokenizer::from_tokenizer_json(good.string());
  CHECK(t.vocab_size() == 7);  // [X] (id 6) extends the vocabulary
  CHECK(t.token(6) == "[X]");
  CHECK(t.cls_id() == 2);
  CHECK(t.sep_id() == 3);
  CHECK(t.unk_id() == 1);
  CHECK(t.pad_id() == 0);
  const auto& o = t.options();
  CHECK_FALSE(o.lowercase);
  CHECK_FALSE(o.strip_accents);  // null follows lowercase
  CHECK(o.continuing_prefix == "@@");
  CHECK(o.max_input_chars_per_word == 7);
  CHECK(t.tokenize("Hi His[X]hi Hisssss Hissssss") == Ids{4, 4, 5, 6, 1, 4, 5, 5, 5, 5, 5, 1});
  CHECK(t.encode("Hi", std::nullopt, 0).ids == Ids{2, 4, 3});

  std::string bpe = fixed;
  bpe.replace(bpe.find("\"type\": \"WordPiece\""), 19, "\"type\": \"BPE\"");
  const auto bpe_path = temp_file("bpe.json", bpe);
  const std::string be =
      error_of([&] { WordPieceTokenizer::from_tokenizer_json(bpe_path.string()); });
  CHECK(be.find(bpe_path.string()) != std::string::npos);
  CHECK(be.find("BPE") != std::string::npos);

  const auto broken = temp_file("broken.json", "{\"model\": ");
  CHECK(error_of([&] {
          WordPieceTokenizer::from_tokenizer_json(broken.string());
        }).find(broken.string() + ": line 1") == 0);
  for (const auto& p : {bad_ids, good, bpe_path, broken}) std::filesystem::remove(p);
}

TEST_CASE("wordpiece: serialize round trip") {
  WordPieceOptions o;
  o.lowercase = false;
  o.strip_accents = true;
  o.handle_chinese_chars = false;
  o.max_input_chars_per_word = 9;
  const auto t = make(o);
  spinel::ByteWriter w;
  t.serialize(w);
  spinel::ByteReader r(w.bytes().data(), w.bytes().size(), "tokenizer section");
  const auto u = WordPieceTokenizer::deserialize(r);
  CHECK(r.remaining() == 0);
  CHECK(u.vocab_size() == t.vocab_size());
  for (int32_t i = 0; i < static_cast<int32_t>(t.vocab_size()); ++i)
    CHECK(u.token(i) == t.token(i));
  CHECK(u.options().lowercase == o.lowercase);
  CHECK(u.options().strip_accents == o.strip_accents);
  CHECK(u.options().handle_chinese_chars == o.handle_chinese_chars);
  CHECK(u.options().clean_text == o.clean_text);
  CHECK(u.options().max_input_chars_per_word == 9);
  CHECK(u.options().continuing_prefix == "##");
  CHECK(u.cls_id() == 2);
  CHECK(u.sep_id() == 3);
  CHECK(u.unk_id() == 1);
  CHECK(u.pad_id() == 0);
  CHECK(u.added_tokens().size() == t.added_tokens().size());
  for (const char* s : {"Hello, world! [MASK] caf\xC3\xA9", "abbbbbbbbbb", "wanted"}) {
    CHECK(u.tokenize(s) == t.tokenize(s));
  }
}

TEST_CASE("wordpiece: deserialize rejects truncated and garbage bytes") {
  spinel::ByteWriter w;
  make().serialize(w);
  const std::vector<uint8_t> good = w.bytes();
  // Every proper prefix is an error (never a crash, never a half tokenizer).
  for (size_t n = 0; n < good.size(); ++n) {
    spinel::ByteReader r(good.data(), n, "tokenizer section");
    CHECK_THROWS_AS(WordPieceTokenizer::deserialize(r), spinel::Error);
  }
  // Random bytes.
  std::mt19937 rng(1234);
  for (int k = 0; k < 200; ++k) {
    std::vector<uint8_t> junk(rng() % 256);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    spinel::ByteReader r(junk.data(), junk.size(), "junk");
    CHECK_THROWS_AS(WordPieceTokenizer::deserialize(r), spinel::Error);
  }
  // Random single-byte corruptions after the header: either an error or a
  // valid tokenizer, never a crash.
  for (int k = 0; k < 2000; ++k) {
    std::vector<uint8_t> bytes = good;
    bytes[8 + rng() % (bytes.size() - 8)] ^= static_cast<uint8_t>(1 + rng() % 255);
    spinel::ByteReader r(bytes.data(), bytes.size(), "corrupt");
    try {
      const auto t = WordPieceTokenizer::deserialize(r);
      CHECK(t.vocab_size() > 0);
      (void)t.encode("hello [MASK] world", std::nullopt, 0);
    } catch (const spinel::Error&) {
    }
  }
}

TEST_CASE("wordpiece: deserialize checks counts and ids") {
  // Hand-built sections: header, options, then the given vocab/added parts.
  auto section = [](uint32_t vocab_count, const std::vector<std::string>& vocab, int32_t added_id) {
    spinel::ByteWriter w;
    w.put<uint32_t>(0x4B545057);
    w.put<uint32_t>(1);
    w.put<uint8_t>(0x0F);
    w.put<int32_t>(100);
    for (const char* s : {"##", "[UNK]", "[CLS]", "[SEP]", "[PAD]"}) w.put_str(s);
    w.put<uint32_t>(vocab_count);
    for (const auto& v : vocab) w.put_str(v);
    w.put<uint32_t>(1);
    w.put<int32_t>(added_id);
    w.put<uint8_t>(1);
    w.put_str("[CLS]");
    return w.bytes();
  };
  const std::vector<std::string> vocab = {"[UNK]", "[CLS]", "[SEP]"};
  auto load = [](const std::vector<uint8_t>& b) {
    spinel::ByteReader r(b.data(), b.size(), "s");
    return WordPieceTokenizer::deserialize(r);
  };
  CHECK(load(section(3, vocab, 1)).vocab_size() == 3);
  CHECK_THROWS_AS(load(section(0, {}, 1)), spinel::Error);              // empty vocabulary
  CHECK_THROWS_AS(load(section(0xFFFFFFFF, vocab, 1)), spinel::Error);  // impossible count
  CHECK_THROWS_AS(load(section(3, vocab, 3)), spinel::Error);           // added id out of range
  CHECK_THROWS_AS(load(section(3, vocab, -1)), spinel::Error);
  CHECK_THROWS_AS(load(section(2, {"[UNK]", "[CLS]"}, 1)), spinel::Error);  // no [SEP]
}
