"""In-process timings (no HTTP): where the per-request time goes.
Usage: inproc.py core    (kserve venv: xgboost, orjson, numpy, pandas, kserve decode)
       inproc.py mlflow  (mlflow venv: pyfunc predict and the scoring server's
                          invocations() function, i.e. the /invocations path minus HTTP)
Model and payloads: the folder $BENCH_ARTIFACTS (default artifacts; artifacts/fraud: our bundle).
Prints JSON: {name: median microseconds per call}."""

import json
import os
import sys
import time

import numpy as np

ART = os.environ.get("BENCH_ARTIFACTS", "artifacts").rstrip("/")


def bench(fn, min_time=1.0, reps=7):
    fn()
    n = 1
    while True:  # calibrate the loop count to ~min_time/reps
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > min_time / reps:
            break
        n *= 2
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return round(float(np.median(samples)), 2)


def load(name):
    with open(f"{ART}/payloads/{name}", "rb") as f:
        return f.read()


def core():
    import orjson
    import pandas as pd
    import xgboost as xgb

    b = xgb.Booster(params={"nthread": 1}, model_file=f"{ART}/model.ubj")
    v1_1, v1_1000 = load("v1_1.json"), load("v1_1000.json")
    x1 = np.asarray(orjson.loads(v1_1)["instances"], dtype=np.float32)
    x1000 = np.asarray(orjson.loads(v1_1000)["instances"], dtype=np.float32)
    x10k = np.tile(x1000, (10, 1))
    cols = [f"f{i}" for i in range(x1.shape[1])]
    r = {}
    r["xgb inplace_predict 1 row"] = bench(lambda: b.inplace_predict(x1))
    r["xgb inplace_predict 1,000 rows"] = bench(lambda: b.inplace_predict(x1000))
    r["xgb inplace_predict 10,000 rows"] = bench(lambda: b.inplace_predict(x10k))
    # the same call with the CPU caches flushed before each call (a server touches lots of
    # other memory between two predictions; a tight loop keeps the trees in cache)
    buf = np.zeros(64 * 1024 * 1024 // 8)
    cold = []
    for _ in range(300):
        buf += 1.0
        t0 = time.perf_counter()
        b.inplace_predict(x1)
        cold.append((time.perf_counter() - t0) * 1e6)
    r["xgb inplace_predict 1 row, caches flushed before each call"] = round(float(np.median(cold)), 2)
    r["xgb inplace_predict 1 row, only 10 trees (fixed per-call cost)"] = bench(
        lambda: b.inplace_predict(x1, iteration_range=(0, 10))
    )
    r["xgb DMatrix+predict 1 row"] = bench(lambda: b.predict(xgb.DMatrix(x1, nthread=1)))
    r["xgb DMatrix+predict 1,000 rows"] = bench(lambda: b.predict(xgb.DMatrix(x1000, nthread=1)))
    r["orjson.loads V1 body 1 row"] = bench(lambda: orjson.loads(v1_1))
    r["orjson.loads V1 body 1,000 rows"] = bench(lambda: orjson.loads(v1_1000))
    r["json.loads V1 body 1,000 rows"] = bench(lambda: json.loads(v1_1000))
    l1000 = orjson.loads(v1_1000)["instances"]
    r["np.array(list) 1,000 rows"] = bench(lambda: np.array(l1000))
    r["pd.DataFrame 1 row"] = bench(lambda: pd.DataFrame(x1, columns=cols))
    r["pd.DataFrame 1,000 rows (from lists)"] = bench(lambda: pd.DataFrame(l1000, columns=cols))
    # kserve's V2 request decode: bytes -> pydantic InferenceRequest -> InferRequest -> numpy
    try:
        from kserve.protocol.infer_type import InferRequest
        from kserve.protocol.rest.v2_datamodels import InferenceRequest

        v2_1, v2_1000 = load("v2_1.json"), load("v2_1000.json")

        def v2(body):
            ir = InferenceRequest.model_validate_json(body)
            return InferRequest.from_inference_request(ir, "fraud").inputs[0].as_numpy()

        r["kserve V2 decode (pydantic+as_numpy) 1 row"] = bench(lambda: v2(v2_1))
        r["kserve V2 decode (pydantic+as_numpy) 1,000 rows"] = bench(lambda: v2(v2_1000))
    except Exception as e:  # API drift: report, don't fail
        r["kserve V2 decode"] = f"skipped: {e!r}"
    return r


def mlflow():
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.pyfunc import scoring_server

    m = mlflow.pyfunc.load_model(f"{ART}/mlflow_model")
    schema = m.metadata.get_input_schema()
    body1, body1000 = load("mlflow_1.json"), load("mlflow_1000.json")
    d1 = json.loads(body1)["dataframe_split"]
    d1000 = json.loads(body1000)["dataframe_split"]
    df1 = pd.DataFrame(d1["data"], columns=d1["columns"])
    df1000 = pd.DataFrame(d1000["data"], columns=d1000["columns"])
    r = {}
    r["mlflow pyfunc.predict(DataFrame) 1 row"] = bench(lambda: m.predict(df1))
    r["mlflow pyfunc.predict(DataFrame) 1,000 rows"] = bench(lambda: m.predict(df1000))

    def inv(body):
        return scoring_server.invocations(body, "application/json", m, schema)

    assert inv(body1).status == 200
    r["mlflow scoring_server.invocations() 1 row"] = bench(lambda: inv(body1))
    r["mlflow scoring_server.invocations() 1,000 rows"] = bench(lambda: inv(body1000))
    return r


if __name__ == "__main__":
    print(json.dumps({"core": core, "mlflow": mlflow}[sys.argv[1]](), indent=1))
