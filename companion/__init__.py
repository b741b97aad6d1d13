"""Physical-recreation companion: ``threedb companion export`` (renders, overlays, poses, USDZ)."""
