#!/usr/bin/env python3
"""Merges `bnbdist-bench nccl` and nccl_torch.py results (same host, same run) into one JSON and a Markdown table.
Usage: nccl_table.py BNBDIST.json TORCH.json OUT.json  (prints the table)"""
import json, sys

ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
base = {(r["op"], r["bytes"]): r for r in theirs["rows"]}
rows = []
for r in ours["rows"]:
    t = base.get((r["op"], r["bytes"]))
    rows.append({"op": r["op"], "bytes": r["bytes"], "bnbdist_time_us": r["time_us"], "bnbdist_busbw_gbps": r["busbw_gbps"],
                 "torch_time_us": t and t["time_us"], "torch_busbw_gbps": t and t["busbw_gbps"],
                 "ratio": t and t["time_us"] and round(t["time_us"] / r["time_us"], 3)})
doc = {"device": ours["device"], "world_size": ours["world_size"], "nccl": ours["nccl"], "torch": theirs.get("torch"),
       "torch_nccl": theirs.get("nccl"), "dtype": "float32", "iters": ours["iters"], "reps": ours["reps"],
       "method": "iters async collectives between CUDA events, median of reps after 5 warm-ups; busbw as nccl-tests; "
                 "ratio = torch time / bnbdist time (>= 0.95 meets the issue's 5 % goal)", "rows": rows}
json.dump(doc, open(sys.argv[3], "w"), indent=2)
print(f"| op | size | BnbDist busbw GB/s | torch.distributed busbw GB/s | torch time / BnbDist time |")
print("|---|---|---|---|---|")
for r in rows:
    size = f"{r['bytes'] / 2**20:.0f} MiB"
    print(f"| {r['op']} | {size} | {r['bnbdist_busbw_gbps']} | {r['torch_busbw_gbps']} | {r['ratio']} |")
