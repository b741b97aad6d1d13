"""threedb.sim: configuration, assets, the Blender renderer, the command line and run orchestration."""
