"""The CLI (and the C API) on bad input.

Every case must end with a non-zero exit status that is not a signal
(returncode > 0), a message on stderr that names the problem, nothing on
stdout for `run`, and -- for `convert` -- no output file created or changed
(and no temporary file left behind).
"""

import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

# The .spnl layout helpers (header, section walkers, checksum resealing) are shared
# with the hostile-file corpus.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hostile"))
import spnl_format as F  # noqa: E402


def expect_failure(p, *needles, usage=False):
    """p: CompletedProcess. needles: strings stderr must contain (case-insensitive)."""
    err = p.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    shown = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
    print(f"exit {p.returncode}: {shown}")
    assert p.returncode > 0, f"exit status {p.returncode} (negative = killed by a signal)\n{err[-2000:]}"
    if usage:
        assert p.returncode == 2, f"a bad command line should exit with 2, got {p.returncode}"
    assert err.strip(), "no message on stderr"
    low = err.lower()
    for n in needles:
        assert str(n).lower() in low, f"stderr does not mention {n!r}:\n{err[-2000:]}"
    for bad in ("segmentation", "core dumped", "terminate called", "sanitizer", "abort"):
        assert bad not in low, f"stderr shows a crash ({bad}):\n{err[-2000:]}"
    return err


@pytest.fixture(scope="module")
def tiny(converted):
    return converted("tiny17")


def read_header(data):
    return F.read_header(data)


def write_header(buf, h):
    """Writes the header and reseals the metadata checksum, so the loader gets past it
    to the check a case is about."""
    F.write_header(buf, h)
    F.reseal(buf)


def test_header_layout_is_as_documented(tiny):
    data = tiny[1].read_bytes()
    h = F.check_layout(data)  # offsets, sizes, order, alignment and both kinds of checksum
    assert h["magic"] == b"SPINEL\x1a\n" and h["version"] == 3
    assert h["size"] == len(data)
    for off, size in zip(h["offsets"], h["sizes"]):
        assert 128 <= off and off + size <= len(data)
    ents = F.walk_tensors(data)
    assert len(ents) > 10 and all(e.offset.value % 64 == 0 for e in ents)


# ---- damaged .spnl files ------------------------------------------------------------

def _corrupt_spnl(kind, data):
    """Returns (bytes, needles the message must contain)."""
    buf = bytearray(data)
    h = read_header(buf)
    n = len(buf)
    if kind == "empty":
        return b"", []
    if kind == "shorter_than_header":
        return bytes(buf[:100]), []
    if kind == "truncated_half":
        return bytes(buf[: n // 2]), ["truncated"]
    if kind == "truncated_one_byte":
        return bytes(buf[:-1]), ["truncated"]
    if kind == "truncated_header_patched":
        # The header's file size agrees with the cut file, so the sections must be checked.
        cut = h["offsets"][4] + h["sizes"][4] // 3
        h["size"] = cut
        write_header(buf, h)
        return bytes(buf[:cut]), ["data"]
    if kind == "bad_magic":
        buf[0:4] = b"XPIN"
        return bytes(F.reseal(buf)), ["magic"]
    if kind == "bad_version":
        h["version"] = 99
        write_header(buf, h)
        return bytes(buf), ["version"]
    if kind in ("old_version_1", "old_version_2"):
        h["version"] = int(kind[-1])
        write_header(buf, h)
        return bytes(buf), [f"version {kind[-1]}", "older spinel", "convert the ONNX model again"]
    if kind == "newer_version_4":
        h["version"] = 4
        write_header(buf, h)
        return bytes(buf), ["version 4", "newer spinel"]
    if kind == "unknown_op_attribute":
        g = F.walk_graph(buf)
        i = next(k for k, op in enumerate(g["ops"]) if op["kind"].value == F.ATTENTION)
        return bytes(F.add_op_attr(buf, i, "rotary", F.BOOL, True)), \
            [g["ops"][i]["name"].text, "'rotary'", "newer spinel"]
    if kind == "unknown_architecture":
        a = F.walk_config(buf)["architecture"]
        return bytes(F.splice(buf, a.length.at, a.end, F.pack_str("roberta"))), \
            ["architecture 'roberta' is not supported by this spinel (supported: bert"]
    if kind == "unknown_tokenizer_kind":
        k = F.walk_tokenizer(buf)["kind"]
        return bytes(F.splice(buf, k.length.at, k.end, F.pack_str("wordlevel"))), \
            ["tokenizer", "'wordlevel'", "supported: wordpiece"]
    if kind == "graph_offset_past_end":
        h["offsets"][2] = n + 4096
        write_header(buf, h)
        return bytes(buf), ["graph"]
    if kind == "tensors_offset_huge":
        h["offsets"][3] = 2 ** 63 + 64
        write_header(buf, h)
        return bytes(buf), ["tensor"]
    if kind == "config_offset_zero":
        h["offsets"][0] = 0
        write_header(buf, h)
        return bytes(buf), ["config"]
    if kind == "graph_size_huge":
        h["sizes"][2] = 2 ** 64 - 1
        write_header(buf, h)
        return bytes(buf), ["graph"]
    if kind == "tokenizer_offset_shifted":
        # Inside the file, but pointing at the wrong bytes: parsing must fail cleanly.
        h["offsets"][1] += 3
        write_header(buf, h)
        return bytes(buf), []
    if kind == "graph_offset_into_data":
        h["offsets"][2] = h["offsets"][4]
        write_header(buf, h)
        return bytes(buf), []
    if kind == "data_offset_unaligned":
        h["offsets"][4] += 8
        h["sizes"][4] -= 8
        write_header(buf, h)
        return bytes(buf), ["data"]
    raise AssertionError(kind)


SPNL_CASES = ["empty", "shorter_than_header", "truncated_half", "truncated_one_byte",
              "truncated_header_patched", "bad_magic", "bad_version", "old_version_1",
              "old_version_2", "newer_version_4", "unknown_op_attribute", "unknown_architecture",
              "unknown_tokenizer_kind",
              "graph_offset_past_end",
              "tensors_offset_huge", "config_offset_zero", "graph_size_huge",
              "tokenizer_offset_shifted", "graph_offset_into_data", "data_offset_unaligned"]


@pytest.mark.parametrize("kind", SPNL_CASES)
def test_damaged_spnl(kind, spinel, capi, tiny, tmp_path):
    bad, needles = _corrupt_spnl(kind, tiny[1].read_bytes())
    path = tmp_path / f"{kind}.spnl"
    path.write_bytes(bad)
    p = spinel.cli("run", path, "--ids", "101,7592,102", check=False)
    err = expect_failure(p, str(path), *needles)
    # Edited headers are resealed: the loader must stop at the damage, not the checksum.
    assert "checksum mismatch" not in err.lower()
    assert p.stdout == ""
    p = spinel.cli("inspect", path, check=False)
    expect_failure(p, str(path), *needles)
    # The C API reports SPINEL_INVALID_MODEL with a message instead of crashing.
    with pytest.raises(Exception) as e:
        capi.load(path)
    assert getattr(e.value, "status", None) == 2, str(e.value)
    assert str(path) in e.value.message


TENSOR_CASES = ["offset_unaligned", "offset_past_data", "nbytes_mismatch", "dtype_unknown",
                "dim_huge", "dim_negative", "name_length_huge", "count_huge"]


@pytest.mark.parametrize("kind", TENSOR_CASES)
def test_corrupted_tensor_table_entry(kind, spinel, capi, tiny, tmp_path):
    data = bytearray(tiny[1].read_bytes())
    h = read_header(data)
    ents = F.walk_tensors(data)
    e = ents[3]  # an entry in the middle of the table
    needles = ["tensor", e.name.text]
    if kind == "offset_unaligned":
        F.poke(data, e.offset, e.offset.value + 4)
    elif kind == "offset_past_data":
        F.poke(data, e.offset, (h["sizes"][4] + 4096) // 64 * 64)
    elif kind == "nbytes_mismatch":
        F.poke(data, e.nbytes, e.nbytes.value + 4)
    elif kind == "dtype_unknown":
        F.poke(data, e.dtype, 77)
    elif kind == "dim_huge":
        F.poke(data, e.shape[0], 2 ** 40)
    elif kind == "dim_negative":
        F.poke(data, e.shape[0], -3)
    elif kind == "name_length_huge":
        F.poke(data, e.name.length, 0x7FFFFFF0)
        needles = ["tensor"]
    elif kind == "count_huge":
        F.poke(data, F.tensor_count_field(data), 0xFFFFFFFF)
        needles = ["tensor"]
    F.reseal(data)  # the metadata checksum must not be what stops the file
    path = tmp_path / f"{kind}.spnl"
    path.write_bytes(bytes(data))
    p = spinel.cli("run", path, "--ids", "101,7592,102", check=False)
    err = expect_failure(p, str(path), *needles)
    assert "checksum mismatch" not in err.lower(), "resealed, so the loader should stop at the damaged field"
    assert p.stdout == ""
    with pytest.raises(Exception) as exc:
        capi.load(path)
    assert getattr(exc.value, "status", None) == 2, str(exc.value)


def test_aliased_tensor_offsets_do_not_crash(spinel, tiny, tmp_path):
    """Every tensor entry pointed at the first tensor's bytes (aligned, but overlapping):
    the model must fail cleanly or run, never crash."""
    data = bytearray(tiny[1].read_bytes())
    ents = F.walk_tensors(data)
    for e in ents[1:]:
        F.poke(data, e.offset, ents[0].offset.value)
    F.reseal(data)
    path = tmp_path / "aliased.spnl"
    path.write_bytes(bytes(data))
    p = spinel.cli("run", path, "--ids", "101,7592,102", check=False)
    assert p.returncode >= 0, f"killed by signal {-p.returncode}"
    if p.returncode != 0:
        expect_failure(p, str(path))


# ---- checksums ----------------------------------------------------------------------------

def _meta_spots(data):
    """(label, absolute byte position) of metadata bytes whose change keeps the file
    parseable: only the checksum can tell."""
    cfg, tok, g = F.walk_config(data), F.walk_tokenizer(data), F.walk_graph(data)
    ents = F.walk_tensors(data)
    ln = next(op for op in g["ops"] if op["kind"].value == F.LAYERNORM)
    return [("header_reserved", 120), ("config_source", cfg["source"].text_at),
            ("tokenizer_token", tok["vocab"][2000].text_at), ("graph_eps", ln["eps"].at),
            ("tensor_name", ents[3].name.text_at),
            ("padding", F.read_header(data)["offsets"][F.DATA] - 1)]


@pytest.mark.parametrize("spot", ["header_reserved", "config_source", "tokenizer_token",
                                  "graph_eps", "tensor_name", "padding"])
def test_metadata_flip_is_a_checksum_mismatch(spot, spinel, capi, tiny, tmp_path):
    data = bytearray(tiny[1].read_bytes())
    at = dict(_meta_spots(data))[spot]
    data[at] ^= 0x01  # not resealed
    path = tmp_path / f"flip_{spot}.spnl"
    path.write_bytes(bytes(data))
    for cmd in (["run", path, "--ids", "101,7592,102"], ["inspect", path]):
        p = spinel.cli(*cmd, check=False)
        expect_failure(p, str(path), "checksum mismatch")
        assert p.stdout == ""
    with pytest.raises(Exception) as e:
        capi.load(path)
    assert getattr(e.value, "status", None) == 2 and "checksum" in e.value.message


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_weight_flip_names_the_tensor(which, spinel, capi, tiny, tmp_path):
    data = bytearray(tiny[1].read_bytes())
    ents = F.walk_tensors(data)
    e = {"first": ents[0], "middle": ents[len(ents) // 2], "last": ents[-1]}[which]
    at = F.read_header(data)["offsets"][F.DATA] + e.offset.value + e.nbytes.value // 2
    data[at] ^= 0x40  # a weight byte; the metadata checksum does not cover it
    path = tmp_path / f"weight_{which}.spnl"
    path.write_bytes(bytes(data))
    for cmd in (["run", path, "--ids", "101,7592,102"], ["inspect", path]):
        p = spinel.cli(*cmd, check=False)
        expect_failure(p, str(path), "checksum", e.name.text)
        assert p.stdout == ""
    with pytest.raises(Exception) as exc:
        capi.load(path)
    assert getattr(exc.value, "status", None) == 2 and e.name.text in exc.value.message


# ---- bad ONNX files (convert) -----------------------------------------------------------

def convert_must_fail(spinel, onnx_path, out_path, *needles, extra=()):
    """Runs convert, checks the failure, and that the output folder is unchanged."""
    out_path = pathlib.Path(out_path)
    before = out_path.read_bytes() if out_path.exists() else None
    listing = sorted(os.listdir(out_path.parent))
    p = spinel.cli("convert", onnx_path, "-o", out_path, *extra, check=False)
    err = expect_failure(p, *needles)
    if before is None:
        assert not out_path.exists(), f"convert failed but created {out_path}"
    else:
        assert out_path.read_bytes() == before, f"convert failed but changed {out_path}"
    assert sorted(os.listdir(out_path.parent)) == listing, "convert left files behind"
    return err


@pytest.fixture()
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def tokenizer_json(export):
    return export("tiny17").parent / "tokenizer.json"


@pytest.mark.parametrize("content", ["text", "random", "empty", "truncated_onnx"])
def test_onnx_not_protobuf(content, spinel, export, tokenizer_json, tmp_path, outdir):
    src = tmp_path / "model.onnx"
    if content == "text":
        src.write_bytes(b"this is not an ONNX model, just some text\n" * 50)
    elif content == "random":
        src.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif content == "empty":
        src.write_bytes(b"")
    else:
        whole = export("tiny17").read_bytes()
        src.write_bytes(whole[: len(whole) // 2])
    out = outdir / "m.spnl"
    convert_must_fail(spinel, src, out, "model.onnx", extra=["--tokenizer", tokenizer_json])
    # An existing output must stay as it was.
    out.write_bytes(b"previous contents")
    convert_must_fail(spinel, src, out, "model.onnx", extra=["--tokenizer", tokenizer_json])


def test_onnx_missing_file(spinel, tokenizer_json, tmp_path, outdir):
    missing = tmp_path / "does-not-exist.onnx"
    convert_must_fail(spinel, missing, outdir / "m.spnl", "does-not-exist.onnx",
                      extra=["--tokenizer", tokenizer_json])


def test_bad_tokenizer_file(spinel, export, tmp_path, outdir):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "WordPiece", "vocab": ')
    convert_must_fail(spinel, export("tiny17"), outdir / "m.spnl", "tokenizer.json",
                      extra=["--tokenizer", bad])


@pytest.fixture()
def ext_copy(export, tmp_path):
    """A private copy of the tiny external-data export: (case dir, model dir, onnx path)."""
    src = export("tiny17_ext").parent
    case = tmp_path / "case"
    model_dir = case / "model"
    shutil.copytree(src, model_dir)
    onnx_path = model_dir / "model.onnx"
    assert (model_dir / "model.onnx.data").exists()
    return case, model_dir, onnx_path


def _relocate_first_external(onnx_path, location):
    """Points the first external initializer at `location`; returns its name."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    kv.value = location
                    onnx.save(m, str(onnx_path))
                    return t.name
    raise AssertionError("no external initializer")


def test_external_data_control_converts(spinel, ext_copy, outdir):
    _, _, onnx_path = ext_copy
    out = outdir / "ok.spnl"
    spinel.convert(onnx_path, out)
    assert out.exists()


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink_file", "symlink_dir",
                                 "dotdot_inside_path"])
def test_external_data_escape(how, spinel, ext_copy, outdir):
    case, model_dir, onnx_path = ext_copy
    outside = case / "w.bin"
    shutil.copyfile(model_dir / "model.onnx.data", outside)  # same bytes, wrong place
    if how == "dotdot":
        location = "../w.bin"
    elif how == "absolute":
        location = str(outside.resolve())
    elif how == "symlink_file":
        os.symlink(outside, model_dir / "link.bin")
        location = "link.bin"
    elif how == "symlink_dir":
        other = case / "elsewhere"
        other.mkdir()
        shutil.copyfile(outside, other / "w.bin")
        os.symlink(other, model_dir / "sub")
        location = "sub/w.bin"
    else:
        (model_dir / "sub").mkdir()
        location = "sub/../../w.bin"
    tensor = _relocate_first_external(onnx_path, location)
    out = outdir / "m.spnl"
    convert_must_fail(spinel, onnx_path, out, location, tensor)
    out.write_bytes(b"old")
    convert_must_fail(spinel, onnx_path, out, location)


def test_external_data_missing_file(spinel, ext_copy, outdir):
    _, model_dir, onnx_path = ext_copy
    os.remove(model_dir / "model.onnx.data")
    convert_must_fail(spinel, onnx_path, outdir / "m.spnl", "model.onnx.data")


def test_external_data_too_short(spinel, ext_copy, outdir):
    _, model_dir, onnx_path = ext_copy
    data = model_dir / "model.onnx.data"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    convert_must_fail(spinel, onnx_path, outdir / "m.spnl", "model.onnx.data")


def _edit_tiny(export, tmp_path, edit):
    import onnx

    src = export("tiny17")
    d = tmp_path / "edited"
    d.mkdir()
    shutil.copyfile(src.parent / "tokenizer.json", d / "tokenizer.json")
    m = onnx.load(str(src))
    edit(m, onnx)
    path = d / "model.onnx"
    onnx.save(m, str(path))
    return path


def test_unsupported_node_on_the_output_path(spinel, export, tmp_path, outdir):
    def edit(m, onnx):
        prod = [n for n in m.graph.node if "last_hidden_state" in n.output]
        assert len(prod) == 1
        prod[0].output[list(prod[0].output).index("last_hidden_state")] = "before_cos"
        m.graph.node.append(onnx.helper.make_node("Cos", ["before_cos"], ["last_hidden_state"],
                                                  name="extra_cos_node"))

    path = _edit_tiny(export, tmp_path, edit)
    out = outdir / "m.spnl"
    convert_must_fail(spinel, path, out, "extra_cos_node", "Cos")
    out.write_bytes(b"old")
    convert_must_fail(spinel, path, out, "extra_cos_node", "Cos")


def test_unsupported_node_with_extra_output(spinel, export, tmp_path, outdir):
    def edit(m, onnx):
        m.graph.node.append(onnx.helper.make_node("Neg", ["last_hidden_state"], ["negated"],
                                                  name="appended_neg_node"))
        m.graph.output.append(onnx.helper.make_tensor_value_info("negated", onnx.TensorProto.FLOAT,
                                                                 None))

    path = _edit_tiny(export, tmp_path, edit)
    convert_must_fail(spinel, path, outdir / "m.spnl", "appended_neg_node", "Neg")


def test_unsupported_node_inside_a_layer(spinel, export, tmp_path, outdir):
    """An extra op between two matched ops of the first layer (Softmax -> Abs -> MatMul)."""
    def edit(m, onnx):
        sm = next(n for n in m.graph.node if n.op_type == "Softmax")
        old = sm.output[0]
        sm.output[0] = old + "_pre_abs"
        idx = list(m.graph.node).index(sm)
        m.graph.node.insert(idx + 1, onnx.helper.make_node("Abs", [old + "_pre_abs"], [old],
                                                           name="inserted_abs_node"))

    path = _edit_tiny(export, tmp_path, edit)
    convert_must_fail(spinel, path, outdir / "m.spnl", "inserted_abs_node", "Abs")


# ---- bad inputs to `run` -------------------------------------------------------------------

def test_control_run_works(spinel, tiny):
    p = spinel.cli("run", tiny[1], "--ids", "101,30521,102", "--threads", "1")
    assert '"tokens":3' in p.stdout.replace(" ", "")


@pytest.mark.parametrize("ids,needle", [("101,30522,102", "30522"), ("101,-1,102", "-1"),
                                        ("101,2147483647,102", "2147483647"),
                                        ("101,999999,7592,102", "999999")])
def test_token_id_past_vocabulary(ids, needle, spinel, tiny):
    p = spinel.cli("run", tiny[1], "--ids", ids, check=False)
    expect_failure(p, needle)
    assert p.stdout == ""
    # Also when the bad sequence is the second of a batch.
    p = spinel.cli("run", tiny[1], "--ids", "101,7592,102", "--ids", ids, check=False)
    expect_failure(p, needle)
    assert p.stdout == ""


@pytest.mark.parametrize("ids", ["101,abc,102", "101,,102", "", "101;102", "1e3",
                                 "99999999999999999999"])
def test_malformed_ids(ids, spinel, tiny):
    p = spinel.cli("run", tiny[1], "--ids", ids, check=False)
    expect_failure(p, "--ids", usage=True)


def test_capi_rejects_bad_ids(capi, tiny):
    with capi.load(tiny[1], threads=1) as m:
        for bad in ([101, 30522, 102], [101, -7, 102]):
            with pytest.raises(Exception) as e:
                m.run([[101, 102], bad])
            assert getattr(e.value, "status", None) == 1, str(e.value)
            assert str(bad[1]) in e.value.message
        # Still usable afterwards.
        out = m.run([[101, 7592, 102]])
        assert out[0].shape == (3, 64) and np.all(np.isfinite(out[0]))


def test_sequence_past_limit_no_truncation(spinel, tiny):
    long_text = " ".join(["word"] * 600)
    p = spinel.cli("run", tiny[1], "--text", long_text, "--no-truncation", check=False)
    expect_failure(p, "512", "602")
    assert p.stdout == ""
    # The same with --max-length below the model's limit.
    p = spinel.cli("run", tiny[1], "--text", long_text, "--no-truncation", "--max-length", "64",
                   check=False)
    expect_failure(p, "64")
    # Pre-tokenized input past the limit.
    ids = ",".join(["101"] + ["7592"] * 511 + ["102"])
    p = spinel.cli("run", tiny[1], "--ids", ids, check=False)
    expect_failure(p, "513", "512")
    assert p.stdout == ""
    # A --max-length above the model's limit is a usage error.
    p = spinel.cli("run", tiny[1], "--text", "hi", "--max-length", "513", check=False)
    expect_failure(p, "--max-length", usage=True)


def test_truncation_default_warns_and_runs(spinel, tiny):
    long_text = " ".join(["word"] * 600)
    p = spinel.cli("run", tiny[1], "--text", long_text, "--threads", "1")
    assert "truncat" in p.stderr.lower()
    assert '"tokens":512' in p.stdout.replace(" ", "")


@pytest.mark.parametrize("value", ["-1", "100000", "1025", "two", "", "2.5"])
def test_absurd_threads(value, spinel, tiny):
    p = spinel.cli("run", tiny[1], "--ids", "101,102", "--threads", value, check=False)
    expect_failure(p, "--threads", usage=True)
    assert p.stdout == ""


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-5"], "--batch-size"),
    (["--pool", "avg"], "avg"),
    (["--format", "xml"], "xml"),
    (["--bogus"], "--bogus"),
    (["--normalize=yes"], "--normalize"),
    (["-x"], "-x"),
])
def test_bad_run_options(args, needle, spinel, tiny):
    p = spinel.cli("run", tiny[1], "--ids", "101,102", *args, check=False)
    expect_failure(p, needle, usage=True)
    assert p.stdout == ""


@pytest.mark.parametrize("argv,needle", [
    (["frobnicate"], "frobnicate"),
    (["convert", "--bogus"], "--bogus"),
    (["inspect", "--frobnicate"], "--frobnicate"),
    (["tokenize", "--nope"], "--nope"),
    (["run"], "spnl"),
    (["convert", "x.onnx"], "-o"),
    ([], "usage"),
])
def test_bad_command_lines(argv, needle, spinel):
    p = spinel.cli(*argv, check=False)
    expect_failure(p, needle, usage=True)


def test_run_missing_model_file(spinel, tmp_path):
    missing = tmp_path / "nope.spnl"
    p = spinel.cli("run", missing, "--ids", "101,102", check=False)
    expect_failure(p, str(missing))
    p = spinel.cli("run", tmp_path, "--ids", "101,102", check=False)  # a folder
    expect_failure(p, str(tmp_path))


def test_run_missing_input_file(spinel, tiny, tmp_path):
    missing = tmp_path / "lines.txt"
    p = spinel.cli("run", tiny[1], "--input", missing, check=False)
    expect_failure(p, "lines.txt")
    assert p.stdout == ""
