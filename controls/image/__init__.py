"""Built-in image controls (applied to the rendered image, after the scene controls are undone)."""
