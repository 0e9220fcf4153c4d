"""Absolute floor for a Python HTTP server on this stack: a raw ASGI app under
uvicorn (same uvicorn/uvloop/httptools as the kserve venv), no FastAPI, no JSON
parsing; it drains the body and returns a constant V1-shaped response."""

import argparse

import uvicorn

BODY = b'{"predictions":[0.5]}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    a = ap.parse_args()
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)
