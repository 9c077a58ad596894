#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/session.h"
#include "runtime/util/json.h"
#include "runtime/util/text_input.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kHelp =
    "usage: spinel run MODEL.spnl (--text TEXT ... | --input FILE | --ids LIST ...) [options]\n"
    "\n"
    "Tokenizes each input with the model's own tokenizer, runs the encoder on packed\n"
    "variable-length batches (no padding) and prints one JSON object per input on stdout.\n"
    "\n"
    "inputs:\n"
    "  --text TEXT        an input text; repeat for several\n"
    "  --input FILE       one input text per line (progress bar on stderr)\n"
    "  --ids LIST         pre-tokenized input: comma-separated token ids, e.g. 101,7592,102\n"
    "options:\n"
    "  --pool NAME        the sentence vector: cls (the [CLS] row), mean (of all rows),\n"
    "                     pooler (BERT's pooler_output, when the export has it), another\n"
    "                     per-sequence output of the model by name, or none: print every\n"
    "                     token's hidden state (default: the model's own, see inspect)\n"
    "  --normalize        L2-normalize pooled vectors (default: the model's own)\n"
    "  --threads N        threads to use, 1..1024; 0 = all cores (default 0)\n"
    "  --batch-size N     inputs per batch (default 32)\n"
    "  --max-length N     truncate inputs to N tokens (default and limit: the model's\n"
    "                     maximum sequence length)\n"
    "  --no-truncation    fail on inputs longer than the limit instead of truncating\n"
    "  --backend NAME     cpu (default) or reference (plain loops, one thread: slow, the\n"
    "                     definition the tests compare against)\n"
    "  --isa NAME         cap the instruction set: avx512vnni, avxvnni, avx2 or scalar\n"
    "                     (default: the best this CPU runs; same as SPINEL_ISA)\n"
    "  --format json|table  JSON lines (default), or a readable table with the pairwise\n"
    "                     cosine similarity of the pooled vectors\n"
    "  -h, --help         this text\n"
    "\n"
    "JSON fields: index, text (absent for --ids), tokens, and embedding (pooled) or\n"
    "last_hidden_state (--pool none, one array per token).\n";

struct Input {
  std::string text;
  bool has_text = true;
  Sequence seq;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t comma = s.find(',', pos);
    const std::string tok = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (tok.empty() || used != tok.size() || v < INT32_MIN || v > INT32_MAX)
      throw UsageError{"--ids: '" + tok + "' is not a token id"};
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

void append_float(std::string& out, float v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.8g", v);
  out.append(buf, n);
}

void append_vector(std::string& out, const float* v, int64_t n) {
  out += '[';
  for (int64_t j = 0; j < n; ++j) {
    if (j) out += ',';
    append_float(out, v[j]);
  }
  out += ']';
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::max(std::sqrt(aa * bb), 1e-30);
}

std::string shorten(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  size_t cut = n - 3;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
  return s.substr(0, cut) + "...";
}

// Pads to `width` characters (UTF-8 code points, not bytes) so columns line up.
std::string pad(const std::string& s, size_t width) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return chars >= width ? s : s + std::string(width - chars, ' ');
}

}  // namespace

int cmd_run(int argc, char** argv) {
  try {
    Args args(argc, argv,
              {"input", "pool", "threads", "batch-size", "max-length", "format", "isa", "backend"},
              {"help", "normalize", "no-truncation"}, {"text", "ids"});
    if (args.has("help")) {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (args.positionals().size() != 1) throw UsageError{"expected exactly one MODEL.spnl"};
    const bool pool_given = args.has("pool");
    std::string pool_name = args.get("pool", "");
    const std::string format = args.get("format", "json");
    if (format != "json" && format != "table")
      throw UsageError{"--format must be json or table, not '" + format + "'"};
    const int threads = static_cast<int>(args.get_int("threads", 0, 0, kMaxThreads));
    const int64_t batch_size = args.get_int("batch-size", 32, 1, 1 << 20);
    if (!args.has("text") && !args.has("input") && !args.has("ids"))
      throw UsageError{"give at least one --text, --ids or an --input FILE"};

    if (args.has("isa")) {
      const std::string name = args.get("isa");
      try {
        set_isa_cap(name);
      } catch (const Error&) {
        throw UsageError{"--isa must be avx512vnni, avxvnni, avx2 or scalar, not '" + name + "'"};
      }
    }
    if (args.has("backend") && args.get("backend").empty()) throw UsageError{"--backend needs a name"};
    const auto model = Model::load(args.positionals()[0]);
    // The model's own default (e.g. mean + normalize for a sentence-transformers
    // export) unless the user chose.
    if (!pool_given) pool_name = model->config().default_pool;
    const bool normalize = args.has("normalize") || (!pool_given && model->config().normalize);
    const bool no_pool = pool_name == "none";
    if (!no_pool) {
      const auto names = pooling_names(*model);
      if (std::find(names.begin(), names.end(), pool_name) == names.end()) {
        std::string known;
        for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
        throw UsageError{"--pool must be " + known + " or none for this model, not '" + pool_name + "'"};
      }
    }
    const int64_t limit = model->config().max_position;
    const int64_t max_len = args.get_int("max-length", limit, 3, limit);
    const bool no_trunc = args.has("no-truncation");

    // Read and tokenize every input before running anything, so that a bad
    // input fails the command before it prints partial output.
    std::vector<Input> inputs;
    for (const auto& t : args.all("text")) inputs.push_back({t, true, {}});
    if (args.has("input")) {
      const std::string path = args.get("input");
      for (std::string& line : read_text_lines(path, kMaxInputFileBytes))
        inputs.push_back({std::move(line), true, {}});
      if (inputs.empty()) fail("input file '", path, "' has no lines");
    }
    const auto& tok = model->tokenizer();
    for (Input& in : inputs) {
      Encoding e = tok.encode(in.text, std::nullopt, static_cast<size_t>(max_len), true);
      if (e.truncated) {
        const size_t idx = &in - inputs.data();
        const std::string count = (e.length_is_exact ? "" : "more than ") +
                                  std::to_string(e.length_is_exact ? e.untruncated_length : max_len);
        if (no_trunc)
          fail("input ", idx, " has ", count, " tokens, more than the limit of ", max_len,
               " (drop --no-truncation to truncate it)");
        std::fprintf(stderr, "spinel run: warning: input %zu has %s tokens, truncated to %lld\n",
                     idx, count.c_str(), (long long)max_len);
      }
      in.seq.ids = std::move(e.ids);
      in.seq.type_ids = std::move(e.type_ids);
    }
    for (const auto& s : args.all("ids")) {
      Input in;
      in.has_text = false;
      in.seq.ids = parse_ids(s);
      if (static_cast<int64_t>(in.seq.ids.size()) > max_len)
        fail("--ids input has ", in.seq.ids.size(), " tokens, more than the limit of ", max_len);
      inputs.push_back(std::move(in));
    }

    SessionOptions sopts;
    sopts.threads = threads;
    sopts.backend = args.get("backend", "cpu");
    Session session(model, sopts);
    std::unique_ptr<Progress> progress;
    if (args.has("input")) progress = std::make_unique<Progress>("spinel run", inputs.size());

    std::vector<std::vector<float>> pooled_all;
    std::string line;
    for (size_t b = 0; b < inputs.size(); b += batch_size) {
      const size_t e = std::min(inputs.size(), b + static_cast<size_t>(batch_size));
      std::vector<Sequence> batch;
      for (size_t i = b; i < e; ++i) batch.push_back(inputs[i].seq);
      const HiddenStates h = session.run(batch);
      std::vector<std::vector<float>> pooled;
      if (!no_pool) {
        pooled = spinel::pooled(session, h, pool_name, normalize);
      }
      for (size_t i = b; i < e; ++i) {
        const size_t k = i - b;
        if (format == "table") {
          if (!no_pool) pooled_all.push_back(pooled[k]);
          continue;
        }
        line.clear();
        line += "{\"index\":" + std::to_string(i);
        if (inputs[i].has_text) line += ",\"text\":" + json::quote(inputs[i].text);
        line += ",\"tokens\":" + std::to_string(inputs[i].seq.ids.size());
        if (!no_pool) {
          line += ",\"embedding\":";
          append_vector(line, pooled[k].data(), static_cast<int64_t>(pooled[k].size()));
        } else {
          line += ",\"last_hidden_state\":[";
          for (int64_t t = h.offsets[k]; t < h.offsets[k + 1]; ++t) {
            if (t != h.offsets[k]) line += ',';
            append_vector(line, h.row(t), h.width);
          }
          line += ']';
        }
        line += "}\n";
        std::fwrite(line.data(), 1, line.size(), stdout);
      }
      if (progress) progress->update(static_cast<int64_t>(e));
    }
    if (progress) progress->finish();

    if (format == "table") {
      std::printf("%-4s %-6s %-44s %s\n", "#", "tokens", "text", "embedding (first 4 dims)");
      for (size_t i = 0; i < inputs.size(); ++i) {
        std::printf("%-4zu %-6zu %s", i, inputs[i].seq.ids.size(),
                    pad(shorten(inputs[i].has_text ? inputs[i].text : "(ids)", 44), 44).c_str());
        if (i < pooled_all.size())
          for (size_t j = 0; j < std::min<size_t>(4, pooled_all[i].size()); ++j)
            std::printf(" %+.4f", pooled_all[i][j]);
        std::printf("\n");
      }
      if (pooled_all.size() > 1) {
        std::printf("\ncosine similarity\n%-4s", "");
        for (size_t j = 0; j < pooled_all.size(); ++j) std::printf(" %6zu", j);
        std::printf("\n");
        for (size_t i = 0; i < pooled_all.size(); ++i) {
          std::printf("%-4zu", i);
          for (size_t j = 0; j < pooled_all.size(); ++j)
            std::printf(" %6.3f", cosine(pooled_all[i], pooled_all[j]));
          std::printf("\n");
        }
      }
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "spinel run: %s\n\n%s", e.message.c_str(), kHelp);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spinel run: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace spinel::cli
