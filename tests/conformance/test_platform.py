"""What a process that loads spinel runs with: the OpenMP spin policy set by the
runtime itself (runtime/preinit/spin_policy.c) for the CLI and for a C program
linked with libspinel.so, and the kernel report of the C API agreeing with
`spinel inspect`.

libgomp prints the settings it started with under OMP_DISPLAY_ENV=verbose: that
is the proof that GOMP_SPINCOUNT was in place before libgomp read it (the
runtime's report alone would only show that it was set at some point)."""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "spinel/spinel.h"
int main(int argc, char** argv) {
  spinel_model_t m;
  if (spinel_model_load(argv[1], &m) != SPINEL_OK) { fprintf(stderr, "%s\n", spinel_last_error()); return 1; }
  size_t need = 0;
  if (spinel_model_kernels(m, NULL, NULL, 0, &need) != SPINEL_OK) { fprintf(stderr, "%s\n", spinel_last_error()); return 1; }
  char* buf = malloc(need);
  if (spinel_model_kernels(m, "cpu", buf, need, &need) != SPINEL_OK) { fprintf(stderr, "%s\n", spinel_last_error()); return 1; }
  puts(buf);
  free(buf);
  spinel_model_free(m);
  return 0;
}
"""


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["OMP_DISPLAY_ENV"] = "verbose"
    env.update(extra)
    return env


def spincount_at_start(stderr):
    m = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    assert m, f"libgomp did not display its settings:\n{stderr[:2000]}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def model(converted):
    return converted("minilm17")[1]


def test_cli_sets_spin_policy_before_libgomp(spinel, model):
    p = subprocess.run([spinel.bin, "inspect", str(model), "--json"], capture_output=True, text=True,
                       env=clean_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert spincount_at_start(p.stderr) == 10000
    assert json.loads(p.stdout)["cpu"]["omp_spin_policy"].startswith("GOMP_SPINCOUNT=10000")


def test_user_spin_policy_is_kept(spinel, model):
    p = subprocess.run([spinel.bin, "inspect", str(model), "--json"], capture_output=True, text=True,
                       env=clean_env(GOMP_SPINCOUNT="1234"), timeout=300)
    assert p.returncode == 0, p.stderr
    assert spincount_at_start(p.stderr) == 1234
    assert "set by the user" in json.loads(p.stdout)["cpu"]["omp_spin_policy"]


def test_c_program_gets_spin_policy_and_kernel_report(spinel, model, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (tools/setup.sh installs build-essential)"
    src = tmp_path / "kernels.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "kernels"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", str(src), "-I", str(ROOT / "runtime" / "include"),
                    "-L", spinel.build_dir, "-lspinel", f"-Wl,-rpath,{spinel.build_dir}", "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    p = subprocess.run([str(exe), str(model)], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert spincount_at_start(p.stderr) == 10000
    report = json.loads(p.stdout)
    assert report["backend"] == "cpu"
    info = spinel.cli("inspect", model, "--json")
    ops = json.loads(info.stdout)["ops"]
    assert [o["kernel"] for o in report["ops"]] == [o["kernel"] for o in ops]
    assert [o["kind"] for o in report["ops"]] == [o["kind"] for o in ops]
