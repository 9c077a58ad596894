// The model families spinel knows, as the runtime sees them: the architecture
// string stored in a .spnl resolves here. What a family's ONNX export looks
// like (recognition and IR building) is the converter side of the same
// module, registered in converters/ (see models/README.md).
#pragma once

#include <string>
#include <vector>

namespace spinel::models {

struct FamilyInfo {
  const char* name;            // the architecture string in .spnl files: "bert", "distilbert"
  const char* display;         // "BERT", "DistilBERT"
  const char* tokenizer_kind;  // the tokenizer its exports come with: "wordpiece"
};

// The family registered under `architecture`, or null.
const FamilyInfo* find_family(const std::string& architecture);
// Every registered family, in registration order.
const std::vector<FamilyInfo>& families();
// "bert, distilbert": for messages.
std::string family_names();

}  // namespace spinel::models
