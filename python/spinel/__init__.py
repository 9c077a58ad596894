"""spinel: sparse and quantized BERT-family encoders on the CPU, from Python.

A ctypes binding of the C API (spinel/spinel.h); numpy is its only dependency.
libspinel.so is loaded on first use (see spinel._capi for where it is looked
for; SPINEL_LIBRARY overrides).

    import spinel
    with spinel.Model("minilm.spnl") as model, model.session(threads=2) as session:
        vectors = session.embed(["A man is playing a guitar.", "Someone plays an instrument."],
                                pool="mean", normalize=True)      # float32 [2, 384]
        result = session.run([[101, 7592, 102], [101, 2088, 999, 102]])
        hidden, offsets = result                                  # [7, 384], [0, 3, 7]

Errors of the library raise spinel.Error (a RuntimeError) with the C status
and message. Handles are freed by close(), by leaving a `with` block, or when
the object is collected.

Threads: a Model may be shared by any number of threads; a Session runs one
call at a time (it holds a lock, so sharing one is safe but serial): give each
thread its own session for parallel runs. The library releases the GIL while
it computes.
"""

import ctypes
import json
import os
import threading

import numpy as np

from . import _capi
from ._capi import LibraryNotFoundError

__version__ = "0.1.0"
__all__ = ["Model", "Session", "Result", "Error", "LibraryNotFoundError", "version", "format_version",
           "backends", "set_isa_cap", "library_path"]

_P = ctypes.POINTER


class Error(RuntimeError):
    """A failed call of the C API.

    status:      the spinel_status_t value (1 invalid argument, 2 invalid model,
                 3 runtime error, 4 out of memory)
    status_name: "SPINEL_INVALID_ARGUMENT", ...
    message:     the library's message (names the argument, file, position, limit)
    """

    def __init__(self, status, status_name, message):
        super().__init__(f"{status_name}: {message}")
        self.status = status
        self.status_name = status_name
        self.message = message


def _check(lib, status):
    if status != 0:
        message = lib.spinel_last_error().decode("utf-8", "replace")
        raise Error(status, lib.spinel_status_name(status).decode(), message)


def _bytes(s, what, optional=True):
    if s is None and optional:
        return None
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str, not {type(s).__name__}")
    if "\0" in s:
        raise ValueError(f"{what} contains a NUL character")
    return s.encode("utf-8")


def _copy_out(lib, fn, *args):
    """Calls a copy-out function (buffer, capacity, needed) twice: size, then text."""
    needed = ctypes.c_size_t()
    _check(lib, fn(*args, None, 0, ctypes.byref(needed)))
    buf = ctypes.create_string_buffer(needed.value)
    _check(lib, fn(*args, buf, needed.value, ctypes.byref(needed)))
    return buf.value.decode("utf-8")


def version():
    """The library's version, "MAJOR.MINOR.PATCH"."""
    return _capi.lib().spinel_version().decode()


def format_version():
    """The .spnl format version the library reads and writes."""
    return _capi.lib().spinel_format_version()


def library_path():
    """The path (or soname) libspinel was loaded from."""
    return _capi.path()


def backends():
    """The backends of the loaded library, e.g. ["cpu", "reference"]."""
    lib = _capi.lib()
    return _copy_out(lib, lib.spinel_backends).split(",")


def set_isa_cap(level):
    """Caps the CPU kernels' instruction set: "avx512vnni", "avxvnni", "avx2" or
    "scalar". PROCESS-WIDE: it applies at once to every session (see spinel.h)."""
    lib = _capi.lib()
    _check(lib, lib.spinel_set_isa_cap(_bytes(level, "level", optional=False)))


class _Handle:
    """Owns one C handle; frees it once (close, `with`, or collection)."""

    _free_name = None
    _handle = None
    _lib = None

    def close(self):
        h, self._handle = self._handle, None
        if h and self._lib is not None:
            getattr(self._lib, self._free_name)(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # never raise from a finalizer (e.g. at interpreter exit)
            pass

    def _h(self):
        if not self._handle:
            raise ValueError(f"this {type(self).__name__} is closed")
        return self._handle


class Model(_Handle):
    """A loaded .spnl model: read-only, shared by its sessions and by threads."""

    _free_name = "spinel_model_free"

    def __init__(self, path):
        """Maps the .spnl file at `path` (str or os.PathLike)."""
        lib = _capi.lib()
        h = ctypes.c_void_p()
        _check(lib, lib.spinel_model_load(_bytes(os.fspath(path), "path", optional=False), ctypes.byref(h)))
        self._lib, self._handle, self._info = lib, h, None

    @classmethod
    def from_bytes(cls, data, name=None):
        """A model from the bytes of a .spnl file (bytes, bytearray, memoryview);
        the library copies them, so `data` may be reused afterwards."""
        lib = _capi.lib()
        if isinstance(data, bytes):
            buf, size = data, len(data)  # passed as a pointer, no copy here
        else:
            mv = memoryview(data).cast("B")
            size = len(mv)
            buf = (ctypes.c_char * size).from_buffer_copy(mv) if size else None
        h = ctypes.c_void_p()
        _check(lib, lib.spinel_model_load_from_memory(buf, size, _bytes(name, "name"), ctypes.byref(h)))
        self = cls.__new__(cls)
        self._lib, self._handle, self._info = lib, h, None
        return self

    @property
    def info(self):
        """dict: architecture, hidden_size, max_tokens, vocab_size, type_vocab_size,
        num_layers, num_heads, intermediate_size, tokenizer, format_version, source,
        default_pool, normalize, poolings, outputs ([{name, width, per_token}])."""
        if self._info is None:
            self._info = json.loads(_copy_out(self._lib, self._lib.spinel_model_info_json, self._h()))
        return dict(self._info)

    def kernels(self, backend=None):
        """What a session on `backend` (default "cpu") runs each op with, as a dict."""
        return json.loads(_copy_out(self._lib, self._lib.spinel_model_kernels, self._h(),
                                    _bytes(backend, "backend")))

    def tokenize(self, text, max_length=0):
        """The model tokenizer's ids of `text`, with its special tokens, truncated
        to max_length (0 = the model's limit)."""
        lib, h, t = self._lib, self._h(), _bytes(text, "text", optional=False)
        count = ctypes.c_size_t()
        _check(lib, lib.spinel_tokenize(h, t, max_length, None, 0, ctypes.byref(count)))
        ids = np.empty(count.value, dtype=np.int32)
        _check(lib, lib.spinel_tokenize(h, t, max_length, ids.ctypes.data_as(_P(ctypes.c_int32)), ids.size,
                                        ctypes.byref(count)))
        return ids.tolist()

    def session(self, threads=0, backend=None, isa=None, max_batch=0, max_tokens=0):
        """A new Session. threads: 0 = every core, else 1..1024; backend: "cpu"
        (default), "reference" or "cuda" (a CUDA build with a device; else an
        Error saying why); isa: an instruction-set cap, PROCESS-WIDE (see
        set_isa_cap); max_batch / max_tokens: limits per run, 0 = none."""
        return Session(self, threads=threads, backend=backend, isa=isa, max_batch=max_batch,
                       max_tokens=max_tokens)

    def __repr__(self):
        if not self._handle:
            return "<spinel.Model (closed)>"
        i = self.info
        return f"<spinel.Model {i['architecture']} hidden {i['hidden_size']} max_tokens {i['max_tokens']}>"


class Session(_Handle):
    """Runs batches on one model. Calls are serialized by a lock; use one
    session per thread to run in parallel."""

    _free_name = "spinel_session_free"

    def __init__(self, model, threads=0, backend=None, isa=None, max_batch=0, max_tokens=0):
        lib = model._lib
        opts = ctypes.c_void_p()
        _check(lib, lib.spinel_session_options_create(ctypes.byref(opts)))
        try:
            _check(lib, lib.spinel_session_options_set_threads(opts, int(threads)))
            _check(lib, lib.spinel_session_options_set_backend(opts, _bytes(backend, "backend")))
            _check(lib, lib.spinel_session_options_set_isa(opts, _bytes(isa, "isa")))
            _check(lib, lib.spinel_session_options_set_max_batch(opts, int(max_batch)))
            _check(lib, lib.spinel_session_options_set_max_tokens(opts, int(max_tokens)))
            h = ctypes.c_void_p()
            _check(lib, lib.spinel_session_create_with(model._h(), opts, ctypes.byref(h)))
        finally:
            lib.spinel_session_options_free(opts)
        self._lib, self._handle, self.model, self._lock = lib, h, model, threading.Lock()

    def close(self):
        lock = getattr(self, "_lock", None)
        if lock is None:
            return super().close()
        with lock:
            super().close()

    def run_texts(self, texts):
        """Tokenizes `texts` (a str or a list of str) with the model's tokenizer
        (truncated to its limit) and runs them as one batch -> Result."""
        if isinstance(texts, str):
            texts = [texts]
        enc = [_bytes(t, f"texts[{i}]", optional=False) for i, t in enumerate(texts)]
        arr = (ctypes.c_char_p * max(1, len(enc)))(*enc)
        r = ctypes.c_void_p()
        with self._lock:
            _check(self._lib, self._lib.spinel_session_run_texts(self._h(), arr, len(enc), ctypes.byref(r)))
        return Result(self._lib, r)

    def run(self, ids, type_ids=None):
        """Runs sequences of token ids (with [CLS]/[SEP] in place): `ids` is a list
        of lists or arrays (ragged), or a 2-D array (one row per sequence);
        `type_ids` the same shapes or None -> Result, which unpacks as
        (hidden [total_tokens, hidden] float32, offsets [n + 1] int64)."""
        seqs = [np.asarray(s).reshape(-1) for s in ids]
        lens = [s.size for s in seqs]
        packed = _int32(seqs, "ids")
        tt = None
        if type_ids is not None:
            tseqs = [np.asarray(s).reshape(-1) for s in type_ids]
            if [s.size for s in tseqs] != lens:
                raise ValueError("type_ids must have the shape of ids (one type id per token id)")
            tt = _int32(tseqs, "type_ids")
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens)
        r = ctypes.c_void_p()
        with self._lock:
            _check(self._lib, self._lib.spinel_session_run_ids(
                self._h(), packed.ctypes.data_as(_P(ctypes.c_int32)),
                None if tt is None else tt.ctypes.data_as(_P(ctypes.c_int32)),
                offsets.ctypes.data_as(_P(ctypes.c_int64)), len(seqs), ctypes.byref(r)))
        return Result(self._lib, r)

    def embed(self, texts, pool=None, normalize=None):
        """One vector per text -> float32 [n, width]. pool: "cls", "mean",
        "pooler", or a per-sequence output ("logits", "sentence_embedding");
        None = the model's default. normalize: True/False, None = the model's
        default when pool is None, else False."""
        with self.run_texts(texts) as r:
            return r.pooled(pool, normalize)

    def logits(self, texts):
        """A classifier's logits for `texts` -> float32 [n, classes]."""
        with self.run_texts(texts) as r:
            return r.output("logits")


def _int32(seqs, what):
    if not seqs:
        return np.zeros(1, dtype=np.int32)  # the library reports the empty batch
    flat = np.concatenate([s.astype(np.int64, casting="safe") if s.size else np.zeros(0, np.int64)
                           for s in seqs])
    if flat.size and (flat.min() < -2**31 or flat.max() >= 2**31):
        raise ValueError(f"{what}: values must fit in int32")
    return np.ascontiguousarray(flat, dtype=np.int32) if flat.size else np.zeros(1, dtype=np.int32)


class Result(_Handle):
    """The outputs of one run, independent of its session. Arrays returned are
    copies (numpy owns them): `offsets` and `ids` are copied at once, `hidden`
    on first access (read it before close()); pooled() and output() need the
    handle, which close() / `with` / collection frees.

    Unpacks as (hidden, offsets): hidden [total_tokens, hidden] float32
    (last_hidden_state), offsets [n + 1] int64 (sequence i owns rows
    offsets[i]:offsets[i+1])."""

    _free_name = "spinel_result_free"
    _hidden = None

    def __init__(self, lib, handle):
        self._lib, self._handle = lib, handle
        n = ctypes.c_int64()
        off = _P(ctypes.c_int64)()
        _check(lib, lib.spinel_result_sequences(handle, ctypes.byref(n), ctypes.byref(off)))
        self.offsets = np.ctypeslib.as_array(off, shape=(n.value + 1,)).copy()
        ids = _P(ctypes.c_int32)()
        tokens = ctypes.c_int64()
        _check(lib, lib.spinel_result_ids(handle, ctypes.byref(ids), ctypes.byref(tokens)))
        self.ids = np.ctypeslib.as_array(ids, shape=(tokens.value,)).copy() if tokens.value else \
            np.zeros(0, np.int32)
        self._hidden = None

    @property
    def hidden(self):
        """last_hidden_state [total_tokens, hidden] float32 (copied once)."""
        if self._hidden is None:
            self._hidden = self.output("last_hidden_state")
        return self._hidden

    def __len__(self):
        return self.offsets.size - 1

    def __iter__(self):
        return iter((self.hidden, self.offsets))

    def sequence(self, i):
        """last_hidden_state rows of sequence i."""
        return self.hidden[self.offsets[i]:self.offsets[i + 1]]

    def output(self, name):
        """An output by name (a copy): "last_hidden_state" [tokens, hidden] or a
        per-sequence output such as "logits" [n, classes]."""
        data = _P(ctypes.c_float)()
        rows, width = ctypes.c_int64(), ctypes.c_int64()
        _check(self._lib, self._lib.spinel_result_output(self._h(), _bytes(name, "name", optional=False), ctypes.byref(data),
                                                         ctypes.byref(rows), ctypes.byref(width)))
        if rows.value * width.value == 0:
            return np.zeros((rows.value, width.value), dtype=np.float32)
        return np.ctypeslib.as_array(data, shape=(rows.value, width.value)).copy()

    def pooled(self, pool=None, normalize=None):
        """One vector per sequence -> float32 [n, width]; pool and normalize as
        in Session.embed."""
        norm = -1 if normalize is None else (1 if normalize else 0)
        p = _bytes(pool, "pool")
        rows, width = ctypes.c_int64(), ctypes.c_int64()
        _check(self._lib, self._lib.spinel_result_pooled(self._h(), p, norm, None, 0, ctypes.byref(rows),
                                                         ctypes.byref(width)))
        out = np.empty((rows.value, width.value), dtype=np.float32)
        if out.size:
            _check(self._lib, self._lib.spinel_result_pooled(self._h(), p, norm,
                                                             out.ctypes.data_as(_P(ctypes.c_float)), out.size,
                                                             ctypes.byref(rows), ctypes.byref(width)))
        return out
