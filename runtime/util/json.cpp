// Recursive-descent JSON parser (RFC 8259). Strict: no comments, no trailing
// commas, no leading zeros, no raw control characters in strings. Nesting is
// capped so hostile input cannot overflow the stack.
#include "runtime/util/json.h"

#include "runtime/tokenizer/text.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/util/file_io.h"

namespace spinel::json {

const Value* Value::find(std::string_view key) const {
  if (type != Type::Object) return nullptr;
  for (const auto& kv : obj) {
    if (kv.first == key) return &kv.second;
  }
  return nullptr;
}

namespace {

constexpr int kMaxDepth = 512;

void append_utf8(std::string& out, uint32_t cp) { text::append_utf8(out, static_cast<char32_t>(cp)); }

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not valid
// (overlong forms, surrogates and values past U+10FFFF are invalid).
size_t utf8_valid_length(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return 1;
  size_t n;
  uint32_t min;
  uint32_t cp;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

class Parser {
 public:
  Parser(std::string_view text, const std::string& what) : s_(text), what_(what) {}

  Value parse_document() {
    // A UTF-8 byte order mark is tolerated: some editors write one.
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& msg, size_t at) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    fail(what_, ": line ", line, " column ", col, ": ", msg);
  }
  [[noreturn]] void error(const std::string& msg) const { error(msg, pos_); }

  std::string describe_here() const {
    if (pos_ >= s_.size()) return "end of input";
    const char c = s_[pos_];
    if (c >= 0x20 && c < 0x7F) return std::string("'") + c + "'";
    std::ostringstream os;
    os << "byte 0x" << std::hex << (static_cast<unsigned>(c) & 0xFF);
    return os.str();
  }

  void skip_ws() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect_literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) != lit)
      error("invalid literal, expected '" + std::string(lit) + "'");
    pos_ += lit.size();
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than 512 levels");
    if (pos_ >= s_.size()) error("unexpected end of input, expected a value");
    Value v;
    switch (s_[pos_]) {
      case '{':
        parse_object(v, depth);
        break;
      case '[':
        parse_array(v, depth);
        break;
      case '"':
        v.type = Value::Type::String;
        v.str = parse_string();
        break;
      case 't':
        expect_literal("true");
        v.type = Value::Type::Bool;
        v.b = true;
        break;
      case 'f':
        expect_literal("false");
        v.type = Value::Type::Bool;
        break;
      case 'n':
        expect_literal("null");
        break;
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) {
          v.type = Value::Type::Number;
          v.num = parse_number();
        } else {
          error("unexpected " + describe_here() + ", expected a value");
        }
    }
    return v;
  }

  void parse_object(Value& v, int depth) {
    v.type = Value::Type::Object;
    ++pos_;  // '{'
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"')
        error("expected a string key, got " + describe_here());
      std::string key = parse_string();
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':')
        error("expected ':' after key, got " + describe_here());
      ++pos_;
      skip_ws();
      Value item = parse_value(depth + 1);
      v.obj.emplace_back(std::move(key), std::move(item));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return;
      }
      error("expected ',' or '}' in object, got " + describe_here());
    }
  }

  void parse_array(Value& v, int depth) {
    v.type = Value::Type::Array;
    ++pos_;  // '['
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      v.arr.push_back(parse_value(depth + 1));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return;
      }
      error("expected ',' or ']' in array, got " + describe_here());
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_ + k];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        v |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        v |= c - 'A' + 10;
      } else {
        error("invalid hex digit in \\u escape", pos_ + k);
      }
    }
    pos_ += 4;
    return v;
  }

  std::string parse_string() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) error("unterminated string", start);
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("raw control character in string (must be escaped)");
      if (c != '\\') {
        // Copy a whole UTF-8 sequence; malformed bytes are an error rather
        // than silently passed on into token strings.
        const size_t n = utf8_valid_length(s_, pos_);
        if (n == 0) error("invalid UTF-8 in string");
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) error("unterminated string", start);
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const size_t esc = pos_ - 2;
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (s_.substr(pos_, 2) != "\\u") error("unpaired high surrogate in \\u escape", esc);
            pos_ += 2;
            const uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF)
              error("high surrogate not followed by a low surrogate", esc);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired low surrogate in \\u escape", esc);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          pos_ -= 2;
          error(std::string("invalid escape '\\") + e + "'");
      }
    }
  }

  double parse_number() {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t d0 = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - d0;
    };
    if (s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
      if (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9')
        error("leading zero in number", start);
    } else if (digits() == 0) {
      error("invalid number", start);
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) error("expected digits after '.' in number", start);
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) error("expected digits in exponent", start);
    }
    // The grammar is checked above; strtod only converts (on a NUL-terminated copy).
    const std::string text(s_.substr(start, pos_ - start));
    errno = 0;
    const double v = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(v)) error("number out of range", start);
    return v;
  }

  std::string_view s_;
  const std::string& what_;
  size_t pos_ = 0;
};

}  // namespace

Value parse(std::string_view text, const std::string& what) {
  return Parser(text, what).parse_document();
}

Value parse_file(const std::string& path) {
  // tokenizer.json files are a few MB; 1 GiB is far beyond any real one.
  const std::vector<char> bytes = read_regular_file(path, "JSON file", uint64_t{1} << 30);
  return parse(std::string_view(bytes.data(), bytes.size()), path);
}

std::string quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = utf8_valid_length(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for one bad byte, then resync
        ++i;
      } else {
        out.append(s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
  return out;
}

}  // namespace spinel::json
