#!/usr/bin/env python3
"""Where each rank's time goes in a benchmark's --trace=run.json: per
scheduler and rank, over the steady steps (the second recorded step up to the
last one, as core/trace.cc's SummarizeTrace counts them), the share of each
category (forward, teacher_forward, backward, loss, optimizer_step, message =
sends and receives including their waits, sync), the share of gaps between
actions (dispatch overhead), the compute time per step, and that compute
against the sequential scheduler's when the file has one ("work x": above 1,
the same work took longer under that schedule, e.g. two ranks competing for
memory bandwidth or a shared core). Only the standard library is needed.

  python3 tools/trace_breakdown.py run.json
"""
import collections
import json
import sys

COMPUTE = {"forward", "teacher_forward", "backward", "loss", "optimizer_step", "teacher_update"}


def main(path):
    doc = json.load(open(path))
    names, events = {}, collections.defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "process_name":
            names[e["pid"]] = e["args"]["name"]
        elif e["ph"] == "X" and "list" not in e.get("args", {}):
            events[(e["pid"], e["tid"])].append(e)
    compute_per_step = collections.defaultdict(float)
    lines = []
    for (pid, tid), es in sorted(events.items()):
        es.sort(key=lambda e: e["ts"])
        steps = sorted({e["args"]["step"] for e in es})
        if len(steps) < 3:
            continue
        first, last = steps[1], steps[-1]
        begin = min(e["ts"] for e in es if e["args"]["step"] == first)
        end = min(e["ts"] for e in es if e["args"]["step"] == last)
        window = [e for e in es if begin <= e["ts"] < end]
        span = end - begin
        share = collections.Counter()
        gaps, prev = 0.0, None
        for e in window:
            share[e["cat"]] += e["dur"]
            if prev is not None:
                gaps += max(0.0, e["ts"] - prev["ts"] - prev["dur"])
            prev = e
        compute = sum(v for k, v in share.items() if k in COMPUTE) / (last - first)
        compute_per_step[names[pid]] += compute
        parts = " ".join(f"{k}={v / span:.3f}" for k, v in sorted(share.items()))
        lines.append((names[pid], f"{names[pid]:12s} rank {tid}: {span / (last - first) / 1000:8.2f} "
                      f"ms/step, compute {compute / 1000:8.2f} ms/step; {parts} gaps={gaps / span:.3f}"))
    seq = compute_per_step.get("sequential")
    for name, line in lines:
        print(line)
    if seq:
        print()
        for name, c in sorted(compute_per_step.items()):
            print(f"{name:12s} compute {c / 1000:8.2f} ms/step over all ranks, work x {c / seq:.3f} "
                  "of sequential's")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: trace_breakdown.py run.json")
    main(sys.argv[1])
