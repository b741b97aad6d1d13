"""Rebuild the render job of a logged row from its run directory (config.resolved.yaml + details.log).

A job is deterministic given its config and row: the object and environment come from the resolved
config's asset selection, the control values from the row's ``render_args`` and the seed from the
row. The rebuilt job must give back the row's ``render_args`` and ``seed`` exactly, or the run
directory does not describe it (:class:`ExportError`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from threedb.sim.errors import ThreeDBError
from threedb.sim.store import CONFIG, DETAILS, control_class_name, read_rows, render_args


class ExportError(ThreeDBError):
    """A companion export cannot be made as asked; the message names the run, file or id."""


def check_id_text(job_id: str) -> str:
    """``job_id`` if it can safely name a file or folder (no separators, no leading dot)."""
    text = str(job_id)
    if (not text or "/" in text or "\\" in text or text.startswith(".") or "\x00" in text
            or any(ch in text for ch in "\r\n")):
        raise ExportError(f"job id {job_id!r} cannot name an export folder")
    return text


@dataclass
class RunSource:
    """A run directory opened for re-rendering: its experiment, prepared assets and logged rows."""

    run_dir: Path
    experiment: Any        #: :class:`threedb.sim.config.Experiment`
    prepared: Any          #: :class:`threedb.sim.experiment.PreparedExperiment`
    rows: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunSource":
        """Read ``run_dir``'s rows and config and check its assets (raises ExportError/ConfigError/AssetError)."""
        import yaml

        from threedb.sim.config import experiment_from_dict
        from threedb.sim.experiment import prepare

        run_dir = Path(run_dir).resolve()
        details, config = run_dir / DETAILS, run_dir / CONFIG
        for path in (details, config):
            if not path.is_file():
                raise ExportError(f"{path}: missing; is {run_dir} a threedb run directory?")
        try:
            rows = {str(row["id"]): row for row in read_rows(run_dir)}
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{details}: not a details.log ({type(exc).__name__}: {exc})") from None
        try:
            data = yaml.safe_load(config.read_text())
        except yaml.YAMLError as exc:
            raise ExportError(f"{config}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ExportError(f"{config}: expected a mapping")
        experiment = experiment_from_dict(data, source=config)
        return cls(run_dir, experiment, prepare(experiment), rows)

    def check_ids(self, ids: Iterable[str]) -> list[str]:
        """The ids, each known to details.log and safe as a folder name (else one ExportError naming it)."""
        out = []
        for job_id in ids:
            text = str(job_id)
            if text not in self.rows:
                raise ExportError(f"{self.run_dir / DETAILS}: no job with id {text!r}")
            out.append(check_id_text(text))
        return list(dict.fromkeys(out))

    def job(self, job_id: str) -> dict[str, Any]:
        """The render job of logged row ``job_id``, as the run's master built it."""
        from threedb.sim.jobs import make_job

        row = self.rows[job_id]
        where = f"{self.run_dir / DETAILS}: job {job_id!r}"
        objects = [o for o in self.prepared.objects if o.asset.uid == row.get("object_uid")]
        if not objects:
            raise ExportError(f"{where}: object {row.get('object_uid')!r} is not among the config's objects")
        envs = [e for e in self.prepared.environments
                if row.get("environment") in (Path(str(e.path)).name, e.name)]
        if not envs:
            raise ExportError(f"{where}: environment {row.get('environment')!r} is not among the config's")
        controls = self.experiment.controls
        values = _values_from_render_args(controls, row.get("render_args") or {}, where)
        job = make_job(job_id, self.experiment.seed, objects[0], envs[0], controls, values)
        if job["seed"] != row.get("seed") or render_args(job["controls"]) != row.get("render_args"):
            raise ExportError(f"{where}: the row does not match {self.run_dir / CONFIG} "
                              "(seed or render_args differ); cannot re-render it")
        return job


def _values_from_render_args(controls: list[Any], args: Mapping[str, Any], where: str
                             ) -> dict[str, dict[str, Any]]:
    """Invert :func:`threedb.sim.store.render_args`: {instance name: {param: value}}."""
    classes = [control_class_name({"name": c.name, "ref": c.ref}) for c in controls]
    values: dict[str, dict[str, Any]] = {}
    for spec, cls in zip(controls, classes):
        prefix = f"{cls}[{spec.name}]" if classes.count(cls) > 1 else cls
        values[spec.name] = {key[len(prefix) + 1:]: value for key, value in args.items()
                             if key.startswith(prefix + ".")}
        missing = sorted(set(spec.domains) - set(values[spec.name]))
        if missing:
            raise ExportError(f"{where}: render_args lack {', '.join(f'{prefix}.{m}' for m in missing)}")
    return values
