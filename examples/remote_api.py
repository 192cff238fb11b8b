"""Tune a model served over HTTP: the objective awaits a request per trial.

The "model server" here is a tiny HTTP server started on 127.0.0.1 by this script, so the
example runs anywhere; point `ENDPOINT` at your own service to use it for real. Requests are
plain HTTP/1.1 over anyio sockets to avoid extra dependencies; with httpx you would write
``await client.post(ENDPOINT, json=params)``.

Run:  python examples/remote_api.py
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import anyio.abc

import asyncopt as ao
from asyncopt import hp

space = {
    "temperature": hp.uniform("temperature", 0.0, 1.5),
    "top_p": hp.uniform("top_p", 0.5, 1.0),
    "prompt": hp.choice("prompt", ["terse", "step-by-step", "few-shot"]),
}


def served_model_loss(request: dict[str, Any]) -> float:
    """What the remote service computes: a validation loss for the given settings."""
    prompt_cost = {"terse": 0.3, "step-by-step": 0.0, "few-shot": 0.1}[request["prompt"]]
    return (request["temperature"] - 0.7) ** 2 + (request["top_p"] - 0.9) ** 2 + prompt_cost


async def handle(client: anyio.abc.SocketStream) -> None:
    async with client:
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += await client.receive()
        head, _, body = raw.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        while len(body) < length:
            body += await client.receive()
        await anyio.sleep(0.02)  # the model takes a moment
        payload = json.dumps({"loss": served_model_loss(json.loads(body))}).encode()
        await client.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )


async def post_json(host: str, port: int, path: str, data: dict[str, Any]) -> Any:
    body = json.dumps(data).encode()
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        response = b""
        try:
            while True:
                response += await stream.receive()
        except anyio.EndOfStream:
            pass
    return json.loads(response.partition(b"\r\n\r\n")[2])


async def main() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)

        async def objective(params: dict[str, Any]) -> float:
            reply = await post_json("127.0.0.1", port, "/evaluate", params)
            return float(reply["loss"])

        result = await ao.minimize(objective, space, max_evals=60, concurrency=8, seed=7)
        print(f"best loss {result.best_loss:.4f} with {result.best_params}")
        assert math.isfinite(result.best_loss)
        group.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
