"""Train the reference fraud-like XGBoost binary classifier and write every
artifact the servers and the load generator need.

Output layout (relative to --out):
  model.json, model.ubj          native XGBoost formats (same trees)
  mlflow_model/                  mlflow.xgboost.save_model of the same Booster
  mlserver/model-settings.json   MLServer model repository entry (+ model.json)
  kserve/model.ubj               model dir for the KServe SDK servers
  payloads/*.json                request bodies (1 row and 1,000 rows, per protocol)
  expected.json                  in-process probabilities for those rows
"""

import argparse
import json
import os
import shutil

import numpy as np
import xgboost as xgb
from sklearn.datasets import make_classification

SEED = 42
N_ROWS = 200_000
N_FEATURES = 20
PARAMS = dict(
    n_estimators=300,
    max_depth=6,
    learning_rate=0.1,
    tree_method="hist",
    objective="binary:logistic",
    random_state=SEED,
    n_jobs=2,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="artifacts")
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)

    X, y = make_classification(
        n_samples=N_ROWS,
        n_features=N_FEATURES,
        n_informative=12,
        n_redundant=4,
        weights=[0.97, 0.03],
        flip_y=0.01,
        class_sep=1.0,
        random_state=SEED,
    )
    X = X.astype(np.float32)
    n_train = int(N_ROWS * 0.9)
    clf = xgb.XGBClassifier(**PARAMS)
    clf.fit(X[:n_train], y[:n_train])
    booster = clf.get_booster()

    # same trees in every format; sklearn wrapper metadata is kept in the JSON so
    # MLServer can load it as an XGBClassifier.
    clf.save_model(os.path.join(out, "model.json"))
    clf.save_model(os.path.join(out, "model.ubj"))

    holdout = X[n_train:]
    rng = np.random.default_rng(SEED)
    rows1000 = np.round(holdout[rng.choice(len(holdout), 1000, replace=False)], 6)
    row1 = rows1000[:1]
    p1000 = booster.inplace_predict(rows1000)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y[n_train:], booster.inplace_predict(holdout))

    # MLflow model (pyfunc flavor loads the Booster; predict -> probabilities)
    import mlflow.xgboost
    import pandas as pd
    from mlflow.models import infer_signature

    cols = [f"f{i}" for i in range(N_FEATURES)]
    mdir = os.path.join(out, "mlflow_model")
    shutil.rmtree(mdir, ignore_errors=True)
    sig = infer_signature(pd.DataFrame(row1.astype(np.float64), columns=cols), p1000[:1])
    mlflow.xgboost.save_model(booster, mdir, model_format="ubj", signature=sig)

    # MLServer model repository
    sdir = os.path.join(out, "mlserver")
    os.makedirs(sdir, exist_ok=True)
    shutil.copy(os.path.join(out, "model.json"), os.path.join(sdir, "model.json"))
    with open(os.path.join(sdir, "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "fraud",
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.json"},
            },
            f,
            indent=2,
        )

    # KServe model dir (one model file, like the stock runtime expects)
    kdir = os.path.join(out, "kserve")
    os.makedirs(kdir, exist_ok=True)
    shutil.copy(os.path.join(out, "model.ubj"), os.path.join(kdir, "model.ubj"))

    pdir = os.path.join(out, "payloads")
    os.makedirs(pdir, exist_ok=True)
    for tag, rows in (("1", row1), ("1000", rows1000)):
        lst = rows.astype(np.float64).tolist()
        flat = rows.astype(np.float64).ravel().tolist()
        v2_input = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32", "data": flat}
        bodies = {
            f"v1_{tag}.json": {"instances": lst},
            f"v2_{tag}.json": {"inputs": [v2_input]},
            # MLServer's xgboost runtime returns class labels unless predict_proba is asked for
            f"v2proba_{tag}.json": {"inputs": [v2_input], "outputs": [{"name": "predict_proba"}]},
            f"mlflow_{tag}.json": {"dataframe_split": {"columns": cols, "data": lst}},
        }
        for name, body in bodies.items():
            with open(os.path.join(pdir, name), "w") as f:
                json.dump(body, f, separators=(",", ":"))

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(
            {
                "p1": p1000[:1].tolist(),
                "p1000": p1000.tolist(),
                "holdout_auc": float(auc),
                "xgboost": xgb.__version__,
                "params": PARAMS,
                "n_rows": N_ROWS,
                "n_features": N_FEATURES,
            },
            f,
        )
    print(
        f"trained: holdout AUC={auc:.4f}, trees={booster.num_boosted_rounds()}, "
        f"payload sizes: "
        + ", ".join(f"{n}={os.path.getsize(os.path.join(pdir, n))}B" for n in sorted(os.listdir(pdir)))
    )


if __name__ == "__main__":
    main()
