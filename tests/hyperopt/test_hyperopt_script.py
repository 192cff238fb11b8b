"""A Hyperopt tutorial-style script runs with only its imports changed (in a fresh process)."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

HYPEROPT_SCRIPT = """
import sys
from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, plotting, space_eval, tpe
from hyperopt.early_stop import no_progress_loss
from hyperopt.pyll import scope

space = {
    "x": hp.uniform("x", -10, 10),
    "model": hp.choice(
        "model",
        [
            {"type": "a", "scale": hp.loguniform("scale", np.log(0.01), np.log(10))},
            {"type": "b", "n": scope.int(hp.quniform("n", 1, 20, 1))},
        ],
    ),
}


def objective(params):
    loss = (params["x"] - 2) ** 2
    if params["model"]["type"] == "a":
        loss += abs(np.log(params["model"]["scale"]))
    else:
        loss += params["model"]["n"] / 10
    return {"loss": loss, "status": STATUS_OK, "x": params["x"]}


trials = Trials()
best = fmin(
    fn=objective,
    space=space,
    algo=partial(tpe.suggest, n_startup_jobs=10, gamma=0.2),
    max_evals=150,
    trials=trials,
    early_stop_fn=no_progress_loss(40),
    rstate=np.random.default_rng(42),
    show_progressbar=False,
)
print("best:", best)
print("best params:", space_eval(space, best))
print("trials:", len(trials))
print("best loss:", trials.best_trial["result"]["loss"])
first = trials.trials[0]
print("first result x:", first["result"]["x"] == first["misc"]["vals"]["x"][0])
plotting.main_plot_history(trials, do_show=False)
plt.savefig(sys.argv[1])
"""


def changed_imports(script: str) -> str:
    return re.sub(r"^(from|import) hyperopt\b", r"\1 asyncopt.hyperopt", script, flags=re.M)


def test_a_hyperopt_script_runs_with_only_its_imports_changed(tmp_path: Path) -> None:
    ours = changed_imports(HYPEROPT_SCRIPT)
    changes = [
        line
        for line in difflib.unified_diff(HYPEROPT_SCRIPT.splitlines(), ours.splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changes
    assert all(re.match(r"^[+-](from|import) (asyncopt\.)?hyperopt\b", line) for line in changes)
    script = tmp_path / "tutorial.py"
    script.write_text(ours)
    figure = tmp_path / "history.png"
    completed = subprocess.run(
        [sys.executable, str(script), str(figure)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = dict(line.split(": ", 1) for line in completed.stdout.splitlines())
    assert float(lines["best loss"]) < 1.0
    assert 40 <= int(lines["trials"]) <= 150
    assert lines["first result x"] == "True"
    assert "'model': {'type':" in lines["best params"]
    assert figure.stat().st_size > 0
