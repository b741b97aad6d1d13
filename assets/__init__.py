"""threedb.assets: package data — the default asset pack index, label maps, model weights, textures."""
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
"""Folder holding the packaged asset data files."""
