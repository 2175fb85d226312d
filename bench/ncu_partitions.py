"""Warp-stall samples per partition of the warp-specialized Gluon kernel, from ncu's source page
(`ncu -i REPORT --page source --csv --print-source sass --kernel-name regex:gluon_intra`; `bash
bench/device_kernels.sh gluonncu` writes it as gluon_source_sass.csv.gz). The SASS of one kernel holds both
partitions: the streamers' code follows `USETMAXREG.DEALLOC` (their lowered register count), the inverters'
code starts at the next `USETMAXREG.TRY_ALLOC` and ends at the last EXIT; after it come the mbarrier wait loops
(samples there are reported apart). With two kernels in the file (inverters alone, MODE=1, then the whole kernel)
the last table is the per-reason difference of the inverters' samples: what co-running costs them. With three
(inverters alone, streamers alone, whole: GLUON_NCU_STREAMERS=1) the same for each partition against its own
launch alone.

    python bench/ncu_partitions.py gluon_source_sass.csv.gz
"""

import collections
import csv
import gzip
import re
import sys


def kernels(path: str) -> list[dict]:
    """[{'name', 'hdr', 'rows'}] per kernel section of the CSV."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    out, cur = [], None
    for r in rows:
        if r and r[0] == "Kernel Name":
            cur = dict(name=r[1], rows=[])
            out.append(cur)
        elif r and r[0] == "Address" and cur is not None:
            cur["hdr"] = r
        elif r and r[0].startswith("0x") and cur is not None:
            cur["rows"].append(r)
    return out


def partitions(k: dict) -> dict[str, collections.Counter]:
    """Samples and stall reasons per region: prologue, streamers, inverters, wait loops."""
    h, rows = k["hdr"], k["rows"]
    i_all = h.index("Warp Stall Sampling (All Samples)")
    reasons = [c for c in h if c.startswith("stall_") and "Not Issued" not in c]
    addr = [int(r[0], 16) for r in rows]
    dealloc = next(a for a, r in zip(addr, rows) if "USETMAXREG.DEALLOC" in r[1])
    inv = next(a for a, r in zip(addr, rows) if a > dealloc and "USETMAXREG.TRY_ALLOC" in r[1])
    end = max(a for a, r in zip(addr, rows) if re.search(r"\bEXIT\b", r[1]))
    regions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for a, r in zip(addr, rows):
        name = ("wait loops" if a > end else "inverters" if a >= inv else "streamers" if a > dealloc
                else "prologue")
        regions[name]["samples"] += float(r[i_all] or 0)
        for c in reasons:
            regions[name][c[6:]] += float(r[h.index(c)] or 0)
    return regions


def main(path: str) -> int:
    ks = kernels(path)
    inverters, streamers = [], []
    for k in ks:
        regions = partitions(k)
        total = sum(c["samples"] for c in regions.values())
        print(f"## {k['name']}: {total:.0f} samples")
        for name, c in regions.items():
            top = ", ".join(f"{x} {v / total:.1%}" for x, v in c.most_common(9) if x != "samples" and v)
            print(f"  {name:10s} {c['samples'] / total:6.1%}  {top}")
        inverters.append(regions["inverters"])
        streamers.append(regions["streamers"])
    pairs = {2: [("inverters", inverters[0], inverters[1])],
             3: [("inverters", inverters[0], inverters[2]), ("streamers", streamers[1], streamers[2])]}
    for name, a, b in pairs.get(len(ks), []):
        print(f"\n## {name}: alone → beside the other partition (samples per reason, sorted by the increase)")
        for x in sorted(set(a) | set(b), key=lambda x: a[x] - b[x]):
            if a[x] or b[x]:
                print(f"  {x:16s} {a[x]:7.0f} → {b[x]:7.0f}  {b[x] - a[x]:+7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
