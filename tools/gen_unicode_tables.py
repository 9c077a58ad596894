#!/usr/bin/env python3
"""Generates runtime/tokenizer/unicode_tables.{h,cpp} for the WordPiece tokenizer.

The tables reproduce what HF `tokenizers` (the Rust library behind
BertTokenizerFast) does in its BERT normalizer and pre-tokenizer:

  * character classes: "other" (Cc/Cf/Co/Cs, dropped by clean_text),
    punctuation (P*, split off by the pre-tokenizer) and non-spacing marks
    (Mn, dropped when stripping accents);
  * the canonical decomposition (NFD) of each character with the Mn marks
    already removed -- what "strip accents" leaves of it;
  * the canonical combining class of the few characters that survive accent
    stripping with a non-zero class (they still take part in NFD reordering);
  * the lowercase mapping of Rust's char::to_lowercase (per character, so no
    final-sigma rule; U+0130 expands to two characters).

Source of truth is Python's unicodedata (Unicode 14.0 in Python 3.11), with one
correction: `tokenizers` 0.19 takes categories and NFD from crates built on
Unicode 8.0. Characters assigned later are unknown to it (it treats them like
ordinary letters: kept, not split, not stripped, not decomposed), and three
characters changed category since. HF_UNKNOWN_RANGES / HF_OLD_CATEGORY list
the ones where that changes the result; they were found by running every code
point through tokenizers' BertNormalizer + BertPreTokenizer. `--verify`
repeats that check against the installed `tokenizers` (takes about a minute).
Lowercasing comes from Rust's std, which is current, so it needs no correction.

Usage: python tools/gen_unicode_tables.py [--verify]
"""

import os
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_H = os.path.join(ROOT, "runtime", "tokenizer", "unicode_tables.h")
OUT_CPP = os.path.join(ROOT, "runtime", "tokenizer", "unicode_tables.cpp")

# Assigned after Unicode 8.0 and different from a plain letter in Unicode 14
# (punctuation, format, marks, or decomposable): HF treats these as letters.
HF_UNKNOWN_RANGES = [
    (0x61D, 0x61D), (0x7FD, 0x7FD), (0x890, 0x891), (0x898, 0x89F), (0x8CA, 0x8E2),
    (0x9FD, 0x9FE), (0xA76, 0xA76), (0xAFA, 0xAFF), (0xB55, 0xB55), (0xC04, 0xC04),
    (0xC3C, 0xC3C), (0xC77, 0xC77), (0xC84, 0xC84), (0xD00, 0xD00), (0xD3B, 0xD3C),
    (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F), (0x1885, 0x1886), (0x1ABF, 0x1ACE),
    (0x1B7D, 0x1B7E), (0x1DF6, 0x1DFB), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0xA82C, 0xA82C),
    (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD), (0x10D24, 0x10D27),
    (0x10EAB, 0x10EAD), (0x10F46, 0x10F50), (0x10F55, 0x10F59), (0x10F82, 0x10F89),
    (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2), (0x110CD, 0x110CD),
    (0x111CF, 0x111CF), (0x1123E, 0x1123E), (0x1133B, 0x1133B), (0x11438, 0x1143F),
    (0x11442, 0x11444), (0x11446, 0x11446), (0x1144B, 0x1144F), (0x1145A, 0x1145B),
    (0x1145D, 0x1145E), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1182F, 0x11837),
    (0x11839, 0x1183B), (0x11938, 0x11938), (0x1193B, 0x1193C), (0x1193E, 0x1193E),
    (0x11943, 0x11946), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0),
    (0x119E2, 0x119E2), (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A47),
    (0x11A51, 0x11A56), (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A9C),
    (0x11A9E, 0x11AA2), (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F),
    (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0),
    (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36), (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91),
    (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x11EF7, 0x11EF8),
    (0x11FFF, 0x11FFF), (0x12FF1, 0x12FF2), (0x13430, 0x13438), (0x16E97, 0x16E9A),
    (0x16F4F, 0x16F4F), (0x16FE2, 0x16FE2), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021),
    (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE),
    (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A), (0x1E95E, 0x1E95F),
]
# Category changed since Unicode 8.0; HF still uses the old one.
HF_OLD_CATEGORY = {0x166D: "Po", 0x1734: "Mn", 0x111C9: "Po"}
HF_OLD_CCC = {0x1734: 9}

# Kept in sync with is_chinese_char() in wordpiece.cpp (used by --verify only).
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
# Rust's char::is_whitespace (the White_Space property); kept in sync with wordpiece.cpp.
WHITESPACE = set([0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F,
                  0x205F, 0x3000] + list(range(0x2000, 0x200B)))

ASCII_PUNCT = set(list(range(33, 48)) + list(range(58, 65)) + list(range(91, 97)) + list(range(123, 127)))

CLS_LETTER, CLS_OTHER, CLS_PUNCT, CLS_MN, CLS_MN_STARTER = 0, 1, 2, 3, 4

_unknown = set()
for lo, hi in HF_UNKNOWN_RANGES:
    _unknown.update(range(lo, hi + 1))


def category(c):
    if c in _unknown:
        return "Cn"
    return HF_OLD_CATEGORY.get(c) or unicodedata.category(chr(c))


def ccc(c):
    if c in _unknown:
        return 0
    if c in HF_OLD_CCC:
        return HF_OLD_CCC[c]
    return unicodedata.combining(chr(c))


def char_class(c):
    cat = category(c)
    if cat in ("Cc", "Cf", "Co", "Cs"):  # HF's is_other() misses Cn
        return CLS_OTHER
    if cat[0] == "P":
        return CLS_PUNCT
    if cat == "Mn":
        # A dropped mark with class 0 still ends a run of reorderable marks.
        return CLS_MN if ccc(c) else CLS_MN_STARTER
    return CLS_LETTER


def is_hangul_syllable(c):
    return 0xAC00 <= c <= 0xD7A3


def stripped_decomposition(c):
    """NFD of one character minus its Mn marks, as code points."""
    if c in _unknown:
        return [c]
    return [ord(x) for x in unicodedata.normalize("NFD", chr(c)) if category(ord(x)) != "Mn"]


def all_code_points():
    return (c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


def build():
    classes = []  # [lo, hi, cls]
    for c in all_code_points():
        k = char_class(c)
        if k == CLS_LETTER:
            continue
        if classes and classes[-1][1] == c - 1 and classes[-1][2] == k:
            classes[-1][1] = c
        else:
            classes.append([c, c, k])

    decomp = {}
    for c in all_code_points():
        if is_hangul_syllable(c) or char_class(c) in (CLS_MN, CLS_MN_STARTER):
            continue  # Hangul is algorithmic; lone marks are dropped by class
        d = stripped_decomposition(c)
        if d != [c]:
            decomp[c] = d

    # Characters left after stripping that NFD may still reorder.
    ccc_list = sorted((c, ccc(c)) for c in all_code_points()
                      if ccc(c) and char_class(c) not in (CLS_MN, CLS_MN_STARTER))

    lower_runs = []  # [lo, hi, delta, stride] for one-to-one mappings
    lower_multi = {}
    for c in all_code_points():
        low = chr(c).lower()  # per character, like Rust's char::to_lowercase
        if low == chr(c):
            continue
        if len(low) > 1:
            lower_multi[c] = [ord(x) for x in low]
            continue
        delta = ord(low) - c
        if lower_runs:
            lo, hi, d, stride = lower_runs[-1]
            if d == delta and (stride == 0 and c - hi in (1, 2) or stride and c - hi == stride):
                lower_runs[-1][1] = c
                lower_runs[-1][3] = c - hi
                continue
        lower_runs.append([c, c, delta, 0])
    for r in lower_runs:
        r[3] = r[3] or 1
    return classes, decomp, ccc_list, lower_runs, lower_multi


def wrap(items, indent="    ", width=100):
    """Comma-separated items, as many per line as fit in `width` columns."""
    lines, cur = [], indent
    for item in items:
        piece = item + ","
        if cur != indent and len(cur) + 1 + len(piece) > width:
            lines.append(cur)
            cur = indent
        cur += ("" if cur == indent else " ") + piece
    if cur != indent:
        lines.append(cur)
    return "\n".join(lines)


HEADER = """// Generated by tools/gen_unicode_tables.py -- do not edit by hand.
// Unicode data for the BERT normaliser, matching HF tokenizers 0.19
// (Unicode 14.0 data, with the Unicode 8.0 view of categories and NFD that
// tokenizers has; see the script for why and how).
#pragma once

#include <cstddef>
#include <cstdint>

namespace spinel::unicode {

enum CharClass : uint8_t {
  kLetter = 0,       // anything not listed below
  kOther = 1,        // Cc, Cf, Co, Cs: removed by clean_text
  kPunct = 2,        // P*: split off by the pre-tokenizer
  kMark = 3,         // Mn with a non-zero combining class: removed by strip_accents
  kMarkStarter = 4,  // Mn with combining class 0: removed by strip_accents
};

struct ClassRange {
  uint32_t lo, hi;
  uint8_t cls;
};
// NFD of a character with Mn marks removed: pool[offset, offset + len).
struct Decomposition {
  uint32_t cp;
  uint16_t offset;
  uint8_t len;
};
struct CombiningClass {
  uint32_t cp;
  uint8_t ccc;
};
// cp in [lo, hi] with (cp - lo) % stride == 0 lowercases to cp + delta.
struct LowerRun {
  uint32_t lo, hi;
  int32_t delta;
  uint32_t stride;
};
struct LowerMulti {
  uint32_t cp;
  uint32_t out[3];  // zero-terminated when shorter
};

extern const ClassRange kClassRanges[];
extern const size_t kClassRangeCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const uint32_t kDecompositionPool[];
extern const CombiningClass kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const LowerRun kLowerRuns[];
extern const size_t kLowerRunCount;
extern const LowerMulti kLowerMulti[];
extern const size_t kLowerMultiCount;

}  // namespace spinel::unicode
"""


def emit(classes, decomp, ccc_list, lower_runs, lower_multi):
    pool = []
    dec_items = []
    for c in sorted(decomp):
        d = decomp[c]
        dec_items.append("{0x%X, %d, %d}" % (c, len(pool), len(d)))
        pool.extend(d)
    assert len(pool) < 65536 and all(len(d) < 256 for d in decomp.values())
    for m in lower_multi.values():
        assert len(m) <= 3
    out = []
    out.append("// Generated by tools/gen_unicode_tables.py -- do not edit by hand.")
    out.append('#include "runtime/tokenizer/unicode_tables.h"')
    out.append("")
    out.append("namespace spinel::unicode {")
    out.append("")
    out.append("const ClassRange kClassRanges[] = {")
    out.append(wrap(["{0x%X, 0x%X, %d}" % tuple(r) for r in classes]))
    out.append("};")
    out.append("const size_t kClassRangeCount = sizeof(kClassRanges) / sizeof(kClassRanges[0]);")
    out.append("")
    out.append("const Decomposition kDecompositions[] = {")
    out.append(wrap(dec_items))
    out.append("};")
    out.append("const size_t kDecompositionCount = sizeof(kDecompositions) / sizeof(kDecompositions[0]);")
    out.append("const uint32_t kDecompositionPool[] = {")
    out.append(wrap(["0x%X" % x for x in pool]))
    out.append("};")
    out.append("")
    out.append("const CombiningClass kCombiningClasses[] = {")
    out.append(wrap(["{0x%X, %d}" % t for t in ccc_list]))
    out.append("};")
    out.append("const size_t kCombiningClassCount = sizeof(kCombiningClasses) / sizeof(kCombiningClasses[0]);")
    out.append("")
    out.append("const LowerRun kLowerRuns[] = {")
    out.append(wrap(["{0x%X, 0x%X, %d, %d}" % tuple(r) for r in lower_runs]))
    out.append("};")
    out.append("const size_t kLowerRunCount = sizeof(kLowerRuns) / sizeof(kLowerRuns[0]);")
    out.append("const LowerMulti kLowerMulti[] = {")
    for c in sorted(lower_multi):
        m = lower_multi[c] + [0] * (3 - len(lower_multi[c]))
        out.append("    {0x%X, {0x%X, 0x%X, 0x%X}}," % (c, *m))
    out.append("};")
    out.append("const size_t kLowerMultiCount = sizeof(kLowerMulti) / sizeof(kLowerMulti[0]);")
    out.append("")
    out.append("}  // namespace spinel::unicode")
    with open(OUT_H, "w", encoding="utf-8") as f:
        f.write(HEADER)
    with open(OUT_CPP, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def verify():
    """Runs every code point through HF's normalizer and pre-tokenizer and
    through a Python model built on the same rules as the tables."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                      strip_accents=True, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()

    def normalize(text):
        out = []
        for ch in text:
            c = ord(ch)
            if c in (0, 0xFFFD) or (c not in (9, 10, 13) and char_class(c) == CLS_OTHER):
                continue
            if c in WHITESPACE:
                out.append(" ")
            elif any(lo <= c <= hi for lo, hi in CJK_RANGES):
                # Padded first, decomposed after (compatibility ideographs change).
                out.append(" " + "".join(chr(x) for x in stripped_decomposition(c)) + " ")
            elif is_hangul_syllable(c):
                out.append(unicodedata.normalize("NFD", ch))
            else:
                out.append("".join(chr(x) for x in stripped_decomposition(c)))
        return "".join(ch.lower() for ch in "".join(out))

    def pre_tokenize(text):
        words, cur = [], ""
        for ch in text:
            c = ord(ch)
            if c in WHITESPACE:
                words, cur = words + ([cur] if cur else []), ""
            elif c in ASCII_PUNCT or char_class(c) == CLS_PUNCT:
                words, cur = words + ([cur] if cur else []) + [ch], ""
            else:
                cur += ch
        return words + ([cur] if cur else [])

    bad = 0
    for c in all_code_points():
        s = "a" + chr(c) + "b"
        got = [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))]
        want = pre_tokenize(normalize(s))
        if got != want:
            bad += 1
            if bad <= 20:
                print("mismatch U+%04X: hf=%r tables=%r" % (c, got, want))
    print("verify: %d mismatches" % bad)
    return bad == 0


def main():
    tables = build()
    emit(*tables)
    classes, decomp, ccc_list, lower_runs, lower_multi = tables
    print("classes %d, decompositions %d, ccc %d, lower runs %d, lower multi %d"
          % (len(classes), len(decomp), len(ccc_list), len(lower_runs), len(lower_multi)))
    if "--verify" in sys.argv[1:]:
        return 0 if verify() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
