#include "models/registry.h"

namespace spinel::models {

const std::vector<FamilyInfo>& families() {
  static const std::vector<FamilyInfo> all = {
      {"bert", "BERT", "wordpiece"},
      {"distilbert", "DistilBERT", "wordpiece"},
      {"dnabert2", "DNABERT-2", "bpe"},
  };
  return all;
}

const FamilyInfo* find_family(const std::string& architecture) {
  for (const FamilyInfo& f : families())
    if (architecture == f.name) return &f;
  return nullptr;
}

std::string family_names() {
  std::string s;
  for (const FamilyInfo& f : families()) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

}  // namespace spinel::models
