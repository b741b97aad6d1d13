"""A test-only control that reports how many data-blocks of each kind Blender holds."""
from threedb.controls import SceneControl

KINDS = ("objects", "lights", "images", "meshes", "materials", "node_groups", "worlds")


class Probe(SceneControl):
    """Reports how many data-blocks Blender holds (in ``meta["controls_report"]["probe"]``)."""

    name = "probe"

    def apply(self, scene, values):
        import bpy

        scene.report[self.instance_name] = {k: len(getattr(bpy.data, k)) for k in KINDS}

    def undo(self, scene):
        pass
