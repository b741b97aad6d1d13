"""Built-in scene controls (applied in Blender by render workers, undone after each render)."""
