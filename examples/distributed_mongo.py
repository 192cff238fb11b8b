"""Several processes share one study in MongoDB; one of them dies and its trials come back.

This script creates a study, starts two `asyncopt worker` processes that join it from the
command line (as other machines would), runs `minimize` here too, and kills one worker
with SIGKILL halfway. Its running trials are reaped when their 3-second lease passes,
queued again once (``retry_of``), and the study still ends with exactly 60 evaluated
trials, tids 0..N without gaps.

Run:  python examples/distributed_mongo.py [mongodb://host/db]

Without a URL (or ``ASYNCOPT_MONGODB_URL``), it starts a throwaway SecantusDB server (a
MongoDB-wire-compatible server, ``pip install SecantusDB``) on a free local port.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

import asyncopt as ao
from asyncopt import hp

HERE = Path(__file__).resolve().parent
MAX_EVALS = 60
LEASE = 3.0

space = {
    "lr": hp.loguniform("lr", math.log(1e-5), math.log(1e-1)),
    "dropout": hp.uniform("dropout", 0.0, 0.6),
    "layers": hp.uniformint("layers", 1, 4),
}


async def objective(params: dict[str, Any]) -> float:
    """Stands in for a remote training job: takes a moment, returns a validation loss."""
    await anyio.sleep(0.2)
    return (
        (math.log10(params["lr"]) + 3) ** 2 / 4
        + (params["dropout"] - 0.2) ** 2
        + 0.05 * abs(params["layers"] - 3)
    )


@contextmanager
def mongodb_url() -> Iterator[str]:
    """The URL given on the command line or in the environment, or a throwaway server's."""
    given = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ASYNCOPT_MONGODB_URL")
    if given:
        yield given
        return
    server = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="asyncopt-demo-")
    process = subprocess.Popen(
        [server, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("could not start the SecantusDB server")
            time.sleep(0.1)
        print(f"started a throwaway SecantusDB server on 127.0.0.1:{port}")
        yield f"mongodb://127.0.0.1:{port}/asyncopt_demo_{uuid.uuid4().hex[:6]}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def start_worker(url: str, study: str) -> subprocess.Popen[str]:
    """What you would run on another machine (here: this directory, so the module imports)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncopt",
            "worker",
            url,
            study,
            "distributed_mongo:objective",
            "--max-evals",
            str(MAX_EVALS),
            "--concurrency",
            "4",
            "--lease",
            str(LEASE),
        ],
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def main(url: str) -> None:
    study = "demo"
    # Create the study (space, seed) before the workers join it.
    async with ao.open_study(url, study, space, seed=42):
        pass
    workers = [start_worker(url, study) for _ in range(2)]
    victim = workers[1]

    async def kill_one_worker_halfway() -> None:
        # Worker ids are host:pid:random; wait until the victim holds running trials.
        mark = f":{victim.pid}:"
        async with ao.open_study(url, study) as handle:
            while True:
                trials = await handle.trials()
                held = [
                    t.tid
                    for t in trials
                    if t.state is ao.TrialState.RUNNING and mark in (t.worker or "")
                ]
                if held and len(trials) >= MAX_EVALS // 3:
                    break
                await anyio.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        print(f"killed worker pid {victim.pid} while it ran trials {held}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_one_worker_halfway)
        result = await ao.minimize(
            objective,
            space,
            max_evals=MAX_EVALS,
            concurrency=4,
            storage=url,
            study=study,
            lease=LEASE,
        )
    for worker in workers:
        output, _ = await anyio.to_thread.run_sync(worker.communicate)
        if worker is not victim:
            print("surviving worker:", output.strip().splitlines()[-1])

    async with ao.open_study(url, study) as handle:
        trials = await handle.trials()
    states = {state.name: sum(t.state is state for t in trials) for state in ao.TrialState}
    retries = [(t.retry_of, t.tid) for t in trials if t.retry_of is not None]
    print(f"{len(trials)} trials, tids 0..{trials[-1].tid}: {states}")
    print(f"requeued after the crash (dead tid -> retry tid): {retries}")
    print(f"best loss {result.best_loss:.4f} with {result.best_params}")


if __name__ == "__main__":
    with mongodb_url() as url:
        anyio.run(main, url)
