"""`spinel bench` end to end on a small real model (tiny17: 2 layers, hidden 64): every scenario
and --tune with short trials, the JSON report against docs/bench_schema.md, the table's winner,
clear errors (exit 2) for bad flags, and tools/plot_bench.py on a report.

Trials are 0.3 s: the figures mean nothing here, only the report's shape and its invariants. No
assertion is about speed (the machines are shared)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORES = len(os.sched_getaffinity(0))
SHORT = ["--duration", "0.3s", "--warmup", "0.1s"]


@pytest.fixture(scope="module")
def tiny(converted):
    return converted("tiny17")[1]


def bench(spinel, tiny, tmp_path, *args, name="out.json"):
    out = tmp_path / name
    p = spinel.cli("bench", tiny, *SHORT, *args, "--json", out, timeout=300)
    report = json.loads(out.read_text())
    check_schema(report)
    return p, report


# ---- the schema of docs/bench_schema.md ---------------------------------------------

NUM = (int, float)


def expect(obj, key, types, where):
    assert key in obj, f"{where}: missing key {key!r}"
    v = obj[key]
    if types is None:
        assert v is None, f"{where}.{key} should be null, is {v!r}"
        return v
    types = types if isinstance(types, tuple) else (types,)

    def is_a(t):
        if t is None:
            return v is None
        if t in (int, float):  # JSON numbers; a bool is not one
            return isinstance(v, t) and not isinstance(v, bool)
        return isinstance(v, t)

    ok = any(is_a(t) for t in types)
    assert ok, f"{where}.{key} = {v!r} is not of type {types}"
    return v


def check_latency(lat, where):
    for k in ("count",):
        expect(lat, k, int, where)
    for k in ("mean", "min", "max", "p50", "p90", "p99", "at_percentile"):
        expect(lat, k, NUM, where)
    if lat["count"] > 0:
        assert 0 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], f"{where}: {lat}"
        assert lat["min"] <= lat["mean"] <= lat["max"], f"{where}: {lat}"
        assert lat["min"] <= lat["at_percentile"] <= lat["max"], f"{where}: {lat}"


def check_config_key(c, where):
    for k in ("instances", "threads", "max_batch"):
        assert expect(c, k, int, where) >= 1


def check_schema(r):
    assert expect(r, "schema_version", int, "report") == 1
    assert expect(r, "tool", str, "report") == "spinel bench"
    expect(r, "spinel_version", str, "report")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expect(r, "started_utc", str, "report"))
    m = expect(r, "machine", dict, "report")
    for k in ("cpu_model", "detected_isa", "active_isa", "sparse_int8_kernel", "f32_row_kernels", "omp_spin_policy"):
        expect(m, k, str, "machine")
    assert expect(m, "cores", int, "machine") == CORES
    expect(m, "amx_int8", bool, "machine")
    expect(m, "dense_int8_on_sparse", bool, "machine")
    assert expect(m, "int8_attention", str, "machine") in ("amx_bf16", "avx512_bf16", "f32")
    expect(m, "load_average_1min", (float, int, None), "machine")
    mo = expect(r, "model", dict, "report")
    expect(mo, "path", str, "model")
    expect(mo, "architecture", str, "model")
    for k in ("file_bytes", "num_layers", "hidden_size", "num_heads", "intermediate_size", "max_position",
              "vocab_size", "linear_layers", "int8_linear_layers", "sparse_linear_layers"):
        expect(mo, k, int, "model")
    assert expect(mo, "precision", str, "model") in ("fp32", "int8", "int8-sparse", "mixed")
    expect(mo, "mean_block_sparsity", NUM, "model")
    o = expect(r, "options", dict, "report")
    scenario = expect(o, "scenario", str, "options")
    assert scenario in ("server", "single", "offline")
    expect(o, "seq_dist", str, "options")
    assert expect(o, "seq_min", int, "options") <= expect(o, "seq_max", int, "options")
    assert o["seq_min"] <= expect(o, "seq_mean", NUM, "options") <= o["seq_max"]
    for k in ("latency_budget_ms", "percentile", "max_wait_ms", "duration_s", "warmup_s"):
        expect(o, k, NUM, "options")
    assert 0 < o["percentile"] < 100 and o["latency_budget_ms"] > 0
    for k in ("max_batch", "seed", "max_trials", "query_pool"):
        expect(o, k, int, "options")
    for k in ("instances", "threads"):
        expect(o, k, (int, None), "options")
    for k in ("tune", "pin", "oversubscribed"):
        expect(o, k, bool, "options")

    trials = expect(r, "trials", list, "report")
    configs = expect(r, "configs", list, "report")
    assert trials and configs
    for i, c in enumerate(configs):
        w = f"configs[{i}]"
        check_config_key(c, w)
        assert expect(c, "slice_tokens", int, w) >= 0
        ts = expect(c, "trials", list, w)
        assert ts and all(isinstance(t, int) and 0 <= t < len(trials) for t in ts)
        bt = expect(c, "best_trial", (int, None), w)
        if scenario == "server":
            mr = expect(c, "max_rate", (float, int, None), w)
            expect(c, "estimate_rate", NUM, w)
            if bt is None:
                assert mr is None
                assert not any(trials[t]["meets_budget"] for t in ts), f"{w}: a trial met but best_trial is null"
            else:
                assert bt in ts and trials[bt]["meets_budget"]
                assert mr == trials[bt]["offered_rate"]
                passing = [trials[t]["offered_rate"] for t in ts if trials[t]["meets_budget"]]
                assert mr == max(passing)
        else:
            expect(c, "max_rate", None, w)
            expect(c, "estimate_rate", None, w)
            assert bt in ts
    for i, t in enumerate(trials):
        w = f"trials[{i}]"
        assert expect(t, "index", int, w) == i
        ci = expect(t, "config_index", int, w)
        assert 0 <= ci < len(configs) and i in configs[ci]["trials"]
        check_config_key(expect(t, "config", dict, w), w)
        assert {k: t["config"][k] for k in ("instances", "threads", "max_batch")} == \
            {k: configs[ci][k] for k in ("instances", "threads", "max_batch")}
        assert expect(t, "scenario", str, w) == scenario
        if scenario == "server":
            assert expect(t, "offered_rate", NUM, w) > 0
            expect(t, "arrival_rate", NUM, w)
            expect(t, "meets_budget", bool, w)
        else:
            expect(t, "offered_rate", None, w)
            expect(t, "arrival_rate", None, w)
            expect(t, "meets_budget", bool if scenario == "single" else None, w)
        assert expect(t, "achieved_rate", NUM, w) >= 0
        assert expect(t, "tokens_per_s", NUM, w) >= 0
        for k in ("queries", "completed", "unfinished"):
            assert expect(t, k, int, w) >= 0
        assert t["completed"] + t["unfinished"] == t["queries"]
        assert expect(t, "latency_kind", str, w) == ("batch" if scenario == "offline" else "query")
        check_latency(expect(t, "latency_ms", dict, w), w)
        b = expect(t, "batch", dict, w)
        expect(b, "count", int, w)
        expect(b, "mean", NUM, w)
        assert 0 <= expect(b, "max", int, w) <= t["config"]["max_batch"]
        assert b["mean"] <= b["max"]
        reason = expect(t, "fail_reason", (str, None), w)
        if t["meets_budget"] is not None:
            assert (reason is None) == t["meets_budget"], f"{w}: meets_budget {t['meets_budget']}, reason {reason!r}"
            if t["meets_budget"]:
                assert t["latency_ms"]["at_percentile"] <= o["latency_budget_ms"]
        assert expect(t, "wall_s", NUM, w) > 0

    best = r["best"]
    assert "best" in r
    met = [t for t in trials if t["meets_budget"]]
    if scenario == "server" and not met:
        assert best is None
        return
    assert isinstance(best, dict)
    bi = expect(best, "trial", int, "best")
    check_config_key(expect(best, "config", dict, "best"), "best")
    assert best["config"] == trials[bi]["config"]
    expect(best, "rate", NUM, "best")
    expect(best, "achieved_rate", NUM, "best")
    expect(best, "tokens_per_s", NUM, "best")
    check_latency(expect(best, "latency_ms", dict, "best"), "best")
    assert best["latency_ms"] == trials[bi]["latency_ms"]
    if scenario == "server":
        # The best meets the budget and no passing trial had a higher rate.
        assert expect(best, "meets_budget", bool, "best") is True
        assert best["rate"] == trials[bi]["offered_rate"] == max(t["offered_rate"] for t in met)
    elif scenario == "single":
        assert best["meets_budget"] == trials[bi]["meets_budget"]
        assert trials[bi]["latency_ms"]["at_percentile"] == min(t["latency_ms"]["at_percentile"] for t in trials)
        if met:
            assert best["meets_budget"] is True
    else:
        expect(best, "meets_budget", None, "best")
        assert best["rate"] == max(t["achieved_rate"] for t in trials)


def winner_row(stdout):
    rows = [line for line in stdout.splitlines() if line.startswith("* ")]
    assert len(rows) <= 1, stdout
    return rows[0] if rows else None


# ---- the scenarios ----------------------------------------------------------------------

def test_server_report_and_table(spinel, tiny, tmp_path):
    p, r = bench(spinel, tiny, tmp_path, "--seq", "32", "--latency-budget", "200ms", "--percentile", "95",
                 "--max-batch", "4", "--max-trials", "3")
    assert r["options"]["scenario"] == "server"
    assert r["options"]["percentile"] == 95 and r["options"]["latency_budget_ms"] == 200
    assert r["options"]["seq_dist"] == "fixed:32" and r["options"]["max_batch"] == 4
    assert r["model"]["num_layers"] == 2 and r["model"]["hidden_size"] == 64
    assert r["model"]["precision"] == "fp32" and r["model"]["max_position"] == 512
    assert len(r["configs"]) == 1 and 1 <= len(r["trials"]) <= 3
    # A 2-layer hidden-64 model at 32 tokens meets 200 ms at its starting rate, even on a busy machine.
    assert r["best"] is not None
    for t in r["trials"]:
        assert t["batch"]["max"] <= 4
    # The table: a row per trial, the winner marked, a best line naming its rate.
    row = winner_row(p.stdout)
    assert row is not None and "<- best" in row
    best = r["trials"][r["best"]["trial"]]
    assert f"{best['offered_rate']:.1f}" in row
    assert re.search(r"^best: \d+x\d+ batch \d+: [\d.]+ queries/s", p.stdout, re.M), p.stdout
    assert sum(1 for line in p.stdout.splitlines() if re.match(r"^[* ] \d+x\d+ +\d+ ", line)) == len(r["trials"])
    # Progress on stderr (not a terminal here): a line per trial, no carriage returns.
    assert len(re.findall(r"trial \d+: offered", p.stderr)) == len(r["trials"]), p.stderr
    assert "\r" not in p.stderr


def test_server_tune_partitions_and_batches(spinel, tiny, tmp_path):
    p, r = bench(spinel, tiny, tmp_path, "--seq", "16", "--tune", "--max-batch", "2", "--max-trials", "2",
                 "--latency-budget", "300ms")
    divisors = [d for d in range(1, CORES + 1) if CORES % d == 0]
    want = {(d, CORES // d, b) for d in divisors for b in (1, 2)}
    got = {(c["instances"], c["threads"], c["max_batch"]) for c in r["configs"]}
    assert got == want
    assert r["options"]["tune"] is True and r["options"]["instances"] is None and r["options"]["threads"] is None
    assert r["best"] is not None
    best_rate = max(c["max_rate"] for c in r["configs"] if c["max_rate"] is not None)
    assert r["best"]["rate"] == best_rate
    row = winner_row(p.stdout)
    cfg = r["best"]["config"]
    assert row.split()[1:3] == [f"{cfg['instances']}x{cfg['threads']}", str(cfg["max_batch"])], row
    assert "highest rate with p90 <= 300.00 ms, per config:" in p.stdout


def test_single_stream(spinel, tiny, tmp_path):
    p, r = bench(spinel, tiny, tmp_path, "--scenario", "single", "--seq", "24", "--latency-budget", "1s")
    assert len(r["trials"]) == 1
    t = r["trials"][0]
    assert t["config"] == {"instances": 1, "threads": CORES, "max_batch": 1}
    assert t["batch"]["max"] == 1 and t["queries"] > 0 and t["meets_budget"] is True
    assert t["tokens_per_s"] == pytest.approx(t["achieved_rate"] * 24, rel=1e-6)
    assert r["best"]["meets_budget"] is True
    assert winner_row(p.stdout) is not None
    assert re.search(r"^best: 1x\d+: p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms, mean [\d.]+ ms", p.stdout, re.M)


def test_single_stream_tune_over_threads(spinel, tiny, tmp_path):
    _, r = bench(spinel, tiny, tmp_path, "--scenario", "single", "--seq", "8", "--tune")
    got = sorted((c["instances"], c["threads"]) for c in r["configs"])
    assert got == [(1, d) for d in range(1, CORES + 1) if CORES % d == 0]


def test_offline(spinel, tiny, tmp_path):
    p, r = bench(spinel, tiny, tmp_path, "--scenario", "offline", "--seq", "20", "--max-batch", "4")
    t = r["trials"][0]
    assert t["latency_kind"] == "batch" and t["meets_budget"] is None
    assert t["achieved_rate"] > 0 and t["batch"]["max"] == 4
    assert t["tokens_per_s"] == pytest.approx(t["achieved_rate"] * 20, rel=1e-6)
    assert r["best"]["rate"] == t["achieved_rate"]
    assert re.search(r"^best: \d+x\d+ batch 4: [\d.]+ sequences/s, \d+ tokens/s", p.stdout, re.M)


def test_offline_reports_the_slice_size(spinel, tiny, tmp_path, monkeypatch):
    # The sessions' slice size (SPINEL_SLICE_TOKENS forces one; off: whole batches).
    monkeypatch.setenv("SPINEL_SLICE_TOKENS", "48")
    _, r = bench(spinel, tiny, tmp_path, "--scenario", "offline", "--seq", "20", "--max-batch", "4")
    assert [c["slice_tokens"] for c in r["configs"]] == [48]
    monkeypatch.setenv("SPINEL_SLICE_TOKENS", "off")
    _, r = bench(spinel, tiny, tmp_path, "--scenario", "offline", "--seq", "20", "--max-batch", "4", name="off.json")
    assert [c["slice_tokens"] for c in r["configs"]] == [0]


def test_seq_distributions(spinel, tiny, tmp_path):
    _, r = bench(spinel, tiny, tmp_path, "--scenario", "offline", "--seq-dist", "uniform:5-40", name="u.json")
    o = r["options"]
    assert (o["seq_dist"], o["seq_min"], o["seq_max"], o["seq_mean"]) == ("uniform:5-40", 5, 40, 22.5)
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("# from a log\n12\n\n64\n30\n")
    _, r = bench(spinel, tiny, tmp_path, "--scenario", "single", "--seq-dist", f"file:{lengths}", name="f.json")
    o = r["options"]
    assert (o["seq_min"], o["seq_max"]) == (12, 64)
    assert o["seq_mean"] == pytest.approx((12 + 64 + 30) / 3)


def test_oversubscription_is_allowed_with_a_warning(spinel, tiny, tmp_path):
    p, r = bench(spinel, tiny, tmp_path, "--scenario", "offline", "--instances", str(CORES), "--threads", "2",
                 "--max-batch", "2")
    assert "warning: instances x threads exceeds the" in p.stderr
    assert r["options"]["oversubscribed"] is True
    assert r["configs"][0]["instances"] == CORES and r["configs"][0]["threads"] == 2


# ---- errors ---------------------------------------------------------------------------------

def bad(spinel, *args):
    p = spinel.cli("bench", *args, check=False, timeout=120)
    assert p.returncode == 2, f"exit {p.returncode} for {args}:\n{p.stderr[-1500:]}"
    first = p.stderr.splitlines()[0]
    assert first.startswith("spinel bench: "), p.stderr
    for w in ("segmentation", "core dumped", "terminate called"):
        assert w not in p.stderr.lower()
    return first


@pytest.mark.parametrize("args, needles", [
    (["--latency-budget", "0ms"], ["--latency-budget", "more than zero", "0ms"]),
    (["--latency-budget", "-5ms"], ["--latency-budget", "-5ms"]),
    (["--latency-budget", "20"], ["--latency-budget", "unit", "'20'"]),
    (["--latency-budget", "20 ms"], ["--latency-budget", "'20 ms'"]),
    (["--duration", "0s"], ["--duration", "more than zero"]),
    (["--warmup", "1h"], ["--warmup", "'1h'"]),
    (["--max-wait", "-1ms"], ["--max-wait", "'-1ms'"]),
    (["--percentile", "0"], ["--percentile", "between 0 and 100", "'0'"]),
    (["--percentile", "100"], ["--percentile", "'100'"]),
    (["--percentile", "150"], ["--percentile", "'150'"]),
    (["--percentile", "ninety"], ["--percentile", "'ninety'"]),
    (["--seq", "513"], ["--seq 513", "limit of 512"]),
    (["--seq", "0"], ["--seq", "outside"]),
    (["--seq-dist", "uniform:100-600"], ["uniform:100-600", "600", "limit of 512"]),
    (["--seq-dist", "uniform:9-2"], ["uniform:9-2", "empty"]),
    (["--seq-dist", "normal:5"], ["--seq-dist", "'normal:5'"]),
    (["--seq-dist", "uniform:5-9", "--seq", "64"], ["--seq", "--seq-dist"]),
    (["--scenario", "batch"], ["--scenario", "'batch'"]),
    (["--max-batch", "0"], ["--max-batch", "outside"]),
    (["--instances", "0"], ["--instances", "outside"]),
    (["--scenario", "single", "--instances", "2"], ["single", "--instances 2"]),
    (["--bogus"], ["unknown option", "--bogus"]),
])
def test_bad_flags(spinel, tiny, args, needles):
    first = bad(spinel, tiny, *args)
    for n in needles:
        assert n.lower() in first.lower(), f"{args}: {first!r} lacks {n!r}"


def test_bad_lengths_files(spinel, tiny, tmp_path):
    f = tmp_path / "lengths.txt"
    f.write_text("12\n# ok\n40\n4x\n")
    first = bad(spinel, tiny, "--seq-dist", f"file:{f}")
    assert str(f) in first and "line 4" in first and "'4x'" in first
    f.write_text("12\n40\n700\n")
    first = bad(spinel, tiny, "--seq-dist", f"file:{f}")
    assert "line 3" in first and "700" in first and "limit of 512" in first
    first = bad(spinel, tiny, "--seq-dist", f"file:{tmp_path / 'absent.txt'}")
    assert "absent.txt" in first and "cannot open" in first
    f.write_text("# nothing\n\n")
    assert "holds no lengths" in bad(spinel, tiny, "--seq-dist", f"file:{f}")


def test_no_model_and_missing_model(spinel, tmp_path):
    assert "MODEL.spnl" in bad(spinel, "--seq", "8")
    p = spinel.cli("bench", tmp_path / "none.spnl", check=False)
    assert p.returncode == 1 and "none.spnl" in p.stderr


def test_help(spinel):
    p = spinel.cli("bench", "--help")
    for w in ("server", "single", "offline", "--latency-budget", "--percentile", "--tune", "--json",
              "docs/bench_schema.md", "plot_bench.py"):
        assert w in p.stdout
    assert "bench" in spinel.cli("--help").stdout


# ---- the plot ---------------------------------------------------------------------------------

def test_plot_bench_draws_a_png(spinel, tiny, tmp_path):
    _, r = bench(spinel, tiny, tmp_path, "--seq", "16", "--max-batch", "1", "--max-trials", "2", "--tune",
                 "--latency-budget", "300ms")
    png = tmp_path / "out.png"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_bench.py"), str(tmp_path / "out.json"),
                        "-o", str(png)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    # A report of another schema version is refused by name.
    other = tmp_path / "v2.json"
    other.write_text(json.dumps(dict(r, schema_version=2)))
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_bench.py"), str(other), "-o",
                        str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "schema_version" in p.stderr


# ---- bench/prof_ab.py: per-op A/B of two builds --------------------------------------


def test_prof_ab_tool(spinel, tiny, tmp_path):
    """The same build against itself: every op of the profile gets a row with its two medians
    and a ratio, plus the total; bad inputs stop it with a message that names them."""
    ids = tmp_path / "ids.txt"
    ids.write_text("101,2000,2001,2002,102\n101,2003,102\n")
    tool = [sys.executable, str(ROOT / "bench" / "prof_ab.py"), str(tiny), str(ids), "2", spinel.bin, spinel.bin,
            "--repeat", "3", "--env-b", "SPINEL_QKV_K2=off"]
    p = subprocess.run(tool, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.splitlines()[1:]:
        m = re.match(r"^(.*\S)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
        assert m, f"unexpected line {line!r}"
        rows[m.group(1)] = tuple(float(m.group(i)) for i in (2, 3, 4))
    assert "total" in rows
    assert any(k.startswith("Linear ") for k in rows), rows
    assert any(k.startswith("Attention") for k in rows), rows
    for key, (a, b, ratio) in rows.items():
        assert a > 0 and b > 0 and ratio > 0, (key, a, b, ratio)
    assert "round 2/2" in p.stderr

    p = subprocess.run(tool[:3] + [str(tmp_path / "none.txt")] + tool[4:], capture_output=True, text=True)
    assert p.returncode != 0 and "cannot read" in p.stderr and "none.txt" in p.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    p = subprocess.run(tool[:3] + [str(empty)] + tool[4:], capture_output=True, text=True)
    assert p.returncode != 0 and "holds no ids" in p.stderr
    p = subprocess.run(tool[:5] + ["/nonexistent/spinel"] + tool[6:], capture_output=True, text=True)
    assert p.returncode != 0 and "cannot run /nonexistent/spinel" in p.stderr
    p = subprocess.run(tool[:-2] + ["--env-b", "NOEQUALS"], capture_output=True, text=True)
    assert p.returncode != 0 and "bad environment entry 'NOEQUALS'" in p.stderr
