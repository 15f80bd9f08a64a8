"""Named stages of a job where a test stops it, to check what a process killed there leaves.

With ``DSC_TEST_PAUSE_AT=<stage>`` in its environment, a job that reaches :func:`pause_at` of
that stage prints ``dsc: paused at <stage>`` to stderr and sleeps until it is killed. Nothing
but a test sets the variable. The stages: ``analyze-uploaded`` (``dsc analyze``, its
``analysis/`` uploaded, its metrics not yet logged) and ``compare-write-back`` (``dsc compare``,
after the first compared run's ``lld/*`` are written back).
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_VAR = "DSC_TEST_PAUSE_AT"


def pause_at(stage: str) -> None:
    """Sleep here, once announced on stderr, when ``DSC_TEST_PAUSE_AT`` names ``stage``."""
    if os.environ.get(PAUSE_VAR) != stage:
        return
    print(f"dsc: paused at {stage}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)


__all__ = ["PAUSE_VAR", "pause_at"]
