#!/usr/bin/env python3
"""Latency percentiles against throughput from `spinel bench --json` reports.

    tools/plot_bench.py out.json [more.json ...] -o out.png [--percentiles 50,90,99]
                        [--title TEXT] [--linear]

One colour per configuration (instances x threads, max batch; per file when
several are given), one line style per percentile; the latency budget as a
horizontal line; each configuration's best passing trial ringed and the
report's winner starred. x is the achieved throughput (queries completed per
second in the measured window), y the latency in ms (log scale unless
--linear: an overloaded trial's queue makes its latency grow by orders of
magnitude). For offline reports the latencies are per batch (see
docs/bench_schema.md).
"""

import argparse
import json
import pathlib
import sys

STYLES = {50: ":", 90: "-", 99: "--"}
MARKERS = {50: "v", 90: "o", 99: "^"}


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_bench: cannot read {path}: {e}")
    if report.get("schema_version") != 1:
        sys.exit(f"plot_bench: {path}: schema_version {report.get('schema_version')!r}, this script reads 1")
    return report


def parse_percentiles(text):
    out = []
    for part in text.split(","):
        try:
            p = float(part)
        except ValueError:
            sys.exit(f"plot_bench: --percentiles: '{part}' is not a number")
        if p not in (50, 90, 99) and p != int(p):
            sys.exit("plot_bench: --percentiles takes 50, 90, 99 or the report's own percentile")
        out.append(p)
    return out


def latency_of(trial, p, judged):
    lat = trial["latency_ms"]
    if p == judged:
        return lat["at_percentile"]
    key = f"p{int(p)}" if p == int(p) else None
    if key not in lat:
        sys.exit(f"plot_bench: the report has no p{p:g} (it has p50, p90, p99 and p{judged:g})")
    return lat[key]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="spinel bench --json files")
    ap.add_argument("-o", "--output", required=True, help="PNG (or .svg/.pdf) to write")
    ap.add_argument("--percentiles", default=None,
                    help="comma-separated, default 50,<the report's percentile>,99")
    ap.add_argument("--title", default=None)
    ap.add_argument("--linear", action="store_true", help="linear latency axis")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    reports = [(pathlib.Path(p), load(p)) for p in args.reports]
    first = reports[0][1]
    judged = first["options"]["percentile"]
    pcts = parse_percentiles(args.percentiles) if args.percentiles else sorted({50.0, float(judged), 99.0})
    budget = first["options"]["latency_budget_ms"]
    scenario = first["options"]["scenario"]

    fig, ax = plt.subplots(figsize=(10, 6.2), dpi=110)
    colours = plt.get_cmap("tab10").colors
    series = 0
    legend_configs = []
    ymax = budget
    for path, rep in reports:
        prefix = ""
        if len(reports) > 1:
            m = rep["model"]
            prefix = f"{pathlib.Path(m['path']).stem} ({m['precision']}) "
        trials = rep["trials"]
        best = rep["best"]["trial"] if rep.get("best") else None
        for ci, cfg in enumerate(rep["configs"]):
            ts = [trials[i] for i in cfg["trials"]]
            if not ts:
                continue
            ts.sort(key=lambda t: (t["offered_rate"] or 0, t["achieved_rate"]))
            colour = colours[series % len(colours)]
            series += 1
            xs = [t["achieved_rate"] for t in ts]
            for p in pcts:
                ys = [latency_of(t, p, judged) for t in ts]
                ymax = max(ymax, max(ys))
                ax.plot(xs, ys, linestyle=STYLES.get(int(p), "-."), marker=MARKERS.get(int(p), "s"),
                        color=colour, markersize=4, linewidth=1.6 if p == judged else 1.0,
                        alpha=1.0 if p == judged else 0.75)
            label = f"{prefix}{cfg['instances']}x{cfg['threads']} batch {cfg['max_batch']}"
            if scenario == "server":
                label += f": {cfg['max_rate']:.1f}/s" if cfg.get("max_rate") else ": none met"
            legend_configs.append(Line2D([0], [0], color=colour, linewidth=2.5, label=label))
            bt = cfg.get("best_trial")
            if bt is not None and (scenario != "server" or trials[bt]["meets_budget"]):
                t = trials[bt]
                ax.plot([t["achieved_rate"]], [latency_of(t, judged, judged)], marker="o", markersize=12,
                        markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.8)
        if best is not None:
            t = trials[best]
            ax.plot([t["achieved_rate"]], [latency_of(t, judged, judged)], marker="*", markersize=20,
                    color="gold", markeredgecolor="black", zorder=5)

    ax.axhline(budget, color="crimson", linewidth=1.5, linestyle="-")
    ax.annotate(f"budget p{judged:g} ≤ {budget:g} ms", xy=(0.01, budget), xycoords=("axes fraction", "data"),
                xytext=(0, 4), textcoords="offset points", color="crimson", fontsize=9)
    if not args.linear:
        ax.set_yscale("log")
    ax.set_ylim(bottom=None, top=ymax * 1.5)
    ax.set_xlim(left=0)
    lat_kind = "per batch" if scenario == "offline" else "per query, queueing included" if scenario == "server" else "per query"
    ax.set_xlabel("throughput: queries completed per second (achieved rate)")
    ax.set_ylabel(f"latency, ms ({lat_kind})")
    ax.grid(True, which="both", alpha=0.3)
    m = first["model"]
    title = args.title or (
        f"spinel bench, {scenario}: {pathlib.Path(m['path']).name} ({m['architecture']}, {m['num_layers']} layers, "
        f"{m['precision']}), seq {first['options']['seq_dist']}")
    sub = (f"{first['machine']['cpu_model']}, {first['machine']['cores']} cores, {first['machine']['active_isa']}; "
           f"trials of {first['options']['duration_s']:g} s; load average {first['machine']['load_average_1min']}")
    ax.set_title(f"{title}\n{sub}", fontsize=10)
    pct_handles = [Line2D([0], [0], color="grey", linestyle=STYLES.get(int(p), "-."),
                          marker=MARKERS.get(int(p), "s"), label=f"p{p:g}") for p in pcts]
    pct_handles.append(Line2D([0], [0], marker="o", markersize=10, markerfacecolor="none",
                              markeredgecolor="grey", linestyle="none", label="config's best passing trial"))
    pct_handles.append(Line2D([0], [0], marker="*", markersize=14, color="gold", markeredgecolor="black",
                              linestyle="none", label="winner"))
    leg1 = ax.legend(handles=legend_configs, loc="upper left", fontsize=8, title="config (max rate meeting budget)"
                     if scenario == "server" else "config", title_fontsize=8)
    ax.add_artist(leg1)
    ax.legend(handles=pct_handles, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
