"""The one error class of the background-variant toolkit."""
from __future__ import annotations


class BackgroundsError(ValueError):
    """Background variants cannot be made or evaluated as asked (bad sample, shapes, too few images to
    balance, bad predictions); the message names the sample, class or argument and what was expected."""
