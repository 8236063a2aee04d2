"""A stand-in for `python -m fact.worker` in the realize unit tests (no GPU).

Reads --job JOB.json and answers per docs/CONTRACTS.md §5. Behaviour per
candidate comes from $FAKE_WORKER_RULES (JSON: list of [substring, action]),
first match wins; action is "ok:<median_ms>[:<max_abs_err>]" (error default 1e-6),
"wrong", "segv" (print begin,
then die by SIGSEGV: a faulting kernel), or "exit" (exit 1 before begin).
Every started job appends one line to $FAKE_WORKER_LOG when set.
"""
import argparse
import json
import os
import signal
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--job", required=True)
args, _ = parser.parse_known_args()
job = json.load(open(args.job))
rules = json.loads(os.environ.get("FAKE_WORKER_RULES", "[]"))
if os.environ.get("FAKE_WORKER_LOG"):
    with open(os.environ["FAKE_WORKER_LOG"], "a") as log:
        log.write(" ".join(c["name"] for c in job["candidates"]) + "\n")
assert job["fact_job"] == 1 and job["trials"] >= 5 and "pattern" in job and "ir" in job


def action(name):
    for sub, act in rules:
        if sub in name:
            return act
    return "ok:1.0"


for cand in job["candidates"]:
    act = action(cand["name"])
    if act == "exit":
        print("ImportError: fake worker cannot import torch", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"event": "begin", "name": cand["name"]}), flush=True)
    print("noise on stdout that is not JSON", flush=True)
    if act == "segv":
        print("CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if act == "wrong":
        res = {"status": "wrong", "reason": "fail_frac 0.3 > eager 0.0 + 0.001", "max_abs_err": 0.5,
               "fail_frac": 0.3, "median_ms": 0.0}
    else:
        fields = act.split(":")
        res = {"status": "ok", "reason": "", "max_abs_err": float(fields[2]) if len(fields) > 2 else 1e-6,
               "fail_frac": 0.0, "median_ms": float(fields[1])}
    out = {"event": "result", "name": cand["name"], "eager_fail_frac": 0.0, "eager_max_abs_err": 1e-6,
           "kb_pass": res["status"] == "ok", "mean_ms": res["median_ms"], "baseline_median_ms": 2.0}
    out.update(res)
    print(json.dumps(out), flush=True)
