// spinel: convert ONNX encoders to .spnl, run them, inspect them.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tools/spinel/commands.h"

namespace {

const char* kUsage =
    "spinel — CPU inference runtime for sparse and quantized transformer encoders\n"
    "\n"
    "usage: spinel <command> [options]\n"
    "\n"
    "commands:\n"
    "  convert   turn an ONNX BERT-family encoder and its tokenizer into one .spnl file\n"
    "  run       compute embeddings / hidden states for texts (JSON lines on stdout)\n"
    "  inspect   show a .spnl model's architecture, layers, tensors and size\n"
    "  tokenize  show the token ids a model's tokenizer produces\n"
    "  bench     measure latency under load and throughput (server, single stream, offline)\n"
    "\n"
    "`spinel <command> --help` explains each command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  // The OpenMP spin policy is set by the runtime itself, before libgomp
  // starts (runtime/preinit/spin_policy.c), for C API users too.
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::puts("spinel 0.1.0 (.spnl format 3)");
    return 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "convert") return spinel::cli::cmd_convert(argc - 2, argv + 2);
  if (cmd == "run") return spinel::cli::cmd_run(argc - 2, argv + 2);
  if (cmd == "inspect") return spinel::cli::cmd_inspect(argc - 2, argv + 2);
  if (cmd == "tokenize") return spinel::cli::cmd_tokenize(argc - 2, argv + 2);
  if (cmd == "bench") return spinel::cli::cmd_bench(argc - 2, argv + 2);
  std::fprintf(stderr, "spinel: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
