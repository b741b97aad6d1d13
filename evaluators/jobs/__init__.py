"""What every robustness job shares (docs/robustness.md): the YAML job config, the output directory
with ``--resume``, ``report.json``, plots, progress and summary, and the dataset + model in pixel space.

Each piece is one small module: :mod:`.config`, :mod:`.output`, :mod:`.report`, :mod:`.plots`,
:mod:`.progress`, :mod:`.data`. A job (e.g. :mod:`threedb.evaluators.attack`) composes them.
"""
from threedb.evaluators.jobs.config import JobConfig, config_digest, load_job_config, model_spec
from threedb.evaluators.jobs.output import JobOutput, JobOutputError
from threedb.evaluators.jobs.report import REPORT_FORMAT, REPORT_VERSION, binomial_se, new_report, table, versions

__all__ = ["JobConfig", "JobOutput", "JobOutputError", "REPORT_FORMAT", "REPORT_VERSION", "binomial_se",
           "config_digest", "load_job_config", "model_spec", "new_report", "table", "versions"]
