"""Turns bench/run's raw figures into one table and a JSON file.

report.py SIDE_BY_SIDE.tsv GO_BENCH.txt OUT.json
"""
import json
import re
import statistics
import sys

sbs_path, go_path, out_path = sys.argv[1:4]

# side-by-side.sh's raw lines: who, what, microseconds (or a count, KiB).
raw = {}
for line in open(sbs_path):
    f = line.rstrip("\n").split("\t")
    if len(f) == 3:
        raw.setdefault((f[0], f[1]), []).append(int(f[2]))


def sbs(who, what, scale=1000.0):
    v = raw.get((who, what))
    return statistics.median(v) / scale if v else None


# Go benchmark lines: name, iterations, then value-unit pairs.
go = {}
for line in open(go_path):
    if not line.startswith("Benchmark"):
        continue
    f = line.split()
    name = re.sub(r"-\d+$", "", f[0])
    metrics = {f[i + 1]: float(f[i]) for i in range(2, len(f) - 1, 2)}
    go[name] = metrics


def gms(name, unit="ns/op"):
    m = go.get(name, {})
    if unit not in m:
        return None
    return m[unit] / 1e6 if unit == "ns/op" else m[unit]


def ratio(a, b):
    return a / b if a is not None and b else None


rows = []


def row(case, nixcell, lxc=None, nspawn=None, target=None, met=None, unit="ms"):
    rows.append({"case": case, "unit": unit, "nixcell": nixcell, "lxc": lxc, "nspawn": nspawn,
                 "target": target, "met": met})


start = [sbs(w, "start -> httpd answers") for w in ("nixcell", "lxc", "nspawn")]
r = ratio(start[0], start[1])
row("start → service answers", *start, target="≤ 0.70× LXC", met=None if r is None else r <= 0.70)
exe = [sbs("nixcell", "exec true"), sbs("lxc", "exec true"), sbs("nspawn", "exec true (nsenter)")]
r, floor = ratio(exe[0], exe[1]), ratio(exe[0], exe[2])
row("exec true (nspawn column: nsenter -a)", *exe, target="≤ 0.5× lxc-attach, ≤ 3× nsenter",
    met=None if r is None or floor is None else r <= 0.5 and floor <= 3)
row("clean stop", sbs("nixcell", "stop (clean)"), sbs("lxc", "stop (clean)"), sbs("nspawn", "stop (clean)"))
row("supervisor RSS per container", 0, sbs("lxc", "supervisor RSS KiB", 1) if raw.get(("lxc", "supervisor RSS KiB")) else None,
    sbs("nspawn", "supervisor RSS KiB", 1) if raw.get(("nspawn", "supervisor RSS KiB")) else None, unit="KiB")
c = gms("BenchmarkCreate")
row("create from --system", c, target="< 50 ms", met=None if c is None else c < 50)
row("start (command returns)", gms("BenchmarkStart"))
row("start → service answers (Go benchmark)", gms("BenchmarkStartToService"))
row("exec true (Go benchmark)", gms("BenchmarkExec"))
row("clean stop (Go benchmark)", gms("BenchmarkStop"))
first, last = gms("BenchmarkScale", "ms/start-1st"), gms("BenchmarkScale", "ms/start-201st")
row("start of the 1st / 201st container", f"{first:.1f} / {last:.1f}" if first and last else None,
    target="201st ≤ 1.2× 1st", met=None if not first or not last else last <= 1.2 * first)
lst = gms("BenchmarkScale", "ms/list-200")
row("list with 200 running", lst, target="< 100 ms", met=None if lst is None else lst < 100)
host = gms("BenchmarkScale", "KiB-host-processes")
row("host processes while 200 run (RSS, all)", host, target="≤ 5120 KiB", met=None if host is None else host <= 5120, unit="KiB")
row("kernel memory per idle container (slab, page tables, stacks)", gms("BenchmarkScale", "KiB-kernel/container"), unit="KiB")
full, clos = gms("BenchmarkStartStore/full"), gms("BenchmarkStartStore/closure")
full1k, clos1k = gms("BenchmarkStartStore/full-1000"), gms("BenchmarkStartStore/closure-1000")
if None not in (full, clos, full1k, clos1k):
    per_path = ((clos1k - full1k) - (clos - full)) / 1000
    extra500 = (clos - full) + 500 * per_path
    row("closure store: extra start time, 500 paths (from 6 and 1006)", extra500, target="< 20 ms", met=extra500 < 20)


def cell(v):
    if v is None:
        return "–"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


print("| case | nixcell | LXC | nspawn | unit | target | met |")
print("|---|---|---|---|---|---|---|")
for x in rows:
    met = {True: "yes", False: "no", None: ""}[x["met"]]
    print(f"| {x['case']} | {cell(x['nixcell'])} | {cell(x['lxc'])} | {cell(x['nspawn'])} | {x['unit']} | {x['target'] or ''} | {met} |")
json.dump({"rows": rows, "side_by_side_raw": {f"{k[0]}/{k[1]}": v for k, v in raw.items()}, "go": go},
          open(out_path, "w"), indent=2, ensure_ascii=False)
