// Text helpers the tokenizers share: UTF-8 <-> code points, HF's notion of
// whitespace and lower case, and splitting text at added tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace spinel::text {

// Invalid bytes become U+FFFD, so arbitrary input never throws.
std::u32string decode_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::u32string& s);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t c);
// Rust's char::to_lowercase, one character at a time (so no final sigma).
void append_lower(std::u32string& out, char32_t c);
// For single_word added tokens: letters, digits and '_' (and non-ASCII
// letter-like characters).
bool is_word_char(char32_t c);

// Splits text at added tokens, leftmost longest match first, as HF's
// AddedVocabulary does. `patterns[k]` is what added[k] matches (raw, or
// normalised for `normalized` tokens); only tokens whose `normalized` equals
// `normalized_pass` are looked for. Pieces of plain text get id -1.
void split_added(const std::u32string& text, const std::vector<AddedToken>& added,
                 const std::vector<std::u32string>& patterns, bool normalized_pass,
                 std::vector<std::pair<std::u32string, int32_t>>& out);

// Tokenizes `text` in pieces cut where `can_cut(text, i)` says a cut before
// byte i changes no id (looked for from every 16 KiB on), until more than
// `limit` ids are out. Sets *complete when the whole text was read.
std::vector<int32_t> tokenize_up_to(
    std::string_view text, size_t limit, bool* complete,
    const std::function<bool(std::string_view, size_t)>& can_cut,
    const std::function<std::vector<int32_t>(std::string_view)>& tokenize);

}  // namespace spinel::text
