// A small JSON reader (RFC 8259) for tokenizer.json and config files, and
// string escaping for the JSON the CLI prints. Parse errors name the line and
// column.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace spinel::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Value> arr;
  // Insertion order is kept: tokenizer.json vocabularies are objects.
  std::vector<std::pair<std::string, Value>> obj;

  bool is_null() const { return type == Type::Null; }
  bool is_object() const { return type == Type::Object; }
  bool is_array() const { return type == Type::Array; }
  bool is_string() const { return type == Type::String; }
  bool is_number() const { return type == Type::Number; }
  bool is_bool() const { return type == Type::Bool; }
  // nullptr when absent or not an object.
  const Value* find(std::string_view key) const;
};

// Throws spinel::Error("<what>: line L column C: ...") on malformed input.
Value parse(std::string_view text, const std::string& what);
Value parse_file(const std::string& path);

// "..." with JSON escapes; bytes that are not valid UTF-8 are replaced by U+FFFD.
std::string quote(std::string_view s);

}  // namespace spinel::json
