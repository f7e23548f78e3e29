#!/usr/bin/env python3
"""Summarizes a JMeter results file (CSV JTL with field names): responses by
status code, latency percentiles, a per-second timeline of 200s and 429s for
each sampler (one sampler per chat), the hot-chat spike's timing (from the
spike's start to the first 429, from its end to the last 429), and every
error that is not a 429. Writes the timeline as a PNG chart with gnuplot
when --chart is given. Exits 1 when a response other than 200 or 429 came.

usage: summarize.py RESULTS.jtl [--chart TIMELINE.png]
"""
import collections
import csv
import os
import subprocess
import sys
import tempfile


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    path = args[0]
    chart = args[args.index("--chart") + 1] if "--chart" in args else None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"{path}: no samples")
        return 1
    for row in rows:
        row["t"] = int(row["timeStamp"])
        row["ms"] = int(row["elapsed"])
    start = min(r["t"] for r in rows)
    end = max(r["t"] + r["ms"] for r in rows)
    labels = sorted({r["label"] for r in rows})
    out = []
    say = out.append
    say(f"{len(rows)} responses in {(end - start) / 1000:.1f} s ({path})")

    say("\nresponses by status code")
    for label in labels + ["all"]:
        mine = [r for r in rows if label in ("all", r["label"])]
        codes = collections.Counter(r["responseCode"] for r in mine)
        say(f"  {label:<28}" + "  ".join(f"{code}: {n}" for code, n in sorted(codes.items())))

    if "snapshot" in rows[0]:
        say("\nserved (200), and answered from a hot chat's snapshot")
        for label in labels + ["all"]:
            mine = [r for r in rows if label in ("all", r["label"])]
            ok = sum(r["responseCode"] == "200" for r in mine)
            snap = sum(r.get("snapshot", "-") not in ("-", "", None) for r in mine)
            say(f"  {label:<28}{ok} of {len(mine)} ({100 * ok / len(mine):.1f} %) served, {snap} from the snapshot")

    say("\nlatency (ms)                     p50     p95     p99     max")
    for label in labels + ["all"]:
        ms = [r["ms"] for r in rows if label in ("all", r["label"])]
        say(f"  {label:<28}{percentile(ms, 50):>6}{percentile(ms, 95):>8}{percentile(ms, 99):>8}{max(ms):>8}")

    seconds = (end - start) // 1000 + 1
    series = [(label, code) for label in labels for code in ("200", "429")]
    counts = {s: [0] * seconds for s in series}
    for r in rows:
        key = (r["label"], r["responseCode"])
        if key in counts:
            counts[key][(r["t"] - start) // 1000] += 1
    say("\ntimeline (responses per second)")
    say("  second  " + "".join(f"{label + ' ' + code:>22}" for label, code in series))
    for s in range(seconds):
        say(f"  {s:>6}  " + "".join(f"{counts[k][s]:>22}" for k in series))

    spike = [r for r in rows if r["threadName"].startswith("hot spike")]
    throttled = [r for r in rows if r["responseCode"] == "429"]
    if spike:
        spike_start = min(r["t"] for r in spike)
        spike_end = max(r["t"] + r["ms"] for r in spike)
        say(f"\nspike: from {(spike_start - start) / 1000:.1f} s to {(spike_end - start) / 1000:.1f} s")
        during = [r for r in rows if not r["label"].startswith("cold")
                  and spike_start <= r["t"] <= spike_end]
        ok = sum(r["responseCode"] == "200" for r in during)
        if during:
            say(f"  hot chat during the spike: {ok} of {len(during)} served"
                f" ({100 * ok / len(during):.1f} %)")
        snapshot = [r for r in rows if r.get("snapshot", "-") not in ("-", "", None)]
        if snapshot:
            first = min(r["t"] for r in snapshot)
            last = max(r["t"] for r in snapshot)
            say(f"  hot: answers from the snapshot from {(first - spike_start) / 1000:.1f} s after"
                f" the spike started to {(last - spike_end) / 1000:+.1f} s after it ended")
        elif "snapshot" in rows[0]:
            say("  no answer from the snapshot: the chat never turned hot")
        hot_throttled = [r for r in throttled if not r["label"].startswith("cold")]
        if hot_throttled:
            first = min(r["t"] for r in hot_throttled)
            last = max(r["t"] for r in hot_throttled)
            say(f"  first 429 {(first - spike_start) / 1000:.1f} s after the spike started")
            say(f"  last 429 {(last - spike_end) / 1000:+.1f} s after the spike ended")
        cold = [r for r in rows if r["label"].startswith("cold")]
        cold_429 = sum(r["responseCode"] == "429" for r in cold)
        say(f"  cold chat: {len(cold)} responses, {cold_429} throttled"
            + (" (never throttled)" if cold_429 == 0 else ""))

    errors = collections.Counter(
        (r["label"], r["responseCode"], r["responseMessage"])
        for r in rows
        if r["responseCode"] not in ("200", "429")
    )
    say("\nerrors other than 429: " + ("none" if not errors else ""))
    for (label, code, message), n in errors.most_common():
        say(f"  {n} x {label}: {code} {message}")
    print("\n".join(out))

    if chart:
        draw(chart, series, counts, seconds)
        print(f"\nchart: {chart}")
    return 1 if errors else 0


def draw(chart, series, counts, seconds):
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as data:
        for s in range(seconds):
            data.write(f"{s} " + " ".join(str(counts[k][s]) for k in series) + "\n")
    plots = ", ".join(
        f"'{data.name}' using 1:{i + 2} with lines lw 2 title '{label} {code}'"
        for i, (label, code) in enumerate(series)
    )
    script = (
        f"set terminal pngcairo size 1000,480\nset output '{chart}'\n"
        "set xlabel 'second of the run'\nset ylabel 'responses per second'\n"
        "set key outside right top\nset grid\n"
        f"plot {plots}\n"
    )
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    finally:
        os.unlink(data.name)


if __name__ == "__main__":
    sys.exit(main())
