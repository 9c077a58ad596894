// JSON reader and quote(): values, escapes, error positions.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/error.h"
#include "runtime/util/json.h"

using spinel::json::parse;
using spinel::json::quote;
using spinel::json::Value;

namespace {

// The message of the spinel::Error that parsing `text` throws ("" if none).
std::string parse_error(const std::string& text) {
  try {
    parse(text, "t.json");
  } catch (const spinel::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("json: scalars") {
  CHECK(parse("null", "t").is_null());
  CHECK(parse(" true ", "t").b == true);
  CHECK(parse("false", "t").is_bool());
  CHECK(parse("0", "t").num == 0);
  CHECK(parse("-0", "t").num == 0);
  CHECK(parse("42", "t").num == 42);
  CHECK(parse("-17.25", "t").num == -17.25);
  CHECK(parse("1e3", "t").num == 1000);
  CHECK(parse("1.5E-2", "t").num == doctest::Approx(0.015));
  CHECK(parse("2E+2", "t").num == 200);
  CHECK(parse("\"abc\"", "t").str == "abc");
}

TEST_CASE("json: objects keep insertion order and nest") {
  const Value v = parse(R"({"z": 1, "a": [true, null, {"k": "v"}], "m": {}})", "t");
  REQUIRE(v.is_object());
  REQUIRE(v.obj.size() == 3);
  CHECK(v.obj[0].first == "z");
  CHECK(v.obj[1].first == "a");
  CHECK(v.obj[2].first == "m");
  const Value* a = v.find("a");
  REQUIRE(a);
  REQUIRE(a->is_array());
  REQUIRE(a->arr.size() == 3);
  CHECK(a->arr[0].b);
  CHECK(a->arr[1].is_null());
  REQUIRE(a->arr[2].find("k"));
  CHECK(a->arr[2].find("k")->str == "v");
  CHECK(v.find("m")->obj.empty());
  CHECK(v.find("missing") == nullptr);
  CHECK(a->find("k") == nullptr);  // not an object
  CHECK(parse("[]", "t").arr.empty());
  CHECK(parse("[ [ [ ] ] ]", "t").arr.at(0).arr.at(0).arr.empty());
}

TEST_CASE("json: string escapes") {
  CHECK(parse(R"("a\"b\\c\/d\be\ff\ng\rh\ti")", "t").str == "a\"b\\c/d\be\ff\ng\rh\ti");
  CHECK(parse(R"("\u0041\u00e9\u20AC")", "t").str == "A\xC3\xA9\xE2\x82\xAC");  // A é €
  CHECK(parse(R"("\u0000")", "t").str == std::string(1, '\0'));
  // U+1F600 as a surrogate pair -> 4-byte UTF-8.
  CHECK(parse(R"("\ud83d\ude00")", "t").str == "\xF0\x9F\x98\x80");
  CHECK(parse(R"("\uDBFF\uDFFF")", "t").str == "\xF4\x8F\xBF\xBF");  // U+10FFFF
  // Raw UTF-8 passes through unchanged.
  CHECK(parse("\"caf\xC3\xA9 \xE5\x8C\x97\"", "t").str == "caf\xC3\xA9 \xE5\x8C\x97");
}

TEST_CASE("json: errors name the input, line and column") {
  CHECK(parse_error("{\n  \"a\": 1,\n}") ==
        "t.json: line 3 column 1: expected a string key, got '}'");
  CHECK(parse_error("[1, 2") ==
        "t.json: line 1 column 6: expected ',' or ']' in array, got end of input");
  CHECK(parse_error("") == "t.json: line 1 column 1: unexpected end of input, expected a value");
  CHECK(parse_error("  \"abc") == "t.json: line 1 column 3: unterminated string");
  CHECK(parse_error("012") == "t.json: line 1 column 1: leading zero in number");
  CHECK(parse_error("{} x") == "t.json: line 1 column 4: unexpected data after the JSON value");

  const char* bad[] = {
      "[1,]",
      "{\"a\" 1}",
      "{\"a\":}",
      "{a:1}",
      "tru",
      "nul",
      "+1",
      "1.",
      ".5",
      "1e",
      "-",
      "--1",
      "\"\\x\"",
      "\"\\u12G4\"",
      "\"\\u12\"",
      "\"\\ud83d\"",
      "\"\\ud83dx\"",
      "\"\\ude00\"",
      "\"\\ud83d\\u0041\"",
      "\"tab\there\"",
      "\"new\nline\"",
      "[1 2]",
      "{\"a\":1 \"b\":2}",
      "'single'",
      "[1] [2]",
      "NaN",
      "Infinity",
      "1e999",
      "\"\xC3\"",
      "\"\xFF\"",
      "\"\xED\xA0\x80\"",  // bad UTF-8, encoded surrogate
  };
  for (const char* text : bad) {
    INFO("input: " << text);
    const std::string msg = parse_error(text);
    CHECK(msg.rfind("t.json: line ", 0) == 0);
  }
}

TEST_CASE("json: deep nesting is an error, not a crash") {
  const std::string deep(100000, '[');
  CHECK(parse_error(deep).find("nesting deeper") != std::string::npos);
  std::string ok;
  for (int i = 0; i < 100; ++i) ok += "[";
  for (int i = 0; i < 100; ++i) ok += "]";
  CHECK_NOTHROW(parse(ok, "t"));
}

TEST_CASE("json: quote") {
  CHECK(quote("") == "\"\"");
  CHECK(quote("plain") == "\"plain\"");
  CHECK(quote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(quote("\n\r\t\b\f") == "\"\\n\\r\\t\\b\\f\"");
  CHECK(quote(std::string("\x01\x1f\x7f", 3)) == "\"\\u0001\\u001f\\u007f\"");
  CHECK(quote(std::string("nul\0x", 5)) == "\"nul\\u0000x\"");
  CHECK(quote("caf\xC3\xA9 \xF0\x9F\x98\x80") == "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"");
  // Invalid UTF-8 bytes become U+FFFD, one per bad byte.
  CHECK(quote("a\xFF"
              "b") ==
        "\"a\xEF\xBF\xBD"
        "b\"");
  CHECK(quote("\xC3") == "\"\xEF\xBF\xBD\"");                                  // truncated sequence
  CHECK(quote("\xC0\xAF") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                  // overlong '/'
  CHECK(quote("\xED\xA0\x80") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // surrogate
  // What quote() writes parses back to the same (valid) string.
  const std::string s = "x\"\\\n\x01\xC3\xA9\xF0\x9F\x98\x80";
  CHECK(parse(quote(s), "t").str == s);
}

TEST_CASE("json: parse_file") {
  const auto path = std::filesystem::temp_directory_path() / "spinel_test_json_parse_file.json";
  {
    std::ofstream f(path);
    f << "{\"k\": [1, 2, 3]}\n";
  }
  const Value v = spinel::json::parse_file(path.string());
  CHECK(v.find("k")->arr.size() == 3);
  {
    std::ofstream f(path);
    f << "{\"k\": [1, 2, 3}\n";
  }
  try {
    spinel::json::parse_file(path.string());
    FAIL("expected an error");
  } catch (const spinel::Error& e) {
    CHECK(std::string(e.what()) ==
          path.string() + ": line 1 column 15: expected ',' or ']' in array, got '}'");
  }
  std::filesystem::remove(path);
  try {
    spinel::json::parse_file(path.string());
    FAIL("expected an error");
  } catch (const spinel::Error& e) {
    CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
  }
}
