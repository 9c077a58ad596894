// Sub-commands of the `spinel` program. Each takes the arguments after its
// name and returns the process exit status; errors are printed to stderr.
#pragma once

namespace spinel::cli {

int cmd_convert(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
// spinel tokenize (MODEL.spnl | --tokenizer FILE) (--text T ... | --input FILE)
// prints one JSON object per input: {"ids": [...], "tokens": [...]}.
int cmd_tokenize(int argc, char** argv);
// spinel bench MODEL.spnl [options]: MLPerf-style server / single-stream /
// offline measurements (tools/spinel/bench/); --json writes
// docs/bench_schema.md's report.
int cmd_bench(int argc, char** argv);

}  // namespace spinel::cli
