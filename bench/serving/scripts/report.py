"""Render out/results.jsonl and out/inproc_*.json as Markdown tables (stdout)."""

import json
import os
import platform
import subprocess
from collections import OrderedDict

os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open("out/results.jsonl") as f:
    recs = [json.loads(line) for line in f]
ok = [r for r in recs if "case" in r]
after = [r for r in recs if "check_after_load" in r]
# a failure later superseded by a successful rerun of the same (run, server, target) is not shown
done_ = {(r["run"], r["server"], r["target"]) for r in ok}
failed = [
    r
    for r in recs
    if "failed" in r
    and not any(d[:2] == (r["run"], r["server"]) and r.get("target") in (None, d[2]) for d in done_)
]

by = OrderedDict()
for r in ok:
    by.setdefault(r["target"], {}).setdefault(r["case"], {})[r["run"]] = r


def cell(runs, f):
    return " / ".join(f(runs[k]) for k in sorted(runs)) if runs else "-"


models = sorted({r.get("model", "reference (scripts/train.py)") for r in ok})
arts = sorted({r.get("artifacts", "artifacts") for r in ok})
print(f"Model: {'; '.join(models)} (files: `{'`, `'.join(arts)}`).\n")
print("Each cell: run 1 / run 2.\n")
print(
    "| server / path | 1 row, c=1: p50 ms | 1 row, c=1: p99 ms | 1 row, c=1: req/s "
    "| 1 row, c=16: req/s | 1 row, c=16: p99 ms | 1,000 rows, c=1: p50 ms | 1,000 rows, c=1: p99 ms "
    "| server CPU ms/req (1 row c=1 ; 1,000 rows) |"
)
print("|---|---|---|---|---|---|---|---|---|")
for t, cs in by.items():
    c1, c16, b = cs.get("1row_c1", {}), cs.get("1row_c16", {}), cs.get("1000rows_c1", {})
    cpu = cell(c1, lambda r: f"{r['server_cpu_ms_per_req']:.2f}")
    if b:
        cpu += " ; " + cell(b, lambda r: f"{r['server_cpu_ms_per_req']:.1f}")

    def f(key, fmt):
        return lambda r: format(r[key], fmt)

    print(
        f"| {t} | {cell(c1, f('p50_ms', '.2f'))} | {cell(c1, f('p99_ms', '.2f'))} "
        f"| {cell(c1, f('rps', '.0f'))} | {cell(c16, f('rps', '.0f'))} "
        f"| {cell(c16, f('p99_ms', '.1f'))} | {cell(b, f('p50_ms', '.1f'))} "
        f"| {cell(b, f('p99_ms', '.1f'))} | {cpu} |"
    )
errs = sum(r["errors"] for r in ok)
print(f"\nwrk socket/HTTP errors over all cases: {errs}.")
for r in failed:
    where = f" ({r['target']})" if r.get("target") else ""
    print(f"\nFAILED run {r['run']} {r['server']}{where}: {r['failed']}")

# ours vs the peers, throughput ratios from the same run (V1 with V1, V2 with V2; mlflow has one path)
OURS = ("ours", "ours-nobatch", "ours-shadow")
CASES = (("1row_c1", "1 row, c=1"), ("1row_c16", "1 row, c=16"), ("1000rows_c1", "1,000 rows, c=1"))
ours_targets = OrderedDict((r["target"], r) for r in ok if r["server"] in OURS)
if ours_targets:
    idx = {(r["run"], r["server"], r.get("protocol"), r["case"]): r for r in ok}

    def ratio(t, peer, protocol, case):
        runs = sorted({r["run"] for r in ok if r["target"] == t})
        cells = []
        for run in runs:
            mine = next((r for r in ok if r["target"] == t and r["run"] == run and r["case"] == case), None)
            theirs = idx.get((run, peer, protocol, case))
            cells.append(f"{mine['rps'] / theirs['rps']:.2f}x" if mine and theirs else "-")
        return " / ".join(cells)

    print(
        "\nThroughput of ours relative to the peers (req/s of ours ÷ req/s of the peer, same run; "
        "> 1: ours is faster; kserve-inplace on the same protocol, mlflow's /invocations for both). "
        "Each cell: run 1 / run 2.\n"
    )
    header = "| ours / path | " + " | ".join(
        f"{label}: ÷ kserve-inplace | {label}: ÷ mlflow" for _, label in CASES
    )
    print(header + " |")
    print("|---|" + "---|" * (2 * len(CASES)))
    for t, r0 in ours_targets.items():
        cells = []
        for case, _ in CASES:
            cells.append(ratio(t, "kserve-inplace", r0.get("protocol"), case))
            cells.append(ratio(t, "mlflow", "mlflow", case))
        print(f"| {t} | " + " | ".join(cells) + " |")

    print(
        "\nAnswer checks of ours (1 row; 1,000 rows) against the in-process probabilities of the same "
        "booster on the same transactions' feature rows (MISMATCH: max |diff| > 1e-5):\n"
    )
    seen = set()
    for r in ok:
        if r["server"] in OURS and (r["run"], r["target"]) not in seen:
            seen.add((r["run"], r["target"]))
            print(f"- run {r['run']} {r['target']}: before load: {r['check']}")
    for r in after:
        print(f"- run {r['run']} {r['target']}: after load: {r['check_after_load']}")

    def ours_table(intro, value):
        """One row per path of ours, one cell per case (run 1 / run 2), ``value`` of each record."""
        print(f"\n{intro} Each cell: run 1 / run 2.\n")
        print("| ours / path | " + " | ".join(label for _, label in CASES) + " |")
        print("|---|" + "---|" * len(CASES))
        for t in ours_targets:
            print(f"| {t} | " + " | ".join(cell(by[t].get(case, {}), value) for case, _ in CASES) + " |")

    def degraded_cell(r):
        c = r.get("counters") or {}
        scored = c.get("fraud_predictions_total")
        if not scored:
            return "not recorded"
        return f"{c.get('fraud_degraded_scores_total', 0) / scored:.0%} of {scored:.0f}"

    def server_ms_cell(r):
        c = r.get("counters") or {}
        count = c.get("fraud_request_latency_seconds_count")
        if not count:
            return "not recorded"
        return f"{c['fraud_request_latency_seconds_sum'] / count * 1000:.2f}"

    ours_table(
        "Rows ours scored with default features during each case (the feature store read timed out, "
        "failed or found every worker busy: `fraud_degraded_scores_total` on /metrics, increase during "
        "the case, of `fraud_predictions_total`).",
        degraded_cell,
    )
    ours_table(
        "Server time of ours: mean ms per request by the server's own clock, from the handler's start "
        "(body read included) to the answer built (`fraud_request_latency_seconds` sum / count on "
        "/metrics, increase during the case).",
        server_ms_cell,
    )

for kind in ("core", "mlflow"):
    p = f"out/inproc_{kind}.json"
    if os.path.exists(p):
        print(f"\nIn-process ({kind} venv), median µs per call:\n\n| operation | µs |\n|---|---|")
        with open(p) as f:
            timings = json.load(f)
        for k, v in timings.items():
            print(f"| {k} | {v} |")

# versions actually installed in each venv
pk = {
    "mlflow": [
        "mlflow",
        "xgboost",
        "numpy",
        "pandas",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "scikit-learn",
    ],
    "kserve": [
        "kserve",
        "xgboost",
        "numpy",
        "pandas",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "orjson",
        "pydantic",
    ],
    "mlserver": [
        "mlserver",
        "mlserver-xgboost",
        "xgboost",
        "numpy",
        "pandas",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "orjson",
        "pydantic",
    ],
}
venvs = {name: f".venv/{name}/bin/python" for name in pk}
if any(r["server"] in OURS for r in ok):
    pk["project (ours)"] = [
        "fraud-detection",
        "kserve",
        "xgboost",
        "numpy",
        "pandas",
        "feast",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "orjson",
        "pydantic",
    ]
    venvs["project (ours)"] = "../../.venv/bin/python"
print("\nVersions:\n")
for v, names in pk.items():
    code = (
        "import importlib.metadata as m,sys\n"
        "def v(n):\n try: return m.version(n)\n except m.PackageNotFoundError: return 'not installed'\n"
        "print(', '.join(n+' '+v(n) for n in sys.argv[1:]))"
    )
    out = subprocess.run([venvs[v], "-c", code, *names], capture_output=True, text=True)
    pyv = subprocess.run([venvs[v], "-V"], capture_output=True, text=True).stdout.strip()
    print(f"- venv {v} ({pyv}): {out.stdout.strip() or out.stderr.strip()[-200:]}")
wrkv = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
with open("/proc/cpuinfo") as f:
    cpu = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
print(f"- load generator: {wrkv}")
print(f"- machine: {len(cpu)} x {cpu[0] if cpu else '?'}, Linux {platform.release()}")

# exact commands (relative to the bench folder; ours* run from the repo root)
cmds = OrderedDict()
for r in recs:
    if r.get("server_cmd"):
        cmds.setdefault(r["server"], r["server_cmd"])
print("\nServer commands (each prefixed by `taskset -c 1`, env OMP_NUM_THREADS=1):\n")
for name, c in cmds.items():
    print(f"- `{name}`: `{c}`")
art_list = ", ".join(sorted({r.get("artifacts", "artifacts") for r in ok})) or "artifacts"
print(f"\nLoad commands (env WRK_BODY={art_list}/payloads/<protocol>_<rows>.json):\n")
for c in sorted({r["wrk_cmd"] for r in ok}):
    print(f"- `{c}`")
