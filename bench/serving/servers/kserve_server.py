"""KServe Python SDK predictors used by the benchmark (our code, not a stock runtime).

There is no `xgbserver` package on PyPI (KServe ships it only as a container
image), so these are what a user of the kserve SDK would write:

  --mode inplace   minimal kserve.Model: get_predict_input -> Booster.inplace_predict
                   -> get_predict_response  (V1 and V2 endpoints)
  --mode dmatrix   same, but predicts through xgb.DMatrix + Booster.predict, which is
                   what the stock KServe xgbserver runtime's predict does
  --mode const     floor: decodes nothing from the body beyond what the framework
                   already did, returns a constant prediction of the right shape

KServe 0.21 hard-codes host="0.0.0.0" for its uvicorn server; this script wraps
uvicorn.Config so that it binds --host (default 127.0.0.1) instead.
"""

import argparse

import numpy as np
import uvicorn
import xgboost as xgb
from kserve import InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import get_predict_input, get_predict_response

_OrigConfig = uvicorn.Config


def _bind(host: str) -> None:
    class _Config(_OrigConfig):
        def __init__(self, *a, **kw):
            kw["host"] = host
            super().__init__(*a, **kw)

    uvicorn.Config = _Config
    import kserve.protocol.rest.server as rs

    rs.uvicorn.Config = _Config


class FraudModel(Model):
    def __init__(self, name: str, model_file: str, mode: str, nthread: int):
        super().__init__(name)
        self.model_file, self.mode, self.nthread = model_file, mode, nthread
        self.load()

    def load(self) -> bool:
        self._booster = xgb.Booster(params={"nthread": self.nthread}, model_file=self.model_file)
        self.ready = True
        return True

    def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        if self.mode == "const":
            n = len(payload["instances"]) if isinstance(payload, dict) else payload.inputs[0].shape[0]
            return get_predict_response(payload, np.full(n, 0.5, dtype=np.float32), self.name)
        x = get_predict_input(payload)
        if self.mode == "dmatrix":
            result = self._booster.predict(xgb.DMatrix(x, nthread=self.nthread))
        else:
            result = self._booster.inplace_predict(x)
        return get_predict_response(payload, result, self.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-file", default="artifacts/kserve/model.ubj")
    ap.add_argument("--mode", choices=["inplace", "dmatrix", "const"], default="inplace")
    ap.add_argument("--name", default="fraud")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--nthread", type=int, default=1)
    ap.add_argument(
        "--latency-logging",
        choices=["on", "off"],
        default="on",
        help="kserve's per-request latency log line (kserve default: on)",
    )
    a = ap.parse_args()
    _bind(a.host)
    model = FraudModel(a.name, a.model_file, a.mode, a.nthread)
    ModelServer(
        http_port=a.port, workers=1, enable_grpc=False, enable_latency_logging=(a.latency_logging == "on")
    ).start([model])


if __name__ == "__main__":
    main()
