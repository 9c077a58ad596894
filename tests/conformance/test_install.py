"""`cmake --install` of the build under test into a fresh prefix, used the ways the README says:

* the tree: header, libspinel.so -> .so.0 -> .so.0.1.0 (SONAME libspinel.so.0, RUNPATH $ORIGIN),
  libspinel_preinit.so.0 after libgomp among its DT_NEEDED, the SentencePiece shim, the CLI
  (RUNPATH $ORIGIN/../lib), the CMake package and spinel.pc; no installed file points into the
  build tree, and every library they need resolves to a file of an installed Debian package or
  to the prefix;
* pkg-config: `--libs` is exactly `-L<libdir> -lspinel`;
* the README's C example (examples/embed.c, checked to be the README's text) compiled with
  `cc embed.c $(pkg-config --cflags --libs spinel)` and run with LD_LIBRARY_PATH=<libdir>
  (the executable has no RUNPATH; libspinel.so finds its own helpers through $ORIGIN), and
  with `-Wl,-rpath,<libdir>` and no LD_LIBRARY_PATH: its vectors equal the installed CLI's
  `spinel run --pool mean --normalize` within 1e-6, its cosine their dot product;
* find_package(spinel 0.1): tests/install/CMakeLists.txt builds the same example against
  spinel::spinel, which runs without LD_LIBRARY_PATH (CMake's RUNPATH) and prints the same;
  asking for 0.2 fails (the version file);
* the installed CLI loads the installed SentencePiece shim (LD_DEBUG shows which file);
* the Python package, pip-installed into a fresh venv from PREFIX/share/spinel/python, finds
  PREFIX/lib/libspinel.so.0 by itself; pip-installed from the repository's python/, it loads
  what SPINEL_LIBRARY names.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEXTS = ["A man is playing a guitar.", "Someone plays an instrument; the café is full (3 × 4 = 12)."]
ATOL = 1e-6


def run(cmd, env=None, cwd=None, check=True, timeout=300):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed with {p.returncode}:\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "SPINEL_LIBRARY", "PKG_CONFIG_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} is needed (tools/setup.sh installs it)"
    return path


@pytest.fixture(scope="module")
def prefix(spinel, tmp_path_factory):
    p = tmp_path_factory.mktemp("install") / "prefix"
    run([tool("cmake"), "--install", spinel.build_dir, "--prefix", p])
    return p


@pytest.fixture(scope="module")
def libdir(prefix):
    pcs = list(prefix.glob("**/pkgconfig/spinel.pc"))
    assert len(pcs) == 1, pcs
    return pcs[0].parent.parent


@pytest.fixture(scope="module")
def spnl(converted):
    return converted("minilm17")[1]


@pytest.fixture(scope="module")
def cli_vectors(prefix, spnl):
    """The installed CLI's vectors for TEXTS (run without LD_LIBRARY_PATH: its RUNPATH suffices)."""
    args = [prefix / "bin" / "spinel", "run", spnl, "--pool", "mean", "--normalize"]
    for t in TEXTS:
        args += ["--text", t]
    rows = [json.loads(line) for line in run(args, env=clean_env()).stdout.splitlines()]
    return np.asarray([r["embedding"] for r in rows], dtype=np.float64)


def dynamic(path):
    out = run([tool("readelf"), "-d", path]).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    runpath = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]", out)
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", out)
    return needed, runpath, soname


def parse_example(stdout):
    lines = stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("cosine "), stdout[:500]
    vectors = np.asarray([[float(x) for x in line.split()] for line in lines[1:]])
    return float(lines[0].split()[1]), vectors


def check_example_output(stdout, cli_vectors):
    cosine, vectors = parse_example(stdout)
    assert vectors.shape == cli_vectors.shape == (2, 384)
    diff = np.abs(vectors - cli_vectors).max()
    assert diff <= ATOL, f"example vs CLI: max |diff| {diff:.2e}"
    assert abs(cosine - float(cli_vectors[0] @ cli_vectors[1])) <= 1e-6
    return vectors


def test_install_tree(prefix, libdir, spinel):
    for f in ["include/spinel/spinel.h", "bin/spinel"]:
        assert (prefix / f).is_file(), f
    for f in ["libspinel.so.0.1.0", "libspinel_preinit.so.0", "libspinel_sentencepiece.so",
              "cmake/spinel/spinelConfig.cmake", "cmake/spinel/spinelConfigVersion.cmake",
              "cmake/spinel/spinelTargets.cmake", "pkgconfig/spinel.pc"]:
        assert (libdir / f).is_file(), f
    assert os.readlink(libdir / "libspinel.so") == "libspinel.so.0"
    assert os.readlink(libdir / "libspinel.so.0") == "libspinel.so.0.1.0"
    assert (prefix / "include/spinel/spinel.h").read_bytes() == \
        (ROOT / "runtime/include/spinel/spinel.h").read_bytes()

    needed, runpath, soname = dynamic(libdir / "libspinel.so.0.1.0")
    assert soname == ["libspinel.so.0"] and runpath == ["$ORIGIN"]
    # The spin policy's constructor must run before libgomp's (CMakeLists.txt, link order).
    assert needed.index("libgomp.so.1") < needed.index("libspinel_preinit.so.0"), needed
    assert not any(n.startswith(("libonnx", "libprotobuf", "libsentencepiece")) for n in needed), needed
    cli_needed, cli_runpath, _ = dynamic(prefix / "bin" / "spinel")
    assert cli_runpath == ["$ORIGIN/../lib"] and "libspinel_preinit.so.0" in cli_needed

    # Everything resolves without LD_LIBRARY_PATH: ours in the prefix, the rest in Debian packages.
    build = os.path.realpath(spinel.build_dir)
    system = {}  # real path -> what needs it
    for binary in (libdir / "libspinel.so.0.1.0", prefix / "bin" / "spinel", libdir / "libspinel_sentencepiece.so"):
        out = run([tool("ldd"), binary], env=clean_env()).stdout
        assert "not found" not in out, out
        for name, path in re.findall(r"^\s*(\S+) => (\S+)", out, re.M):
            real = os.path.realpath(path)
            assert not real.startswith(build), (binary, name, real)
            if name.startswith("libspinel"):
                assert real.startswith(str(prefix)), (binary, name, real)
            else:
                system[real] = f"{binary.name}: {name}"
    assert any("libdnnl" in k for k in system) and any("libgomp" in k for k in system), system
    # usr-merge: a file under /usr/lib may be packaged as /lib/... (and back).
    variants = {r: [r, r[4:] if r.startswith("/usr/") else "/usr" + r] for r in system}
    owned = run([tool("dpkg"), "-S", *[v for vs in variants.values() for v in vs]], check=False).stdout
    owned_paths = {line.split(": ", 1)[1] for line in owned.splitlines() if ": " in line}
    for real, vs in variants.items():
        assert owned_paths & set(vs), f"{system[real]} -> {real} belongs to no Debian package"
    for _, rp, _ in [dynamic(libdir / "libspinel.so.0.1.0"), dynamic(prefix / "bin" / "spinel")]:
        assert all(build not in r for r in rp), rp

    env = clean_env(PKG_CONFIG_PATH=libdir / "pkgconfig")
    assert run([tool("pkg-config"), "--libs", "spinel"], env=env).stdout.split() == [f"-L{libdir}", "-lspinel"]
    assert run([tool("pkg-config"), "--cflags", "spinel"], env=env).stdout.split() == [f"-I{prefix}/include"]
    assert run([tool("pkg-config"), "--modversion", "spinel"], env=env).stdout.strip() == "0.1.0"


def test_readme_example_with_pkg_config(prefix, libdir, spnl, cli_vectors, tmp_path):
    example = (ROOT / "examples" / "embed.c").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "```c\n" + example + "```" in readme, "README's C example differs from examples/embed.c"

    env = clean_env(PKG_CONFIG_PATH=libdir / "pkgconfig")
    flags = run([tool("pkg-config"), "--cflags", "--libs", "spinel"], env=env).stdout.split()
    cc = tool("cc")
    exe = tmp_path / "embed"
    run([cc, ROOT / "examples" / "embed.c", *flags, "-o", exe], env=env)
    run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", ROOT / "examples" / "embed.c",
         *[f for f in flags if f.startswith("-I")], "-o", tmp_path / "embed.o"], env=env)
    _, runpath, _ = dynamic(exe)
    assert runpath == []
    # No RUNPATH: the loader must be told where the prefix's libdir is (README says so).
    p = run([exe, spnl, *TEXTS], env=clean_env(), check=False)
    assert p.returncode != 0 and "libspinel.so.0" in p.stderr
    p = run([exe, spnl, *TEXTS], env=clean_env(LD_LIBRARY_PATH=libdir))
    v = check_example_output(p.stdout, cli_vectors)
    # Or with a RUNPATH of the libdir, no environment needed.
    exe2 = tmp_path / "embed_rpath"
    run([cc, ROOT / "examples" / "embed.c", *flags, f"-Wl,-rpath,{libdir}", "-o", exe2], env=env)
    p = run([exe2, spnl, *TEXTS], env=clean_env())
    assert np.array_equal(parse_example(p.stdout)[1], v)
    # A bad model file: the example prints the library's message and fails.
    p = run([exe2, tmp_path / "missing.spnl", *TEXTS], env=clean_env(), check=False)
    assert p.returncode == 1 and "SPINEL_INVALID_MODEL" in p.stderr and "missing.spnl" in p.stderr


def test_find_package_consumer(prefix, spnl, cli_vectors, tmp_path):
    cmake = tool("cmake")
    build = tmp_path / "consumer"
    env = clean_env()
    p = run([cmake, "-S", ROOT / "tests" / "install", "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}"], env=env)
    assert "spinel 0.1.0 from " + str(prefix) in p.stdout, p.stdout
    run([cmake, "--build", build, "-j2"], env=env)
    p = run([build / "embed", spnl, *TEXTS], env=env)
    check_example_output(p.stdout, cli_vectors)
    # The version file: 0.1 is compatible with 0.1.0; 0.2 is not (0.x minors may break the API).
    p = run([cmake, "-S", ROOT / "tests" / "install", "-B", tmp_path / "consumer02",
             f"-DCMAKE_PREFIX_PATH={prefix}", "-DSPINEL_WANT_VERSION=0.2"], env=env, check=False)
    assert p.returncode != 0 and "0.1.0" in p.stderr, p.stderr[-2000:]


def test_installed_cli_loads_installed_sentencepiece_shim(prefix, libdir, tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    words = ["spinel", "runtime", "sparse", "quantized", "encoder", "token", "install", "prefix", "shim"]
    corpus.write_text("\n".join(" ".join(words[(i * j) % len(words)] for j in range(1, 8)) for i in range(200)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "m"), vocab_size=40,
                                   model_type="bpe", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    text = "sparse encoder install"
    p = run([prefix / "bin" / "spinel", "tokenize", "--tokenizer", tmp_path / "m.model", "--text", text],
            env=clean_env(LD_DEBUG="files"))
    assert json.loads(p.stdout)["ids"] == [sp.bos_id()] + sp.encode(text) + [sp.eos_id()]
    loaded = re.findall(r"file=(\S*libspinel_sentencepiece\.so)\s", p.stderr)
    assert loaded and {os.path.realpath(f) for f in loaded} == {str(libdir / "libspinel_sentencepiece.so")}, loaded


def test_python_package_from_install_tree_and_repo(prefix, libdir, spnl, cli_vectors, spinel, tmp_path):
    venv = tmp_path / "venv"
    # A fresh venv (system site packages for numpy); pip comes from the test's own interpreter.
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    py = venv / "bin" / "python"

    def pip_install(src):
        run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-build-isolation", "--no-index",
             "--no-deps", "--force-reinstall", src], env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK=1))

    script = (
        "import json, sys, spinel\n"
        "with spinel.Model(sys.argv[1]) as m, m.session(threads=0) as s:\n"
        "    v = s.embed(sys.argv[2:], pool='mean', normalize=True)\n"
        "print(json.dumps({'lib': spinel.library_path(), 'file': spinel.__file__, 'v': v.tolist()}))\n")
    # From the install tree: the package knows where that install put the library.
    pip_install(prefix / "share" / "spinel" / "python")
    out = json.loads(run([py, "-c", script, spnl, *TEXTS], env=clean_env(), cwd=tmp_path).stdout)
    assert out["lib"] == str(libdir / "libspinel.so.0")
    assert out["file"].startswith(str(venv))
    assert np.abs(np.asarray(out["v"]) - cli_vectors).max() <= ATOL
    # From the repository: SPINEL_LIBRARY names the library (here the build's).
    pip_install(ROOT / "python")
    p = run([py, "-c", script, spnl, *TEXTS], env=clean_env(), cwd=tmp_path, check=False)
    assert p.returncode != 0 and "LibraryNotFoundError" in p.stderr and "SPINEL_LIBRARY" in p.stderr
    out = json.loads(run([py, "-c", script, spnl, *TEXTS], env=clean_env(SPINEL_LIBRARY=spinel.lib_path),
                         cwd=tmp_path).stdout)
    assert out["lib"] == spinel.lib_path and out["file"].startswith(str(venv))
    assert np.abs(np.asarray(out["v"]) - cli_vectors).max() <= ATOL
