"""The hostile-file corpus (make_corpus.py) through the CLI, one test per (case, command).

For every case: an exit status > 0 (2 where the case says so) and never a signal, a
message on stderr with the case's substrings, nothing on stdout for `run`, no sign of a
crash or a sanitizer report, and the files around unchanged (for convert: no output
and no temporary file). SPINEL_BIN picks the binary (default build/spinel), e.g.
build-asan/spinel. SPINEL_KEEP_CORPUS=1 keeps the generated files.
"""

import os
import subprocess

import pytest

import make_corpus

CRASH_MARKERS = ("Sanitizer", "runtime error", "Segmentation", "terminate called", "Aborted",
                 "core dumped")


def run_spinel(spinel, root, argv, timeout):
    try:
        return subprocess.run([spinel.bin, *argv], cwd=root, capture_output=True, text=True,
                              errors="replace", stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"spinel {' '.join(argv)} did not finish within {timeout} s "
                    f"(blocked on a FIFO?)")


def _shown(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")


def check_entry(e, root, p):
    cmd = " ".join(e["argv"])
    err = p.stderr
    tail = err[-3000:]
    print(f"exit {p.returncode}: {_shown(err)}")  # shown by pytest -rA / on failure
    assert p.returncode >= 0, f"`spinel {cmd}` killed by signal {-p.returncode}\n{tail}"
    for m in CRASH_MARKERS:
        assert m not in err, f"`spinel {cmd}`: stderr shows a crash ({m!r}):\n{tail}"
    if e["exit"] == "fail":
        assert p.returncode > 0, f"`spinel {cmd}` ({e['what']}) succeeded:\n{tail}"
    elif e["exit"] == 2:
        assert p.returncode == 2, f"`spinel {cmd}` ({e['what']}): exit {p.returncode}, " \
                                  f"expected 2 (usage error)\n{tail}"
    if p.returncode != 0:
        assert err.strip(), f"`spinel {cmd}` failed without a message"
        low = err.lower()
        for needle in e["expect"]:
            alts = needle if isinstance(needle, list) else [needle]
            assert any(a.lower() in low for a in alts), \
                f"`spinel {cmd}` ({e['what']}): stderr mentions none of {alts}:\n{tail}"
    if e["argv"][0] == "run" and e["stdout_empty"]:
        assert p.stdout == "", f"`spinel {cmd}` printed to stdout:\n{p.stdout[:500]}"

    for rel, before in e["unchanged"].items():
        after = make_corpus.snapshot(root / rel)
        assert after == before, f"`spinel {cmd}` changed {rel}: {before} -> {after}"
    for rel in e["absent"]:
        assert not os.path.lexists(root / rel), f"`spinel {cmd}` created {rel}"
    for rel, names in e["listings"].items():
        now = sorted(set(os.listdir(root / rel)) - set(e["may_create"]))
        assert now == names, f"`spinel {cmd}` changed the folder {rel}: new " \
                             f"{sorted(set(now) - set(names))}, gone {sorted(set(names) - set(now))}"
    for rel in e["listings"]:
        for name in e["may_create"]:  # a successful write must be a plain new file
            made = root / rel / name
            if os.path.lexists(made):
                assert not made.is_symlink() and made.is_file(), f"{made} is not a plain file"


@pytest.mark.parametrize("entry_id", make_corpus.entry_ids())
def test_hostile(entry_id, corpus, spinel):
    root, entries = corpus
    e = entries[entry_id]
    p = run_spinel(spinel, root, e["argv"], e["timeout"])
    check_entry(e, root, p)


# ---- controls: the corpus's sources are valid, so a failure above is about the damage ----

def test_control_good_spnl(corpus, spinel):
    root, _ = corpus
    p = run_spinel(spinel, root, ["inspect", "good.spnl"], 120)
    assert p.returncode == 0, p.stderr[-2000:]
    p = run_spinel(spinel, root, ["run", "good.spnl", *make_corpus.RUN_ARGS], 120)
    assert p.returncode == 0 and '"tokens":3' in p.stdout.replace(" ", ""), p.stderr[-2000:]


def test_control_onnx_converts(corpus, spinel, tmp_path):
    root, _ = corpus
    out = tmp_path / "ok.spnl"
    p = run_spinel(spinel, root, ["convert", "onnx_src/model.onnx", "-o", str(out)], 120)
    assert p.returncode == 0 and out.is_file(), p.stderr[-2000:]


def test_case_names_are_unique():
    ids = make_corpus.entry_ids()
    assert len(ids) == len(set(ids))
