#!/usr/bin/env python3
"""bench/plot.py TSV SVG [SUBTITLE] - draw bench/sweep.sh's results as one SVG:
for each kind of work (durable writes, live reads, cross-silo calls) the
throughput (top) and the p99 latency (bottom) against calls in flight, Granary
and each alternative measured in the same run. Standard library only: the
plot is a few hundred lines of SVG, not worth a plotting package."""
import math
import sys
from collections import defaultdict

WORKS = [("durable", "durable writes"), ("read", "reads of live data"),
         ("cross-silo", "calls across processes")]
COLORS = {"granary": "#d62728", "pgbench-update-prepared": "#1f77b4",
          "pgbench-select-prepared": "#1f77b4", "redis-incr-fsync-always": "#2ca02c",
          "redis-get-no-persistence": "#2ca02c", "erlang-distribution": "#9467bd"}
LABELS = {"granary": "Granary", "pgbench-update-prepared": "pgbench UPDATE..RETURNING (-M prepared)",
          "pgbench-select-prepared": "pgbench SELECT (-M prepared)",
          "redis-incr-fsync-always": "Redis INCR, appendfsync always",
          "redis-get-no-persistence": "Redis GET, no persistence",
          "erlang-distribution": "Erlang gen_server:call, node to node"}
PW, PH, ML, MT, GAP = 300, 190, 62, 40, 58  # panel size, margins


def load(path):
    data = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        next(f)
        for line in f:
            w, system, level, rate, p50, p99 = line.rstrip("\n").split("\t")
            if float(rate) > 0:
                data[w][system].append((int(level), float(rate), float(p99)))
    return data


def nice_max(v):
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def fmt_rate(v):
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


def fmt_us(v):
    return f"{v / 1e3:g} ms" if v >= 1e3 else f"{v:g} us"


def panel(out, x0, y0, series, ylog, title):
    levels = sorted({pt[0] for pts in series.values() for pt in pts}) or [1]
    lx0, lx1 = 0.0, max(math.log2(max(levels)), 1.0)
    sx = lambda lv: x0 + (math.log2(lv) - lx0) / (lx1 - lx0) * PW
    idx = 2 if ylog else 1
    vals = [pt[idx] for pts in series.values() for pt in pts if pt[idx] > 0] or [1.0]
    if ylog:
        ly0 = math.floor(math.log10(min(vals)))
        ly1 = max(math.ceil(math.log10(max(vals))), ly0 + 1)
        sy = lambda v: y0 + PH - (math.log10(max(v, 10 ** ly0)) - ly0) / (ly1 - ly0) * PH
        ticks = [10 ** e for e in range(ly0, ly1 + 1)]
        tick_label = fmt_us
    else:
        top = nice_max(max(vals))
        sy = lambda v: y0 + PH - v / top * PH
        ticks = [top * i / 4 for i in range(5)]
        tick_label = fmt_rate
    out.append(f'<text x="{x0}" y="{y0 - 8}" class="t">{title}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{PW}" height="{PH}" class="frame"/>')
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PW}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{x0 - 5}" y="{y + 4:.1f}" class="yl">{tick_label(t)}</text>')
    for lv in levels:
        x = sx(lv)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + PH}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + PH + 14}" class="xl">{lv}</text>')
    for system, pts in sorted(series.items(), key=lambda kv: kv[0] != "granary"):
        pts = sorted(p for p in pts if p[idx] > 0)
        color = COLORS.get(system, "#555")
        width = 3 if system == "granary" else 1.8
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p[0]):.1f},{sy(p[idx]):.1f}" for i, p in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="{width}"/>')
        for p in pts:
            out.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[idx]):.1f}" r="2.6" fill="{color}"/>')


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot.py TSV SVG [SUBTITLE]")
    data = load(sys.argv[1])
    sub = sys.argv[3] if len(sys.argv) > 3 else ""
    width = ML + len(WORKS) * (PW + GAP) + 10
    legend_y = MT + 12 + 2 * PH + GAP + 40
    height = legend_y + 18 * 4 + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           "<style>.t{font-size:13px;font-weight:bold}.frame{fill:none;stroke:#888}"
           ".grid{stroke:#e4e4e4}.yl{font-size:10px;text-anchor:end;fill:#444}"
           ".xl{font-size:10px;text-anchor:middle;fill:#444}.lg{font-size:11px}"
           ".s{font-size:11px;fill:#555}</style>",
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{ML}" y="16" class="t">Granary and the alternatives, same run: '
           f'throughput (top) and p99 latency (bottom) against calls in flight</text>',
           f'<text x="{ML}" y="30" class="s">{sub}</text>']
    seen = []
    for i, (w, title) in enumerate(WORKS):
        series = data.get(w, {})
        x0 = ML + i * (PW + GAP)
        panel(out, x0, MT + 12, series, False, f"{title}: calls/s")
        panel(out, x0, MT + 12 + PH + GAP, series, True, f"{title}: p99")
        out.append(f'<text x="{x0 + PW / 2}" y="{MT + 12 + 2 * PH + GAP + 30}" class="xl">calls in flight '
                   f'(clients, callers)</text>')
        seen += [s for s in sorted(series) if s not in seen]
    for j, system in enumerate(seen):
        x = ML + (j % 2) * 420
        y = legend_y + 20 + (j // 2) * 18
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" stroke="{COLORS.get(system, "#555")}" '
                   f'stroke-width="3"/>')
        out.append(f'<text x="{x + 30}" y="{y + 4}" class="lg">{LABELS.get(system, system)}</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
