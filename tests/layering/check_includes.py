#!/usr/bin/env python3
"""The layering of spinel, checked on every #include "..." of the sources.

Data flows one way: ONNX -> converters (+ models/) -> .spnl -> runtime session ->
backend -> kernels. Each folder may include only the folders listed for it
below; the CLI and the C API reach kernels only through the runtime. Exits 1
naming every include that breaks a rule (run by ctest as `layering`)."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# folder -> include prefixes it may use (its own folder is always allowed).
ALLOWED = {
    "kernels/reference": ["kernels/backend.h", "kernels/int8.h", "kernels/reference/", "runtime/ir.h"],
    "kernels/cpu": ["kernels/backend.h", "kernels/int8.h", "kernels/cpu/", "kernels/reference/",
                    "runtime/ir.h"],
    # spinel::Error (header-only use: the class, not fail()) for device errors.
    "kernels/cuda": ["kernels/backend.h", "kernels/int8.h", "kernels/cuda/", "runtime/ir.h",
                     "runtime/error.h"],
    "kernels": ["kernels/", "runtime/ir.h"],
    # The runtime sees kernels through the operator interface; platform.cpp
    # (CPU report, ISA cap) is the one door to the cpu backend's ISA probe.
    "runtime": ["runtime/", "kernels/backend.h", "models/registry.h", "spinel/spinel.h"],
    # The importer core knows no family (models/ registers into it), and uses
    # the kernel-choice table and block-sparsity measure for --quant.
    "converters": ["converters/", "runtime/", "models/registry.h", "kernels/cpu/select.h",
                   "kernels/cpu/qgemm.h"],
    "models": ["models/", "converters/", "runtime/error.h", "runtime/ir.h", "runtime/spnl.h"],
    # The CLI: the runtime's and the converters' public headers only.
    "tools/spinel": ["tools/spinel/", "runtime/", "converters/convert.h", "converters/onnx_import.h",
                     "converters/quantize.h", "converters/calibrate.h"],
}
# Single files with a documented exception.
FILE_EXCEPTIONS = {
    # (select.h: the CPU report states what the one kernel-choice function picks here.)
    "runtime/platform.cpp": ["kernels/cpu/isa.h", "kernels/cpu/f32_isa.h", "kernels/cpu/qgemm.h",
                             "kernels/cpu/select.h"],
}


def rules_for(rel):
    best = None
    for folder in ALLOWED:
        if rel.startswith(folder + "/") and (best is None or len(folder) > len(best)):
            best = folder
    return best


def main():
    bad = []
    checked = 0
    for path in sorted(ROOT.glob("**/*")):
        if path.suffix not in (".h", ".cpp", ".c", ".inc", ".cu", ".cuh") or not path.is_file():
            continue
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("build", ".venv", "work/")):
            continue
        folder = rules_for(rel)
        if folder is None:
            continue
        allowed = ALLOWED[folder] + [folder + "/"] + FILE_EXCEPTIONS.get(rel, [])
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if not m:
                continue
            checked += 1
            inc = m.group(1)
            if "/" not in inc:  # same-directory include
                continue
            if not any(inc == a or (a.endswith("/") and inc.startswith(a)) for a in allowed):
                bad.append(f"{rel}:{n}: includes \"{inc}\", which {folder}/ may not use")
    for b in bad:
        print(b)
    print(f"{checked} includes checked, {len(bad)} against the layering")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
