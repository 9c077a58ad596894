#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/profile.h"
#include "runtime/session.h"
#include "runtime/util/chunk.h"
#include "runtime/util/fasta.h"
#include "runtime/util/json.h"
#include "runtime/util/text_input.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kHelp =
    "usage: spinel run MODEL.spnl (--text TEXT ... | --input FILE | --fasta FILE | --ids LIST ...)\n"
    "                  [options]\n"
    "\n"
    "Tokenizes each input with the model's own tokenizer, runs the encoder on packed\n"
    "variable-length batches (no padding) and prints one JSON object per input on stdout.\n"
    "\n"
    "inputs:\n"
    "  --text TEXT        an input text; repeat for several\n"
    "  --input FILE       one input text per line (progress bar on stderr)\n"
    "  --ids LIST         pre-tokenized input: comma-separated token ids, e.g. 101,7592,102\n"
    "  --fasta FILE       DNA/RNA sequences in FASTA format, one input per record (progress\n"
    "                     bar on stderr). Records may span several lines; blank lines, CRLF,\n"
    "                     lower case and the IUPAC codes (ACGTU RYKMSWBDHV N) are accepted;\n"
    "                     letters are upper-cased before tokenizing (DNABERT-2's vocabulary\n"
    "                     is upper case). Not accepted: ';' comments, '-' '.' '*', other\n"
    "                     letters. A record may hold at most 16 Mi letters. A record longer\n"
    "                     than the model's limit in tokens is an error unless --chunk\n"
    "                     is given (FASTA records are never truncated)\n"
    "fasta and long inputs:\n"
    "  --on-bad-record error|skip  a bad FASTA record (header without a name, no\n"
    "                     sequence, a letter that is not a nucleotide code, over the size\n"
    "                     limit, too many tokens without --chunk) stops the command with\n"
    "                     its name and line (error, the default) or is skipped with a\n"
    "                     warning on stderr (skip). A binary or non-UTF-8 file, or sequence\n"
    "                     before the first '>' header, is always an error\n"
    "  --chunk W[:O]      split each --fasta record or text too long for one window into\n"
    "                     windows of at most W tokens counting [CLS] and [SEP] (max: the\n"
    "                     limit, see --max-length),\n"
    "                     neighbours sharing O tokens (default: an eighth of W - 2); run\n"
    "                     each window and average the pooled vectors (or the logits),\n"
    "                     weighted by window length in tokens (then --normalize, if\n"
    "                     asked). An input that fits one window runs whole; --ids inputs\n"
    "                     are never split. The JSON gets \"chunks\": the number of windows\n"
    "  --chunk-overlap O  the overlap O of --chunk W, given separately\n"
    "options:\n"
    "  --pool NAME        the sentence vector: cls (the [CLS] row), mean (of all rows),\n"
    "                     pooler (BERT's pooler_output, when the export has it), another\n"
    "                     per-sequence output of the model by name, or none: print every\n"
    "                     token's hidden state (default: the model's own, see inspect)\n"
    "  --normalize        L2-normalize pooled vectors (default: the model's own)\n"
    "  --threads N        threads to use, 1..1024; 0 = all cores (default 0)\n"
    "  --batch-size N     inputs (or --chunk windows) per batch (default 32)\n"
    "  --max-length N     truncate inputs to N tokens (default and limit: the model's\n"
    "                     maximum sequence length); for --fasta and --chunk, the limit\n"
    "                     in tokens (FASTA records are never truncated)\n"
    "  --no-truncation    fail on inputs longer than the limit instead of truncating\n"
    "  --backend NAME     cpu (default), reference (plain loops, one thread: slow, the\n"
    "                     definition the tests compare against) or cuda (a build with\n"
    "                     -DSPINEL_CUDA=ON and a CUDA device)\n"
    "  --isa NAME         cap the instruction set: avx512vnni, avxvnni, avx2 or scalar\n"
    "                     (default: the best this CPU runs; same as SPINEL_ISA)\n"
    "  --repeat N         run each batch N times (the output is printed once): for timing\n"
    "  --profile          after the run, print on stderr where the time went: per op class\n"
    "                     (op kind and kernel), ms per run and share; the first run is a\n"
    "                     warm-up and is not counted\n"
    "  --format json|table  JSON lines (default), or a readable table with the pairwise\n"
    "                     cosine similarity of the pooled vectors\n"
    "  -h, --help         this text\n"
    "\n"
    "JSON fields: index; text (for --text and --input) or name, description (when the\n"
    "header has one) and length (in letters, bp) for --fasta; tokens (of the whole\n"
    "input, with [CLS] and [SEP]); chunks (with --chunk); embedding (pooled) or\n"
    "last_hidden_state (--pool none, one array per token). A model with a per-sequence\n"
    "output named logits (a classifier) prints logits and probabilities (their\n"
    "softmax) instead of the embedding, which it adds only when --pool is given.\n";

struct Input {
  Input() = default;
  Input(std::string t, bool has_t, Sequence s) : text(std::move(t)), has_text(has_t), seq(std::move(s)) {}
  std::string text;
  bool has_text = true;
  Sequence seq;
  // --fasta records: name, description, length in letters.
  bool is_record = false;
  std::string name, description;
  int64_t length = 0;
  // What runs: seq alone, or the windows of a chunked input; tokens counts
  // the whole input with its specials.
  std::vector<Sequence> windows;
  int64_t tokens = 0;
};

// The token ids of a whole input without special tokens, and the ids put
// around each window: the one place --fasta and --chunk tokenize.
struct ContentIds {
  std::vector<int32_t> ids;
  int32_t cls = -1, sep = -1;
};
ContentIds content_ids(const Model& model, const std::string& text) {
  const auto& tok = model.tokenizer();
  return {tok.tokenize(text), tok.cls_id(), tok.sep_id()};
}

struct ChunkSpec {
  bool on = false;
  int64_t window = 0, overlap = 0;
};

// --chunk W[:O] and --chunk-overlap O; W = "max" is the limit.
ChunkSpec parse_chunk(const Args& args, int64_t limit) {
  ChunkSpec c;
  if (!args.has("chunk")) {
    if (args.has("chunk-overlap")) throw UsageError{"--chunk-overlap needs --chunk W"};
    return c;
  }
  c.on = true;
  const std::string v = args.get("chunk");
  const size_t colon = v.find(':');
  const std::string w = v.substr(0, colon);
  auto number = [&](const std::string& s, const char* what) {
    size_t used = 0;
    long long n = -1;
    try {
      n = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (s.empty() || used != s.size() || n < 0)
      throw UsageError{std::string("--chunk: ") + what + " '" + s + "' is not a number of tokens"};
    return static_cast<int64_t>(n);
  };
  c.window = w == "max" ? limit : number(w, "window");
  if (c.window < 3 || c.window > limit)
    throw UsageError{"--chunk: the window must be 3 to " + std::to_string(limit) +
                     " tokens (the limit, counting [CLS] and [SEP]), not " + w};
  if (colon != std::string::npos && args.has("chunk-overlap"))
    throw UsageError{"give the overlap once: --chunk W:O or --chunk-overlap O"};
  if (colon != std::string::npos)
    c.overlap = number(v.substr(colon + 1), "overlap");
  else if (args.has("chunk-overlap"))
    c.overlap = args.get_int("chunk-overlap", 0, 0, c.window - 3);
  else
    c.overlap = (c.window - 2) / 8;
  if (c.overlap > c.window - 3)
    throw UsageError{"--chunk: the overlap must be less than the window's " +
                     std::to_string(c.window - 2) + " tokens besides [CLS] and [SEP], not " +
                     std::to_string(c.overlap)};
  return c;
}

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
              {"input", "pool", "threads", "batch-size", "max-length", "format", "isa", "backend",
               "fasta", "on-bad-record", "chunk", "chunk-overlap", "repeat"},
              {"help", "normalize", "no-truncation", "profile"}, {"text", "ids"});
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
    if (!args.has("text") && !args.has("input") && !args.has("ids") && !args.has("fasta"))
      throw UsageError{"give at least one --text, --ids, an --input FILE or a --fasta FILE"};
    const std::string on_bad = args.get("on-bad-record", "error");
    if (on_bad != "error" && on_bad != "skip")
      throw UsageError{"--on-bad-record must be error or skip, not '" + on_bad + "'"};
    const bool skip_bad = on_bad == "skip";

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
    const ChunkSpec chunk = parse_chunk(args, max_len);
    if (chunk.on && no_pool) throw UsageError{"--chunk averages pooled vectors: it does not go with --pool none"};
    // A classifier (a per-sequence output "logits") prints its logits and
    // their softmax; the embedding only when asked for with --pool.
    const bool has_logits = model->graph().find_output("logits") >= 0;
    const bool embed = !no_pool && (!has_logits || pool_given);

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
      if (chunk.on) continue;  // tokenized whole below
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
    if (chunk.on) {
      for (Input& in : inputs) {
        const ContentIds c = content_ids(*model, in.text);
        in.tokens = static_cast<int64_t>(c.ids.size()) + 2;
        in.windows = chunk_sequence(c.ids, c.cls, c.sep, chunk.window, chunk.overlap);
      }
    }
    if (args.has("fasta")) {
      const std::string path = args.get("fasta");
      auto warn = [](const std::string& m) {
        std::fprintf(stderr, "spinel run: warning: %s\n", m.c_str());
      };
      FastaOptions fo;
      fo.on_bad_record = skip_bad ? OnBadRecord::Skip : OnBadRecord::Error;
      fo.warn = warn;
      std::vector<FastaRecord> records = read_fasta(path, kMaxInputFileBytes, fo);
      size_t kept = 0;
      for (FastaRecord& r : records) {
        Input in;
        in.has_text = false;
        in.is_record = true;
        in.name = std::move(r.name);
        in.description = std::move(r.description);
        in.length = static_cast<int64_t>(r.sequence.size());
        const ContentIds c = content_ids(*model, r.sequence);
        std::string().swap(r.sequence);
        in.tokens = static_cast<int64_t>(c.ids.size()) + 2;
        if (!chunk.on && in.tokens > max_len) {
          const std::string msg = path + " line " + std::to_string(r.line) + ": record '" + in.name +
                                  "' has " + std::to_string(in.tokens) + " tokens (" +
                                  std::to_string(in.length) + " bp), more than the limit of " +
                                  std::to_string(max_len) + " (give --chunk max to run it in windows)";
          if (!skip_bad) fail(msg);
          warn(printable(msg + "; skipped"));
          continue;
        }
        in.windows = chunk_sequence(c.ids, c.cls, c.sep, chunk.on ? chunk.window : max_len,
                                    chunk.on ? chunk.overlap : 0);
        inputs.push_back(std::move(in));
        ++kept;
      }
      if (kept == 0) fail("every record of '", path, "' was skipped: nothing to run");
    }
    for (const auto& s : args.all("ids")) {
      Input in;
      in.has_text = false;
      in.seq.ids = parse_ids(s);
      if (static_cast<int64_t>(in.seq.ids.size()) > max_len)
        fail("--ids input has ", in.seq.ids.size(), " tokens, more than the limit of ", max_len);
      inputs.push_back(std::move(in));
    }

    for (Input& in : inputs) {
      if (!in.windows.empty()) continue;
      in.tokens = static_cast<int64_t>(in.seq.ids.size());
      in.windows.push_back(std::move(in.seq));
    }

    SessionOptions sopts;
    sopts.threads = threads;
    sopts.backend = args.get("backend", "cpu");
    Session session(model, sopts);
    const int64_t repeat = args.get_int("repeat", 1, 1, 100000);
    const bool profile = args.has("profile");
    std::unique_ptr<Progress> progress;
    if (args.has("input") || args.has("fasta"))
      progress = std::make_unique<Progress>("spinel run", inputs.size());

    // Every window of every input, in order; a batch holds batch_size windows.
    std::vector<std::pair<size_t, size_t>> work;
    for (size_t i = 0; i < inputs.size(); ++i)
      for (size_t w = 0; w < inputs[i].windows.size(); ++w) work.emplace_back(i, w);

    // Per input, kept for --format table.
    std::vector<std::vector<float>> emb_all(inputs.size()), logits_all(inputs.size());
    // The windows' results of the input being finished.
    std::vector<std::vector<float>> emb_rows, logit_rows;
    std::vector<double> weights;
    std::string line;
    for (size_t b = 0; b < work.size(); b += batch_size) {
      const size_t e = std::min(work.size(), b + static_cast<size_t>(batch_size));
      std::vector<Sequence> batch;
      for (size_t k = b; k < e; ++k) batch.push_back(inputs[work[k].first].windows[work[k].second]);
      HiddenStates h = session.run(batch);
      if (profile && !session.profiling()) {
        // The first run of the first batch warms caches and the thread pool:
        // not counted; the first batch runs once more instead.
        session.set_profiling(true);
        h = session.run(batch);
      }
      for (int64_t r = 1; r < repeat; ++r) h = session.run(batch);
      std::vector<std::vector<float>> pooled;
      if (embed) pooled = spinel::pooled(session, h, pool_name, false);
      OutputView logits;
      if (has_logits) logits = session.output("logits");
      for (size_t k = b; k < e; ++k) {
        const size_t r = k - b, i = work[k].first;
        const Input& in = inputs[i];
        if (embed) emb_rows.push_back(std::move(pooled[r]));
        if (has_logits) logit_rows.emplace_back(logits.row(r), logits.row(r) + logits.width);
        weights.push_back(static_cast<double>(batch[r].ids.size()));
        if (work[k].second + 1 < in.windows.size()) continue;  // more windows to come

        std::vector<float> emb, lg;
        if (embed) {
          emb = emb_rows.size() == 1 ? std::move(emb_rows[0]) : weighted_mean(emb_rows, weights);
          if (normalize) l2_normalize(emb);
        }
        if (has_logits) lg = logit_rows.size() == 1 ? std::move(logit_rows[0]) : weighted_mean(logit_rows, weights);
        emb_rows.clear();
        logit_rows.clear();
        weights.clear();
        if (format == "table") {
          emb_all[i] = std::move(emb);
          logits_all[i] = std::move(lg);
          continue;
        }
        line.clear();
        line += "{\"index\":" + std::to_string(i);
        if (in.has_text) line += ",\"text\":" + json::quote(in.text);
        if (in.is_record) {
          line += ",\"name\":" + json::quote(in.name);
          if (!in.description.empty()) line += ",\"description\":" + json::quote(in.description);
          line += ",\"length\":" + std::to_string(in.length);
        }
        line += ",\"tokens\":" + std::to_string(in.tokens);
        if (chunk.on) line += ",\"chunks\":" + std::to_string(in.windows.size());
        if (has_logits) {
          line += ",\"logits\":";
          append_vector(line, lg.data(), static_cast<int64_t>(lg.size()));
          const std::vector<float> p = softmax(lg);
          line += ",\"probabilities\":";
          append_vector(line, p.data(), static_cast<int64_t>(p.size()));
        }
        if (embed) {
          line += ",\"embedding\":";
          append_vector(line, emb.data(), static_cast<int64_t>(emb.size()));
        } else if (no_pool) {
          line += ",\"last_hidden_state\":[";
          for (int64_t t = h.offsets[r]; t < h.offsets[r + 1]; ++t) {
            if (t != h.offsets[r]) line += ',';
            append_vector(line, h.row(t), h.width);
          }
          line += ']';
        }
        line += "}\n";
        std::fwrite(line.data(), 1, line.size(), stdout);
      }
      if (progress) progress->update(static_cast<int64_t>(work[e - 1].first + 1));
    }
    if (progress) progress->finish();
    if (profile) {
      const std::string slices = session.slice_tokens() > 0
                                     ? ", batches in slices of up to " + std::to_string(session.slice_tokens()) + " tokens"
                                     : "";
      std::fprintf(stderr, "\nprofile: %s, %d threads, backend %s%s\n%s", args.positionals()[0].c_str(),
                   session.threads(), sopts.backend.c_str(), slices.c_str(),
                   profile_table(profile_by_class(session), session.profiled_runs()).c_str());
    }

    if (format == "table") {
      std::printf("%-4s %-6s %-8s %-36s %s\n", "#", "tokens", "bp", "input",
                  has_logits ? "top class (probability)" : "embedding (first 4 dims)");
      for (size_t i = 0; i < inputs.size(); ++i) {
        const Input& in = inputs[i];
        const std::string label = in.is_record ? in.name : in.has_text ? in.text : "(ids)";
        std::printf("%-4zu %-6lld %-8s %s", i, (long long)in.tokens,
                    in.is_record ? std::to_string(in.length).c_str() : "-", pad(shorten(label, 36), 36).c_str());
        if (has_logits && !logits_all[i].empty()) {
          const std::vector<float> p = softmax(logits_all[i]);
          const size_t top = std::max_element(p.begin(), p.end()) - p.begin();
          std::printf(" %zu (%.4f)", top, p[top]);
        } else {
          for (size_t j = 0; j < std::min<size_t>(4, emb_all[i].size()); ++j) std::printf(" %+.4f", emb_all[i][j]);
        }
        std::printf("\n");
      }
      if (embed && !has_logits && inputs.size() > 1) {
        std::printf("\ncosine similarity\n%-4s", "");
        for (size_t j = 0; j < inputs.size(); ++j) std::printf(" %6zu", j);
        std::printf("\n");
        for (size_t i = 0; i < inputs.size(); ++i) {
          std::printf("%-4zu", i);
          for (size_t j = 0; j < inputs.size(); ++j) std::printf(" %6.3f", cosine(emb_all[i], emb_all[j]));
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
