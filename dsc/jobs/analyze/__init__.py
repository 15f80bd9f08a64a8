"""``dsc analyze``: the paper's figures and numbers from one finished training run.

`job` is the command and its pipeline; `source` what it reads from a run and `recorded` what
it reads of a Recorder's run; `steps` its steps on snapshots and curves, `images` those that
need the images rebuilt, `classes` emergence and the per-class decomposition, `order` what
predicted the order of the classes, `collapse` neural collapse per epoch and `events` the
event timeline; `plumbing` what every step shares.
"""

from dsc.jobs.analyze.job import ARTIFACT_DIR, Analysis, Source, analyze_job, find_run, read_source, run_analysis

__all__ = ["ARTIFACT_DIR", "Analysis", "Source", "analyze_job", "find_run", "read_source", "run_analysis"]
