#!/usr/bin/env python3
"""torch.distributed (NCCL) bus bandwidth, measured exactly as `bnbdist-bench nccl` measures BnbDist's NCCL backend:
f32, sizes doubling from --min-bytes to --max-bytes, `iters` async collectives back to back between two CUDA events
on the current stream, median of `reps` runs after 5 warm-ups. size = the larger buffer; busbw = size / time x
2(n-1)/n (all-reduce) or (n-1)/n (all-gather, reduce-scatter).
Usage: torchrun --standalone --nproc-per-node 2 bench/gpu/nccl_torch.py --out nccl-torch.json"""
import argparse, json, os, statistics

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="nccl-torch.json")
    ap.add_argument("--min-bytes", type=int, default=1 << 20)
    ap.add_argument("--max-bytes", type=int, default=1 << 30)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    w, rank = dist.get_world_size(), dist.get_rank()
    rows = []
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        size = a.min_bytes
        while size <= a.max_bytes:
            n = size // 4 // w * w
            big = torch.randn(n, device="cuda")
            small = torch.randn(n // w, device="cuda")
            issue = {
                "all_reduce": lambda: dist.all_reduce(big, async_op=True),
                "all_gather": lambda: dist.all_gather_into_tensor(big, small, async_op=True),
                "reduce_scatter": lambda: dist.reduce_scatter_tensor(small, big, async_op=True),
            }[op]
            for _ in range(5):
                work = issue()
            work.wait()
            torch.cuda.synchronize()
            times = []
            for _ in range(a.reps):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(a.iters):
                    work = issue()
                work.wait()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / a.iters)
            ms = statistics.median(times)
            algbw = n * 4 / (ms * 1e-3) / 1e9
            factor = 2 * (w - 1) / w if op == "all_reduce" else (w - 1) / w
            rows.append({"op": op, "bytes": n * 4, "time_us": round(ms * 1e3, 2), "algbw_gbps": round(algbw, 2),
                         "busbw_gbps": round(algbw * factor, 2)})
            if rank == 0:
                print(f"{op:<15} {n * 4:>12} B {ms * 1e3:10.1f} us  algbw {algbw:8.1f} GB/s  busbw {algbw * factor:8.1f} GB/s", flush=True)
            del big, small
            size *= 2
    if rank == 0:
        doc = {"impl": "torch.distributed", "torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version())),
               "device": torch.cuda.get_device_name(local), "world_size": w, "iters": a.iters, "reps": a.reps,
               "dtype": "float32", "rows": rows}
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=2)
        print("wrote", a.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
