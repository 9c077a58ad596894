"""Finding and loading libspinel.so, and the ctypes prototypes of spinel.h.

Where the library is looked for, in this order (the first that loads wins):

1. ``$SPINEL_LIBRARY``: the path of libspinel.so (or of a folder holding it).
   When set, nothing else is tried: a wrong path is an error, not a fallback.
2. Next to this package (``spinel/libspinel.so.0`` or ``spinel/libspinel.so``):
   for packagers who copy the library, with ``libspinel_preinit.so.0`` and
   ``libspinel_sentencepiece.so`` beside it, into the package. ``pip install``
   of the sources does not do this.
3. The install the package came from: ``cmake --install`` writes
   ``spinel/_install.py`` with its libdir into PREFIX/share/spinel/python, so
   ``pip install PREFIX/share/spinel/python`` finds PREFIX/lib/libspinel.so.0.
4. The system loader: ``libspinel.so.0`` by soname (LD_LIBRARY_PATH, the
   ld.so cache, the default folders), then ``ctypes.util.find_library``.
"""

import ctypes
import ctypes.util
import os
import pathlib
import threading

SONAME = "libspinel.so.0"
# The C API this binding was written for: the library's MAJOR.MINOR must match.
API_VERSION = (0, 1)

c_int, c_int32, c_int64, c_size_t = ctypes.c_int, ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t
c_char_p, c_void_p, c_float = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_float
P = ctypes.POINTER

# name -> (restype, argtypes); handles are void pointers.
PROTOTYPES = {
    "spinel_version": (c_char_p, []),
    "spinel_format_version": (c_int, []),
    "spinel_last_error": (c_char_p, []),
    "spinel_status_name": (c_char_p, [c_int]),
    "spinel_backends": (c_int, [c_char_p, c_size_t, P(c_size_t)]),
    "spinel_set_isa_cap": (c_int, [c_char_p]),
    "spinel_model_load": (c_int, [c_char_p, P(c_void_p)]),
    "spinel_model_load_from_memory": (c_int, [c_void_p, c_size_t, c_char_p, P(c_void_p)]),
    "spinel_model_free": (None, [c_void_p]),
    "spinel_model_info": (c_int, [c_void_p, P(c_int64), P(c_int64), P(c_int64)]),
    "spinel_model_architecture": (c_int, [c_void_p, P(c_char_p)]),
    "spinel_model_default_pooling": (c_int, [c_void_p, P(c_char_p), P(c_int)]),
    "spinel_model_num_outputs": (c_int, [c_void_p, P(c_int64)]),
    "spinel_model_output": (c_int, [c_void_p, c_int64, P(c_char_p), P(c_int64), P(c_int)]),
    "spinel_model_info_json": (c_int, [c_void_p, c_char_p, c_size_t, P(c_size_t)]),
    "spinel_model_kernels": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t, P(c_size_t)]),
    "spinel_tokenize": (c_int, [c_void_p, c_char_p, c_size_t, P(c_int32), c_size_t, P(c_size_t)]),
    "spinel_session_options_create": (c_int, [P(c_void_p)]),
    "spinel_session_options_free": (None, [c_void_p]),
    "spinel_session_options_set_threads": (c_int, [c_void_p, c_int]),
    "spinel_session_options_set_backend": (c_int, [c_void_p, c_char_p]),
    "spinel_session_options_set_isa": (c_int, [c_void_p, c_char_p]),
    "spinel_session_options_set_max_batch": (c_int, [c_void_p, c_int64]),
    "spinel_session_options_set_max_tokens": (c_int, [c_void_p, c_int64]),
    "spinel_session_create_with": (c_int, [c_void_p, c_void_p, P(c_void_p)]),
    "spinel_session_free": (None, [c_void_p]),
    "spinel_session_run_texts": (c_int, [c_void_p, P(c_char_p), c_int64, P(c_void_p)]),
    "spinel_session_run_ids": (c_int, [c_void_p, P(c_int32), P(c_int32), P(c_int64), c_int64, P(c_void_p)]),
    "spinel_result_free": (None, [c_void_p]),
    "spinel_result_sequences": (c_int, [c_void_p, P(c_int64), P(P(c_int64))]),
    "spinel_result_ids": (c_int, [c_void_p, P(P(c_int32)), P(c_int64)]),
    "spinel_result_output": (c_int, [c_void_p, c_char_p, P(P(c_float)), P(c_int64), P(c_int64)]),
    "spinel_result_pooled": (c_int, [c_void_p, c_char_p, c_int, P(c_float), c_size_t, P(c_int64), P(c_int64)]),
}


class LibraryNotFoundError(OSError):
    """libspinel.so could not be loaded; the message lists every place tried."""


def _candidates():
    """(where, path-or-name) pairs, in the order of the module docstring."""
    env = os.environ.get("SPINEL_LIBRARY")
    if env:
        p = pathlib.Path(env)
        if p.is_dir():
            yield "SPINEL_LIBRARY", str(p / SONAME)
            yield "SPINEL_LIBRARY", str(p / "libspinel.so")
        else:
            yield "SPINEL_LIBRARY", env
        return
    here = pathlib.Path(__file__).resolve().parent
    yield "next to the package", str(here / SONAME)
    yield "next to the package", str(here / "libspinel.so")
    try:
        from . import _install  # written by cmake --install

        yield "the install prefix", str(pathlib.Path(_install.LIBDIR) / SONAME)
    except ImportError:
        pass
    yield "the system loader", SONAME
    found = ctypes.util.find_library("spinel")
    if found:
        yield "ctypes.util.find_library", found


def _load():
    tried = []
    for where, name in _candidates():
        if "/" in name and not os.path.exists(name):
            tried.append(f"{where}: {name} (no such file)")
            continue
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            tried.append(f"{where}: {name} ({e})")
    hint = ("set SPINEL_LIBRARY to the path of libspinel.so (e.g. build/libspinel.so), or install spinel "
            "(cmake --install build --prefix PREFIX, then pip install PREFIX/share/spinel/python)")
    raise LibraryNotFoundError("cannot load libspinel.so; tried:\n  " + "\n  ".join(tried) + "\n" + hint)


def _bind(lib, path):
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise LibraryNotFoundError(f"{path} lacks {name}: it is an older libspinel than this binding "
                                       f"({'.'.join(map(str, API_VERSION))}) needs") from None
        f.restype = restype
        f.argtypes = argtypes
    version = lib.spinel_version().decode()
    if tuple(int(x) for x in version.split(".")[:2]) != API_VERSION:
        raise LibraryNotFoundError(f"{path} is libspinel {version}; this binding needs "
                                   f"{'.'.join(map(str, API_VERSION))}.x")
    return lib


_lock = threading.Lock()
_lib = None
_path = None


def lib():
    """The loaded library (loaded on first use)."""
    global _lib, _path
    if _lib is None:
        with _lock:
            if _lib is None:
                raw, path = _load()
                _lib, _path = _bind(raw, path), path
    return _lib


def path():
    """What was loaded: the path or soname given to the loader."""
    lib()
    return _path
