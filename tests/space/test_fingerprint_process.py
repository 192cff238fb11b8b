"""The fingerprint and the description do not depend on the process that computes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from asyncopt.space import compile_space

# Exec'd here and in child processes, so both build the space from the same source.
SPACE_SOURCE = """
import math
from asyncopt import hp, scope
shared = hp.uniform("shared", -1, 1)
space = {
    "lr": hp.loguniform("lr", math.log(1e-5), math.log(1e-1)),
    "layers": [scope.int(hp.quniform("units", 16, 256, 16)), hp.uniformint("depth", 1, 4)],
    "model": hp.pchoice("model", [
        (0.25, {"kind": "svm", "C": hp.lognormal("C", 0, 1), "s": shared}),
        (0.75, {"kind": "tree", "criterion": hp.choice("criterion", [
            "gini", {"entropy": hp.qlognormal("base", 1, 0.5, 0.1), "s": shared},
        ])}),
    ]),
    "seed": hp.randint("seed", 10),
    "noise": hp.qnormal("noise", 0, 1, 0.5) * 2 + abs(hp.normal("bias", 0, 3)),
    ("tuple", "key"): (hp.qloguniform("batch", 2, 8, 8), None, float("inf")),
}
"""

CHILD = (
    "import json, sys\n"
    "from asyncopt.space import compile_space, rebuild\n"
    "namespace = {}\n"
    "exec(sys.argv[1], namespace)\n"
    "table = compile_space(namespace['space'])\n"
    "stored = compile_space(rebuild(json.loads(sys.argv[2])))\n"
    "print(json.dumps({'own': table.fingerprint, 'stored': stored.fingerprint,\n"
    "                  'labels': list(table.labels), 'description': table.describe()}))\n"
)


def in_process() -> Any:
    namespace: dict[str, Any] = {}
    exec(SPACE_SOURCE, namespace)
    return compile_space(namespace["space"])


def test_fingerprint_is_the_same_in_another_process() -> None:
    table = in_process()
    description = json.dumps(table.describe(), allow_nan=False)
    # A different PYTHONHASHSEED reorders sets and dicts of strings: the fingerprint must
    # not notice.
    env = {**os.environ, "PYTHONHASHSEED": "12345" if os.environ.get("PYTHONHASHSEED") else "0"}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, SPACE_SOURCE, description],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    child = json.loads(completed.stdout)
    assert child["own"] == table.fingerprint
    # A worker without the user's code rebuilds the space from the stored description.
    assert child["stored"] == table.fingerprint
    assert child["labels"] == list(table.labels)
    assert json.dumps(child["description"], allow_nan=False) == description


def test_fingerprint_of_a_known_space_is_pinned() -> None:
    # Studies store the fingerprint: changing how it is computed makes every stored study
    # refuse to resume. Change this value only together with a migration note.
    assert in_process().fingerprint == PINNED


PINNED = "dc237e87df93463c03e09fc7609042fdcf0fff05e3fc0ec1260d2dc88005fb8d"
