"""Warp-stall breakdown per kernel from an ncu report's raw page (CSV): where each kernel's warps wait, in
cycles per issued instruction, largest first, beside duration, registers, achieved warps and issue rate.

    ncu -i REPORT.ncu-rep --page raw --csv > raw.csv && python bench/ncu_stalls.py raw.csv
"""
import csv
import sys

KEEP = ("gpu__time_duration.sum", "launch__registers_per_thread", "sm__warps_active.avg.per_cycle_active",
        "smsp__issue_active.avg.per_cycle_active", "smsp__inst_executed.sum",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed")
STALL = "smsp__average_warps_issue_stalled_"


def main(path: str) -> int:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)]
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    names, units, data = rows[head], rows[head + 1], rows[head + 2:]
    col = {n: i for i, n in enumerate(names)}
    for r in data:
        if len(r) < len(names):
            continue
        print(f"\n## {r[col['Kernel Name']][:90]}")
        for k in KEEP:
            if k in col:
                print(f"  {k} = {r[col[k]]} {units[col[k]]}")
        stalls = []
        for n, i in col.items():
            if n.startswith(STALL) and n.endswith("_per_issue_active.ratio"):
                try:
                    stalls.append((float(r[i].replace(",", "")), n[len(STALL):-len("_per_issue_active.ratio")]))
                except ValueError:
                    pass
        for v, n in sorted(stalls, reverse=True)[:9]:
            print(f"  stall {n:24s} {v:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
