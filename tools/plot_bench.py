#!/usr/bin/env python3
"""Latency percentiles against throughput from `spinel bench --json` reports.

    tools/plot_bench.py out.json [more.json ...] -o out.png [--percentiles 50,90,99]
                        [--title TEXT] [--linear]

One panel per report (side by side, same latency axis), one colour per
configuration (instances x threads, max batch), one line style per percentile
(only the report's own percentile when it has more than 4 configurations,
unless --percentiles asks); the latency budget as a
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

    n = len(reports)
    shown = sorted({float(judged)} | set(pcts if (args.percentiles or
                                             max(len(r['configs']) for _, r in reports) <= 4) else []))
    style_handles = [Line2D([0], [0], color="grey", linestyle=STYLES.get(int(p), "-."),
                            marker=MARKERS.get(int(p), "s"), label=f"p{p:g}") for p in shown]
    style_handles.append(Line2D([0], [0], marker="o", markersize=10, markerfacecolor="none",
                                markeredgecolor="grey", linestyle="none", label="config's best passing trial"))
    style_handles.append(Line2D([0], [0], marker="*", markersize=14, color="gold", markeredgecolor="black",
                                linestyle="none", label="winner"))
    fig, axes = plt.subplots(1, n, figsize=(6.8 * n + 0.6, 6.4), dpi=110, sharey=True, squeeze=False)
    axes = axes[0]
    ymax, ymin = budget, budget
    for ax, (path, rep) in zip(axes, reports):
        trials = rep["trials"]
        configs = [c for c in rep["configs"] if c["trials"]]
        palette = plt.get_cmap("tab10" if len(configs) <= 10 else "tab20").colors
        # Many configurations: only the judged percentile, unless asked.
        rep_pcts = pcts if (args.percentiles or len(configs) <= 4) else [float(judged)]
        best = rep["best"]["trial"] if rep.get("best") else None
        handles = []
        for ci, cfg in enumerate(configs):
            ts = sorted((trials[i] for i in cfg["trials"]), key=lambda t: (t["offered_rate"] or 0, t["achieved_rate"]))
            colour = palette[ci % len(palette)]
            xs = [t["achieved_rate"] for t in ts]
            for p in rep_pcts:
                ys = [latency_of(t, p, judged) for t in ts]
                ymax, ymin = max(ymax, max(ys)), min(ymin, min(ys))
                ax.plot(xs, ys, linestyle=STYLES.get(int(p), "-."), marker=MARKERS.get(int(p), "s"),
                        color=colour, markersize=4, linewidth=1.7 if p == judged else 1.0,
                        alpha=1.0 if p == judged else 0.7)
            label = f"{cfg['instances']}x{cfg['threads']} batch {cfg['max_batch']}"
            if scenario == "server":
                label += f": {cfg['max_rate']:.1f}/s" if cfg.get("max_rate") else ": none met"
            handles.append(Line2D([0], [0], color=colour, linewidth=2.5, label=label))
            bt = cfg.get("best_trial")
            if bt is not None and (scenario != "server" or trials[bt]["meets_budget"]):
                t = trials[bt]
                ax.plot([t["achieved_rate"]], [latency_of(t, judged, judged)], marker="o", markersize=12,
                        markerfacecolor="none", markeredgecolor=colour, markeredgewidth=1.8)
        if best is not None:
            t = trials[best]
            ax.plot([t["achieved_rate"]], [latency_of(t, judged, judged)], marker="*", markersize=20,
                    color="gold", markeredgecolor="black", zorder=5)
        ax.axhline(budget, color="crimson", linewidth=1.5)
        ax.annotate(f"budget p{judged:g} \u2264 {budget:g} ms", xy=(0.01, budget), xycoords=("axes fraction", "data"),
                    xytext=(0, 4), textcoords="offset points", color="crimson", fontsize=9)
        ax.set_xlim(left=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("throughput: queries completed per second (achieved)")
        m = rep["model"]
        ax.set_title(f"{pathlib.Path(m['path']).name}: {m['architecture']}, {m['num_layers']} layers, "
                     f"{m['precision']}\nload average {rep['machine']['load_average_1min']}", fontsize=9)
        title = "config (max rate meeting budget)" if scenario == "server" else "config"
        # One legend per panel, below it: its configurations, then what the marks mean.
        ax.legend(handles=handles + style_handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2,
                  fontsize=8, title=title, title_fontsize=8, frameon=False)
    if not args.linear:
        axes[0].set_yscale("log")
        axes[0].set_ylim(ymin / 1.5, ymax * 1.5)
    else:
        axes[0].set_ylim(0, ymax * 1.1)
    lat_kind = ("per batch" if scenario == "offline" else
                "per query, queueing included" if scenario == "server" else "per query")
    axes[0].set_ylabel(f"latency, ms ({lat_kind})")
    o = first["options"]
    title = args.title or (
        f"spinel bench, {scenario} scenario: latency against throughput, seq {o['seq_dist']}, "
        f"max wait {o['max_wait_ms']:g} ms, trials of {o['duration_s']:g} s")
    sub = f"{first['machine']['cpu_model']}, {first['machine']['cores']} cores, {first['machine']['active_isa']}"
    fig.suptitle(f"{title}\n{sub}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, bbox_inches="tight")  # the legends below the panels
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
