"""threedb.sim.assets: the default asset pack, user asset roots, and up-front checks of meshes and HDRIs.

Never imports ``bpy`` (HDRIs bundled with Blender are located with ``importlib``).
"""
from threedb.sim.assets.catalog import (AssetCatalog, EnvironmentAsset, ObjectAsset, blender_hdri_dir,
                                        load_catalog)
from threedb.sim.assets.environments import check_environment
from threedb.sim.assets.meshes import MeshNormalization, check_mesh

__all__ = ["AssetCatalog", "ObjectAsset", "EnvironmentAsset", "MeshNormalization", "load_catalog",
           "check_mesh", "check_environment", "blender_hdri_dir"]
