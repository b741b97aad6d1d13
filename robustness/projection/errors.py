"""The one error class of dataset projection."""
from __future__ import annotations


class ProjectionError(ValueError):
    """Dataset projection cannot run as asked (bad shapes, NaN features, empty or too small groups, target
    classes missing from the sources, a bad bandwidth or solver option); the message names what was wrong."""
