"""The one error class of the projection job."""
from __future__ import annotations

from threedb.sim.errors import ThreeDBError


class ProjectJobError(ThreeDBError):
    """The projection job cannot run as asked (bad data for the configured grouping, a projection the
    algorithm refuses); the message says what was wrong, where, and what to change."""
