"""Several sweep members trained one after another in one process: the imports paid once.

``python -m dsc train-members SPEC`` (a hidden command) reads SPEC, a JSON list of members,
each ``{"run_id", "argv", "log", "rc"}``, and runs ``dsc train ARGV`` for each as the command
line would, attached to its run (``MLFLOW_RUN_ID``), its output in ``log`` and its exit status
written to ``rc``. A member that fails leaves its run FAILED and its ``error:`` line in its
log, and the next member starts. Each member's training sets its own seed before it builds
its model and draws its batches from (seed, epoch), so a member trained here is bit-identical
to one trained in a process of its own.

Used by :mod:`dsc.jobs.sweep` for ``--per-process N`` > 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path


def run_members(spec: Path, train: Callable[[list[str]], None]) -> int:
    """Train every member of ``spec`` in turn; 0 when all succeeded, else 1.

    ``train(argv)`` is ``dsc train ARGV`` as the command line runs it, ending in ``SystemExit``
    with its exit status.
    """
    import mlflow

    failed = 0
    for member in json.loads(spec.read_text()):
        os.environ["MLFLOW_RUN_ID"] = member["run_id"]
        with open(member["log"], "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                train(member["argv"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # a bug: its traceback goes to the member's log, the others go on
                traceback.print_exc()
                code = 1
            while mlflow.active_run():
                mlflow.end_run("FAILED" if code else "FINISHED")
        Path(member["rc"]).write_text(str(code))
        failed += code != 0
    os.environ.pop("MLFLOW_RUN_ID", None)
    return 1 if failed else 0
