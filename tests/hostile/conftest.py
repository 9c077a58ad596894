"""Fixtures for the hostile-file tests: the conformance fixtures (`spinel`, `export`,
`converted`, ...) reused from tests/conformance/conftest.py, plus `corpus`."""

import importlib.util
import os
import pathlib
import shutil
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Loaded under its own name: pytest already imports a module called "conftest".
_spec = importlib.util.spec_from_file_location(
    "spinel_conformance_conftest", HERE.parent / "conformance" / "conftest.py")
_conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conf)

spinel = _conf.spinel
model_cache = _conf.model_cache
export = _conf.export
converted = _conf.converted

import make_corpus  # noqa: E402


@pytest.fixture(scope="session")
def corpus(converted, tmp_path_factory):
    """The generated corpus: (folder, {entry id: entry}). About 300 copies of the tiny
    model (~2.5 GB): removed at the end of the session unless SPINEL_KEEP_CORPUS=1."""
    onnx_path, spnl = converted("tiny17")
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    manifest = make_corpus.build_corpus(spnl, onnx_path.parent, out)
    yield out, {e["id"]: e for e in manifest["entries"]}
    if os.environ.get("SPINEL_KEEP_CORPUS"):
        print(f"\nhostile corpus kept in {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
