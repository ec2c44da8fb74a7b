"""picker3d's version, in a module of its own: the engine, the plugin and setup.py read it without
importing anything else."""
__version__ = "0.2.0"
