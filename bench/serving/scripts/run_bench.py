"""Start each server (one at a time, 127.0.0.1 only), check its answers against the
in-process reference, drive it with wrk, stop it by its PID/process group.

Stdlib only; run through ../run.sh (or ../run_fraud.sh). Results: out/results.jsonl, raw wrk
output and server logs in out/raw/.

``--artifacts DIR`` (default ``$BENCH_ARTIFACTS`` or ``artifacts``) picks the model every server
loads and the payloads sent: ``artifacts`` is the reference model of ``scripts/train.py``,
``artifacts/fraud`` the project's fraud bundle exported by ``scripts/prepare_fraud.py``. Only
the latter has what ``ours`` (``fraud serve``) needs: the bundle, the feature tables and the
feature store.
"""

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(HERE))
HOST = "127.0.0.1"
PORT = 18080
CLK = os.sysconf("SC_CLK_TCK")
TOLERANCE = 1e-5


def v1_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


def v2_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def venv(name: str) -> str:
    return os.path.join(".venv", name, "bin")


@dataclass
class Target:
    label: str
    path: str
    prefix: str  # payloads/<prefix>_<rows>.json
    kind: str  # how to read the answer: v1, v2, mlserver, ours_v1, ours_v2, const
    protocol: str  # what it is compared with in the report: v1, v2 or mlflow


@dataclass
class Server:
    argv: list
    env: dict = field(default_factory=dict)
    health: "str | None" = None  # GET path answering 200 when ready; None: POST / until it answers
    targets: list = field(default_factory=list)
    cwd: "str | None" = None  # default: the bench folder
    strict: bool = True  # answers must equal the reference (else: 200, one probability in [0, 1] per row)
    batch: bool = True  # run the 1,000-row case
    counters: tuple = ()  # Prometheus counters on GET /metrics, recorded per case (increase during the case)


# scored rows, rows scored with default features (store read timed out, failed or busy), failed reads;
# the server's own request time (its latency histogram's sum and count: the "server time")
OURS_COUNTERS = (
    "fraud_predictions_total",
    "fraud_degraded_scores_total",
    "fraud_feature_fetch_failures_total",
    "fraud_request_latency_seconds_sum",
    "fraud_request_latency_seconds_count",
)
PEER_MODEL = "fraud"  # the model name every peer serves (kserve --name, mlserver's model-settings.json)


def build_servers(art: str, fraud_bin: str, ours_model: str = "fraud-detector") -> dict:
    """Every server, loading the model files in ``art`` (relative to the bench folder).

    Each server's model name is in its paths: ``PEER_MODEL`` for the peers, ``ours_model`` for ours."""

    def kserve_cmd(mode: str, extra=()):
        return [
            f"{venv('kserve')}/python",
            "servers/kserve_server.py",
            "--mode",
            mode,
            "--model-file",
            f"{art}/kserve/model.ubj",
            "--name",
            PEER_MODEL,
            "--port",
            str(PORT),
            "--host",
            HOST,
            *extra,
        ]

    mlserver_env = {
        "MLSERVER_HOST": HOST,
        "MLSERVER_HTTP_PORT": str(PORT),
        "MLSERVER_GRPC_PORT": str(PORT + 1),
        "MLSERVER_METRICS_PORT": str(PORT + 2),
        "PATH": f"{os.path.join(HERE, venv('mlserver'))}:{os.environ['PATH']}",
    }
    V1, V2 = v1_path(PEER_MODEL), v2_path(PEER_MODEL)
    servers = {
        "mlflow": Server(
            [
                f"{venv('mlflow')}/mlflow",
                "models",
                "serve",
                "-m",
                f"{art}/mlflow_model",
                "--env-manager",
                "local",
                "-h",
                HOST,
                "-p",
                str(PORT),
                "-w",
                "1",
            ],
            {"PATH": f"{os.path.join(HERE, venv('mlflow'))}:{os.environ['PATH']}"},
            "/ping",
            [
                Target(
                    "mlflow pyfunc /invocations (dataframe_split)", "/invocations", "mlflow", "v1", "mlflow"
                )
            ],
        ),
        "kserve-inplace": Server(
            kserve_cmd("inplace"),
            {},
            "/v2/health/ready",
            [
                Target("kserve SDK inplace_predict, V1", V1, "v1", "v1", "v1"),
                Target("kserve SDK inplace_predict, V2", V2, "v2", "v2", "v2"),
            ],
        ),
        "kserve-inplace-nolog": Server(
            kserve_cmd("inplace", ["--latency-logging", "off"]),
            {},
            "/v2/health/ready",
            [Target("kserve SDK inplace_predict, V1, latency log off", V1, "v1", "v1", "v1")],
            batch=False,
        ),
        "kserve-dmatrix": Server(
            kserve_cmd("dmatrix"),
            {},
            "/v2/health/ready",
            [Target("kserve SDK DMatrix+predict (xgbserver's path), V1", V1, "v1", "v1", "v1")],
        ),
        "kserve-const": Server(
            kserve_cmd("const"),
            {},
            "/v2/health/ready",
            [
                Target("FLOOR kserve SDK constant predict, V1", V1, "v1", "const", "v1"),
                Target("FLOOR kserve SDK constant predict, V2", V2, "v2", "const", "v2"),
            ],
        ),
        "asgi-floor": Server(
            [f"{venv('kserve')}/python", "servers/asgi_floor.py", "--host", HOST, "--port", str(PORT)],
            {},
            None,
            [Target("FLOOR raw uvicorn ASGI, no parsing", V1, "v1", "const", "v1")],
            batch=False,
        ),
        "mlserver": Server(
            [f"{venv('mlserver')}/mlserver", "start", f"{art}/mlserver"],
            dict(mlserver_env),
            f"/v2/models/{PEER_MODEL}/ready",
            [
                Target(
                    "MLServer xgboost runtime, V2 (default: 1 parallel worker process)",
                    V2,
                    "v2proba",
                    "mlserver",
                    "v2",
                )
            ],
        ),
        "mlserver-pw0": Server(
            [f"{venv('mlserver')}/mlserver", "start", f"{art}/mlserver"],
            dict(mlserver_env, MLSERVER_PARALLEL_WORKERS="0"),
            f"/v2/models/{PEER_MODEL}/ready",
            [
                Target(
                    "MLServer xgboost runtime, V2, MLSERVER_PARALLEL_WORKERS=0 (in-process)",
                    V2,
                    "v2proba",
                    "mlserver",
                    "v2",
                )
            ],
        ),
    }
    # Ours: `fraud serve` (the project venv), model fraud-detector, features from the online store
    # (FRAUD_FEATURE_STORE_DIR), its prediction event log under out/events/. It runs from the repo
    # root (the CLI's default config paths are relative to it), so every path it gets is absolute.
    abs_art = os.path.join(HERE, art)
    ours_argv = [
        fraud_bin,
        "serve",
        "--model",
        f"{abs_art}/bundle",
        "--features-dir",
        f"{abs_art}/features",
        "--host",
        HOST,
        "--port",
        str(PORT),
    ]
    ours_env = {"FRAUD_FEATURE_STORE_DIR": f"{abs_art}/feature_store"}
    for name, extra_env, note in (
        ("ours", {}, ""),
        ("ours-nobatch", {"FRAUD_SERVE_BATCH_WAIT_MS": "-1"}, ", micro-batching off"),
        # shadow mode on: a second copy of the bundle scores every merged batch off the request path
        ("ours-shadow", {"FRAUD_SERVE_SHADOW_MODEL": f"{abs_art}/bundle"}, ", shadow mode on"),
    ):
        servers[name] = Server(
            [*ours_argv, "--events-dir", os.path.join(HERE, "out", "events", name)],
            dict(ours_env, **extra_env),
            f"/v2/models/{ours_model}/ready",
            [
                Target(f"ours: fraud serve{note}, V1", v1_path(ours_model), "ours_v1", "ours_v1", "v1"),
                Target(f"ours: fraud serve{note}, V2", v2_path(ours_model), "ours_v2", "ours_v2", "v2"),
            ],
            cwd=REPO,
            strict=False,
            counters=OURS_COUNTERS,
        )
    return servers


ORDER = [
    "mlflow",
    "mlserver",
    "mlserver-pw0",
    "kserve-inplace",
    "kserve-dmatrix",
    "kserve-inplace-nolog",
    "kserve-const",
    "asgi-floor",
    "ours",
    "ours-nobatch",
    "ours-shadow",
]
OURS = ("ours", "ours-nobatch", "ours-shadow")


# (case, payload rows, wrk connections, duration seconds)
def cases(d1: int, db: int, batch: bool):
    out = [("1row_c1", "1", 1, d1), ("1row_c16", "1", 16, d1)]
    if batch:
        out.append(("1000rows_c1", "1000", 1, db))
    return out


def post(path: str, body: bytes, timeout=60):
    req = urllib.request.Request(
        f"http://{HOST}:{PORT}{path}", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:  # keep the server's explanation
        return e.code, e.read()


def degraded_rows(kind: str, resp: bytes):
    """Rows answered with default features (ours: the feature store read failed or timed out)."""
    j = json.loads(resp)
    if kind == "ours_v1":
        return sum(bool(p.get("degraded")) for p in j["predictions"] if isinstance(p, dict))
    if kind == "ours_v2":
        outs = {o["name"]: o for o in j["outputs"]}
        return sum(bool(v) for v in outs["degraded"]["data"]) if "degraded" in outs else 0
    return 0


def extract(kind: str, resp: bytes):
    j = json.loads(resp)
    if kind == "v1":
        return [float(v) for v in j["predictions"]]
    if kind == "v2":
        return [float(v) for v in j["outputs"][0]["data"]]
    if kind == "mlserver":  # predict_proba: shape [n, 2], row-major -> class-1 column
        d = j["outputs"][0]["data"]
        return [float(v) for v in d[1::2]]
    if kind == "ours_v1":  # [{"transaction_id": .., "fraud_probability": .., "decision": ..}, ...]
        return [float(p["fraud_probability"] if isinstance(p, dict) else p) for p in j["predictions"]]
    if kind == "ours_v2":  # the output named fraud_probability
        outs = {o["name"]: o for o in j["outputs"]}
        if "fraud_probability" not in outs:
            raise RuntimeError(f"no output named fraud_probability in {sorted(outs)}")
        return [float(v) for v in outs["fraud_probability"]["data"]]
    return None


def check(art: str, target: Target, expected, strict: bool) -> str:
    """Send the 1- and 1,000-row payloads once; compare with the reference probabilities.

    strict: any difference above TOLERANCE fails the target. Not strict (ours): a failure is only
    a non-200, a wrong count or a value outside [0, 1]; the difference is reported, marked
    MISMATCH when above TOLERANCE."""
    notes = []
    for rows in ("1", "1000"):
        with open(f"{art}/payloads/{target.prefix}_{rows}.json", "rb") as f:
            status, resp = post(target.path, f.read())
        if status != 200:
            raise RuntimeError(f"{target.label}: HTTP {status}: {resp[:300]!r}")
        try:
            got = extract(target.kind, resp)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise RuntimeError(f"{target.label}: unexpected answer ({e!r}): {resp[:300]!r}") from e
        if got is None:
            notes.append(f"{rows}: 200, {len(resp)}B (constant)")
            continue
        exp = expected["p" + rows]
        if len(got) != len(exp):
            raise RuntimeError(f"{target.label}: {len(got)} predictions, expected {len(exp)}")
        bad = [v for v in got if not 0.0 <= v <= 1.0]
        if bad:
            raise RuntimeError(f"{target.label}: {len(bad)} values outside [0, 1], e.g. {bad[0]}")
        err = max(abs(a - b) for a, b in zip(got, exp, strict=True))
        if err > TOLERANCE and strict:
            raise RuntimeError(f"{target.label}: max abs diff {err} vs in-process reference")
        flag = " MISMATCH" if err > TOLERANCE else ""
        degraded = degraded_rows(target.kind, resp)
        if degraded:
            flag += f" DEGRADED {degraded}/{len(got)} rows"
        notes.append(f"{rows}: max|diff|={err:.1e}{flag}")
    return "; ".join(notes)


def scrape(names) -> dict:
    """Sum of each named Prometheus sample over its labels, from GET /metrics ({} without names)."""
    if not names:
        return {}
    with urllib.request.urlopen(f"http://{HOST}:{PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def group_cpu_ticks(pgid: int) -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5 (pgrp)
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def wait_ready(proc, health, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} (log: out/raw/<server>.run<N>.server.log)"
            )
        try:
            if health is None:
                post("/", b"{}", timeout=2)
                return time.time() - t0
            else:
                with urllib.request.urlopen(f"http://{HOST}:{PORT}{health}", timeout=2) as r:
                    if r.status == 200:
                        return time.time() - t0
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready in time")


def stop(proc):
    """End the server we started: SIGTERM to its process group (its PGID is its PID,
    start_new_session=True), then SIGKILL to the same group if still there after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wrk(path, body_file, conns, secs, client_cpu):
    cmd = [
        "taskset",
        "-c",
        client_cpu,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{secs}s",
        "--timeout",
        "10s",
        "-s",
        "lua/post.lua",
        f"http://{HOST}:{PORT}{path}",
    ]
    env = dict(os.environ, WRK_BODY=body_file)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=secs + 60)
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]  # noqa: E741
    if not line:
        raise RuntimeError(f"wrk gave no result: {r.stdout} {r.stderr}")
    return json.loads(line[0][7:]), " ".join(cmd), r.stdout


def parse_env_overrides(items):
    """--server-env NAME:KEY=VALUE (repeatable) -> {NAME: {KEY: VALUE}}."""
    out = {}
    for item in items:
        name, sep, kv = item.partition(":")
        key, sep2, value = kv.partition("=")
        if not (sep and sep2 and key):
            raise SystemExit(
                f"--server-env {item!r}: expected NAME:KEY=VALUE, e.g. ours:FRAUD_LOG_LEVEL=WARNING"
            )
        out.setdefault(name, {})[key] = value
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--duration", type=int, default=15, help="seconds per 1-row case")
    ap.add_argument("--batch-duration", type=int, default=10, help="seconds for the 1,000-row case")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--server-cpu", default="1")
    ap.add_argument("--client-cpu", default="0")
    ap.add_argument("--only", default="", help="comma-separated server names")
    ap.add_argument(
        "--artifacts",
        default=os.environ.get("BENCH_ARTIFACTS", "artifacts"),
        help="model + payload folder, relative to the bench folder: artifacts (reference "
        "model, default) or artifacts/fraud (our bundle, scripts/prepare_fraud.py)",
    )
    ap.add_argument(
        "--fraud-bin",
        default=os.environ.get("FRAUD_BIN", os.path.join(REPO, ".venv", "bin", "fraud")),
        help="the project's fraud CLI, for the ours* servers",
    )
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="extra environment for one server (repeatable), e.g. ours:FRAUD_LOG_LEVEL=WARNING",
    )
    ap.add_argument(
        "--strict-ours",
        action="store_true",
        help="fail ours* when its probabilities differ from the reference (default: report)",
    )
    ap.add_argument(
        "--custom-cmd",
        default="",
        help="another server, run from the bench folder: a command line in which {host}, {port} and "
        "{artifacts} are replaced; it must serve --custom-model on the KServe V1 and V2 paths "
        "and answer like the reference servers (V1 predictions / first V2 output)",
    )
    ap.add_argument("--custom-name", default="custom")
    ap.add_argument("--ours-model", default="fraud-detector", help="model name in the ours* servers' paths")
    ap.add_argument("--custom-model", default=PEER_MODEL, help="model name in the custom server's paths")
    ap.add_argument("--custom-health", default="", help="default: /v2/models/<custom-model>/ready")
    a = ap.parse_args()
    os.chdir(HERE)
    art = a.artifacts.rstrip("/")
    servers = build_servers(art, a.fraud_bin, a.ours_model)
    order = list(ORDER)
    if a.custom_cmd:
        argv = [w.format(host=HOST, port=PORT, artifacts=art) for w in shlex.split(a.custom_cmd)]
        m = a.custom_model
        servers[a.custom_name] = Server(
            argv,
            {},
            a.custom_health or f"/v2/models/{m}/ready",
            [
                Target(f"{a.custom_name}, V1", v1_path(m), "v1", "v1", "v1"),
                Target(f"{a.custom_name}, V2", v2_path(m), "v2", "v2", "v2"),
            ],
        )
        order.append(a.custom_name)
    for name, env in parse_env_overrides(a.server_env).items():
        if name not in servers:
            raise SystemExit(f"--server-env: unknown server {name!r}; known: {', '.join(servers)}")
        servers[name].env.update(env)
    if a.strict_ours:
        for name in OURS:
            servers[name].strict = True
    has_bundle = os.path.isdir(f"{art}/bundle")
    if a.only:
        names = a.only.split(",")
        unknown = [n for n in names if n not in servers]
        if unknown:
            raise SystemExit(f"--only: unknown server(s) {unknown}; known: {', '.join(servers)}")
    else:  # ours needs the fraud artifacts; with the reference model it is left out
        names = [n for n in order if has_bundle or n not in OURS]
    os.makedirs("out/raw", exist_ok=True)
    with open(f"{art}/expected.json") as f:
        expected = json.load(f)
    with open("out/results.jsonl", "a") as results:

        def write(record: dict) -> None:
            results.write(json.dumps(record) + "\n")
            results.flush()

        for run in range(1, a.runs + 1):
            for name in names:
                if name in OURS and not has_bundle:
                    msg = f"{art} has no fraud bundle: run ./run_fraud.sh (or scripts/prepare_fraud.py) first"
                    print(f"[run {run}] {name}: FAILED: {msg}", flush=True)
                    write(dict(run=run, server=name, failed=msg, artifacts=art))
                    continue
                bench_server(a, art, expected, run, name, servers[name], write)


def bench_server(a, art: str, expected: dict, run: int, name: str, s: Server, write) -> None:
    """Start one server, check and load each of its targets, stop it; records go to ``write``."""
    cmd_txt = " ".join(f"{k}={v}" for k, v in s.env.items() if k != "PATH")
    cmd_txt = (cmd_txt + " " if cmd_txt else "") + shlex.join(s.argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **s.env)
    with open(f"out/raw/{name}.run{run}.server.log", "w") as log:
        proc = subprocess.Popen(
            ["taskset", "-c", a.server_cpu, *s.argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=s.cwd or HERE,
        )
        print(f"[run {run}] {name}: pid {proc.pid}", flush=True)
        label = None  # the target being measured, for the failure record
        try:
            ready_s = wait_ready(proc, s.health)
            for t in s.targets:
                label = t.label
                verdict = check(art, t, expected, s.strict)
                print(f"  {t.label}: ready in {ready_s:.1f}s, check: {verdict}", flush=True)
                wrk(t.path, f"{art}/payloads/{t.prefix}_1.json", 1, a.warmup, a.client_cpu)
                for case, rows, conns, secs in cases(a.duration, a.batch_duration, s.batch):
                    body = f"{art}/payloads/{t.prefix}_{rows}.json"
                    m0 = scrape(s.counters)
                    c0 = group_cpu_ticks(proc.pid)
                    r, cmd, raw = wrk(t.path, body, conns, secs, a.client_cpu)
                    c1 = group_cpu_ticks(proc.pid)
                    m1 = scrape(s.counters)
                    errs = sum(r[k] for k in r if k.startswith("err_"))
                    rec = dict(
                        run=run,
                        server=name,
                        target=t.label,
                        protocol=t.protocol,
                        case=case,
                        rows=int(rows),
                        connections=conns,
                        seconds=secs,
                        rps=r["requests"] / (r["duration_us"] / 1e6),
                        p50_ms=r["p50_us"] / 1000,
                        p90_ms=r["p90_us"] / 1000,
                        p99_ms=r["p99_us"] / 1000,
                        p999_ms=r["p999_us"] / 1000,
                        mean_ms=r["lat_mean_us"] / 1000,
                        errors=errs,
                        requests=r["requests"],
                        server_cpu_ms_per_req=(c1 - c0) / CLK * 1000 / max(r["requests"], 1),
                        check=verdict,
                        wrk_cmd=cmd,
                        server_cmd=cmd_txt,
                        artifacts=art,
                        model=expected.get("model", "reference (scripts/train.py)"),
                        counters={k: m1[k] - m0[k] for k in m0},
                    )
                    write(rec)
                    with open(f"out/raw/{name}.run{run}.{t.prefix}.{case}.wrk.txt", "w") as f:
                        f.write(cmd + "\n" + raw)
                    print(
                        f"    {case}: {rec['rps']:.0f} req/s p50 {rec['p50_ms']:.2f} ms "
                        f"p99 {rec['p99_ms']:.2f} ms cpu/req {rec['server_cpu_ms_per_req']:.2f} ms"
                        f" errors {errs}" + "".join(f", {k} +{v:.0f}" for k, v in rec["counters"].items()),
                        flush=True,
                    )
                if not s.strict:  # the answers after the load: did serving change them?
                    after = check(art, t, expected, False)
                    print(f"  {t.label}: check after load: {after}", flush=True)
                    write(dict(run=run, server=name, target=t.label, check_after_load=after))
        except Exception as e:  # keep going with the next server, but say so
            print(f"  FAILED {name}: {e}", flush=True)
            write(dict(run=run, server=name, target=label, failed=str(e), server_cmd=cmd_txt))
        finally:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
