"""Short summary of `ncu --import R --csv --page details --print-units base` (stdin or a file).

One line per profiled kernel: duration, DRAM bytes and GB/s (dram__bytes_read/write.sum over
gpu__time_duration.sum) and % of peak, SOL DRAM / memory / SM throughput, achieved and theoretical
occupancy, registers per thread, L1/L2 hit rates. Labels come from ncu_driver.py's launch order.
"""

from __future__ import annotations

import csv
import io
import sys

LABELS = ["tiled f32", "direct f32", "v1 f32", "tiled f16", "direct f16"]  # ncu_driver.CONFIGS
TIME = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
BYTES = {"byte": 1.0, "B": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def num(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def main() -> int:
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    start = text.find('"ID"')
    if start < 0:
        print("ncu summary: no CSV rows found")
        return 1
    kernels: dict[str, dict] = {}
    for row in csv.DictReader(io.StringIO(text[start:])):
        k = kernels.setdefault(row["ID"], {"name": row.get("Kernel Name", "?"), "block": row.get("Block Size", ""),
                                           "grid": row.get("Grid Size", "")})
        k[(row.get("Section Name", ""), row["Metric Name"])] = (num(row["Metric Value"]), row.get("Metric Unit", ""))
        k[row["Metric Name"]] = (num(row["Metric Value"]), row.get("Metric Unit", ""))

    def get(k, *keys):
        for key in keys:
            if key in k and k[key][0] is not None:
                return k[key]
        return (None, "")

    head = (f"{'kernel':<11}{'us':>8}{'DRAM MB':>9}{'GB/s':>8}{'DRAM%':>7}{'Mem%':>6}{'SM%':>6}"
            f"{'occ':>6}{'theo':>6}{'regs':>5}{'L1hit':>7}{'L2hit':>7}  block/grid")
    print(head)
    for i, (kid, k) in enumerate(sorted(kernels.items(), key=lambda kv: int(kv[0]))):
        label = LABELS[i] if i < len(LABELS) else k["name"][:10]
        dur, unit = get(k, "gpu__time_duration.sum", "Duration")
        us = dur * TIME.get(unit, 1.0) if dur is not None else None
        rd, ru = get(k, "dram__bytes_read.sum")
        wr, wu = get(k, "dram__bytes_write.sum")
        mb = (rd * BYTES.get(ru, 1.0) + wr * BYTES.get(wu, 1.0)) / 1e6 if rd is not None and wr is not None else None
        gbs = mb * 1e6 / (us * 1e-6) / 1e9 if mb and us else None

        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"

        print(f"{label:<11}{f(us, '8.1f')}{f(mb, '9.1f')}{f(gbs, '8.0f')}"
              f"{f(get(k, ('GPU Speed Of Light Throughput', 'DRAM Throughput'), 'DRAM Throughput')[0], '7.1f')}"
              f"{f(get(k, ('GPU Speed Of Light Throughput', 'Memory Throughput'))[0], '6.1f')}"
              f"{f(get(k, 'Compute (SM) Throughput')[0], '6.1f')}"
              f"{f(get(k, 'Achieved Occupancy')[0], '6.1f')}{f(get(k, 'Theoretical Occupancy')[0], '6.1f')}"
              f"{f(get(k, 'Registers Per Thread')[0], '5.0f')}{f(get(k, 'L1/TEX Hit Rate')[0], '7.1f')}"
              f"{f(get(k, 'L2 Hit Rate')[0], '7.1f')}  {k['block']}/{k['grid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
