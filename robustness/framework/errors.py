"""The one error class of the robustness-function framework."""
from __future__ import annotations


class FrameworkError(ValueError):
    """A robustness estimate, margin evaluation, autoencoder or loss cannot run as asked (a negative or
    unsorted eps, an empty batch, a sample size of 0, a bad sigma, mismatched shapes); the message names
    what was wrong."""
