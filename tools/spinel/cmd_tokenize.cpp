// spinel tokenize: prints the ids a tokenizer gives each input text, one JSON
// object per line, so they can be diffed against HF's tokenizer.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/spnl.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/util/json.h"
#include "runtime/util/text_input.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kSynopsis =
    "usage: spinel tokenize (MODEL.spnl | --tokenizer FILE) [--text T]... [--input FILE]\n"
    "                       [--pair B] [--max-length N] [--no-lowercase]\n";

const char* kDetails =
    "\n"
    "Prints one JSON line per text: "
    "{\"ids\":[...],\"type_ids\":[...],\"tokens\":[...],\"truncated\":false}\n"
    "\n"
    "  MODEL.spnl          use the tokenizer stored in a converted model\n"
    "  --tokenizer FILE    an HF tokenizer.json (WordPiece or BPE model), a SentencePiece .model,\n"
    "                      or a vocab.txt (one token per line)\n"
    "  --text T            a text to tokenize (repeatable)\n"
    "  --input FILE        one text per line ('-' for stdin); empty lines are empty texts\n"
    "  --pair B            second text for every input (the tokenizer's pair template,\n"
    "                      e.g. [CLS] A [SEP] B [SEP])\n"
    "  --max-length N      truncate to N tokens, longest segment first (default 0: no limit)\n"
    "  --no-lowercase      vocab.txt only: keep case and accents (cased models)\n";

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "spinel tokenize: %s\n%s(see spinel tokenize --help)\n", msg.c_str(),
               kSynopsis);
  return 2;
}

void print_encoding(const Tokenizer& tok, const Encoding& e) {
  std::string s = "{\"ids\":[";
  for (size_t i = 0; i < e.ids.size(); ++i) s += (i ? "," : "") + std::to_string(e.ids[i]);
  s += "],\"type_ids\":[";
  for (size_t i = 0; i < e.type_ids.size(); ++i)
    s += (i ? "," : "") + std::to_string(e.type_ids[i]);
  s += "],\"tokens\":[";
  for (size_t i = 0; i < e.ids.size(); ++i) s += (i ? "," : "") + json::quote(tok.token(e.ids[i]));
  s += "],\"truncated\":";
  s += e.truncated ? "true" : "false";
  s += "}\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  std::string model_path, tokenizer_path, input_path;
  std::vector<std::string> texts;
  std::optional<std::string> pair;
  size_t max_length = 0;
  bool lowercase = true;

  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--help" || a == "-h") {
      std::fputs(kSynopsis, stdout);
      std::fputs(kDetails, stdout);
      return 0;
    } else if (a == "--tokenizer" || a == "--text" || a == "--input" || a == "--pair" ||
               a == "--max-length") {
      const char* v = value();
      if (!v) return usage_error(a + " needs a value");
      if (a == "--tokenizer") {
        tokenizer_path = v;
      } else if (a == "--text") {
        texts.emplace_back(v);
      } else if (a == "--input") {
        if (!input_path.empty()) return usage_error("--input given twice");
        input_path = v;
      } else if (a == "--pair") {
        pair = v;
      } else {
        char* end = nullptr;
        errno = 0;
        const long long n = std::strtoll(v, &end, 10);
        if (!*v || *end || errno || n < 0) {
          return usage_error("--max-length needs a non-negative integer, got '" + std::string(v) +
                             "'");
        }
        max_length = static_cast<size_t>(n);
      }
    } else if (a == "--no-lowercase") {
      lowercase = false;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option '" + a + "'");
    } else {
      if (!model_path.empty())
        return usage_error("more than one model given ('" + model_path + "', '" + a + "')");
      model_path = a;
    }
  }
  if (model_path.empty() == tokenizer_path.empty()) {
    return usage_error("give either a MODEL.spnl or --tokenizer FILE");
  }
  if (texts.empty() && input_path.empty())
    return usage_error("nothing to tokenize: use --text or --input");
  if (!lowercase && (tokenizer_path.empty() || ends_with(tokenizer_path, ".json") ||
                     ends_with(tokenizer_path, ".model"))) {
    return usage_error(
        "--no-lowercase applies to a vocab.txt only (tokenizer.json, .model and .spnl carry their "
        "own options)");
  }

  try {
    if (!input_path.empty()) {
      for (std::string& line : read_text_lines(input_path == "-" ? "/dev/stdin" : input_path,
                                               kMaxInputFileBytes))
        texts.push_back(std::move(line));
    }

    std::shared_ptr<const Model> model;
    AnyTokenizer loaded;
    const Tokenizer* tok = nullptr;
    if (!model_path.empty()) {
      model = Model::load(model_path);
      tok = &model->tokenizer();
    } else {
      TokenizerFileOptions opts;
      opts.lowercase = lowercase;
      loaded = load_tokenizer_file(tokenizer_path, opts);
      tok = &loaded;
    }

    std::optional<std::string_view> b;
    if (pair) b = *pair;
    for (const auto& t : texts) print_encoding(*tok, tok->encode(t, b, max_length));
    if (std::fflush(stdout) != 0) fail("cannot write to stdout");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spinel tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace spinel::cli
