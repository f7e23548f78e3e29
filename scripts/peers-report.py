#!/usr/bin/env python3
"""The report of `make bench-peers`: from its JSON lines, one markdown row
per server, N and K with medians (min-max) over the runs and the ratio of
deliveries/s to publish-server's direct-Kafka row (Apache Kafka); and a PNG chart of
deliveries/s and p99 against N, per K, drawn with gnuplot.

usage: peers-report.py PEERS.jsonl CHART.png
"""
import collections
import json
import statistics
import subprocess
import sys
import tempfile

ROWS = [("kafka", "publish-server, straight to Apache Kafka"),
        ("chat-server", "publish-server, through chat-server (Apache Kafka)"),
        ("kafka3", "publish-server, straight to Apache Kafka, 3 nodes"),
        ("chat-server3", "publish-server, through chat-server (Apache Kafka, 3 nodes)"),
        ("kafka-mock", "publish-server, straight to the mock broker"),
        ("nchan", "nginx + nchan"), ("pushpin", "Pushpin 1.36"), ("centrifugo", "Centrifugo 6.9.1")]


def main():
    path, chart = sys.argv[1], sys.argv[2]
    runs = collections.defaultdict(list)
    notes = {}
    for line in open(path):
        d = json.loads(line)
        key = (d["row"], d["n"], d["k"])
        if d.get("skipped"):
            notes[key] = "not run: " + d["skipped"]
        elif d.get("failed"):
            notes.setdefault(key, "a run failed")
        else:
            runs[key].append(d)
    ns = sorted({k[1] for k in list(runs) + list(notes)})
    ks = sorted({k[2] for k in list(runs) + list(notes)})

    def med(key, field):
        values = [r[field] for r in runs.get(key, [])]
        if not values:
            return None
        return statistics.median(values), min(values), max(values)

    print("| server | N | K | deliveries/s | p50 ms | p99 ms | max ms | lost | RSS KiB/conn | CPU s | deliveries vs direct Kafka | Kafka hop p99 ms | publish-server own p99 ms | Kafka floor p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    series = {}
    for k in ks:
        for n in ns:
            base = med(("kafka", n, k), "deliveries_per_s") or med(("kafka3", n, k), "deliveries_per_s")
            for row, label in ROWS:
                key = (row, n, k)
                d = med(key, "deliveries_per_s")
                if d is None:
                    if key not in notes:
                        continue  # a row this run did not measure
                    print(f"| {label} | {n} | {k} | {notes.get(key, 'no run')} |  |  |  |  |  |  |  |  |  |  |")
                    continue
                p50, p99, mx = med(key, "p50_ms"), med(key, "p99_ms"), med(key, "max_ms")
                rss, cpu = med(key, "rss_per_connection_kib"), med(key, "server_cpu_s")
                lost = max(r["lost"] for r in runs[key])
                ratio = f"{d[0] / base[0]:.2f}" if base else ""
                # publish-server only: the bucket bounds (le) holding the
                # 99th percentile of the Kafka hop and of its own share,
                # median of runs.
                def le(field):
                    values = [r[field] for r in runs[key] if r.get(field) is not None]
                    return f"<= {statistics.median(values):g}" if values else ""
                hop, own = le("kafka_hop_p99_le_ms"), le("fanout_p99_le_ms")
                # A plain consumer's send-to-receipt p99 beside it (--floor).
                floor = med(key, "floor_p99_ms") if all(r.get("floor_p99_ms") is not None for r in runs[key]) else None
                floor = f"{floor[0]:.1f} ({floor[1]:.1f}-{floor[2]:.1f})" if floor else ""
                fmt = lambda m, p=0: f"{m[0]:.{p}f} ({m[1]:.{p}f}-{m[2]:.{p}f})"
                print(f"| {label} | {n} | {k} | {fmt(d)} | {fmt(p50, 1)} | {fmt(p99, 1)} | {mx[0]:.1f} | {lost} | "
                      f"{rss[0]:.2f} | {cpu[0]:.1f} | {ratio} | {hop} | {own} | {floor} |")
                series.setdefault((row, k), []).append((n, d[0], p99[0]))
    for key, note in sorted(notes.items()):
        if key not in runs:
            continue
        print(f"\nnote: {key[0]} N={key[1]} K={key[2]}: {note}")
    draw(chart, series, ks)
    print(f"\nchart: {chart}")


def draw(chart, series, ks):
    files = []
    for (row, k), points in series.items():
        f = tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False)
        for n, deliveries, p99 in sorted(points):
            f.write(f"{n} {deliveries} {p99}\n")
        f.close()
        files.append((row, k, f.name))
    script = [f"set terminal pngcairo size 1200,{420 * 2}", f"set output '{chart}'",
              f"set multiplot layout 2,{len(ks)}", "set logscale x", "set grid", "set key top left",
              "set xlabel 'subscribers (N)'"]
    # p99 spans 0.1 ms to seconds between servers: on a log scale.
    for column, ylabel, yscale in [(2, "deliveries per second", "unset logscale y"),
                                   (3, "p99 publish-to-receipt (ms, log scale)", "set logscale y")]:
        for k in ks:
            plots = ", ".join(f"'{name}' using 1:{column} with linespoints lw 2 title '{row}'"
                              for row, kk, name in files if kk == k)
            script += [yscale, f"set title 'K = {k} chat(s)'", f"set ylabel '{ylabel}'",
                       f"plot {plots}" if plots else "plot 0 notitle"]
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)


if __name__ == "__main__":
    main()
