"""picker3d: deep-learning particle picking and clustering-based classification for cryo-ET.

Scipion discovers the plugin through the ``pyworkflow.plugin`` entry point and reads
``picker3d.Plugin`` (defined in :mod:`picker3d.plugin`, loaded on first access). The science
lives in ``picker3d.engine``, which imports neither Scipion nor anything of the Scipion
layer, so ``python -m picker3d`` runs in an environment without Scipion.
"""
from ._version import __version__

__all__ = ["__version__"]

_logo = None
_references = ["Liu2024DeepETPicker", "Moebel2021DeepFinder", "Huang2022SparsePicking",
               "Zeng2023DISCA", "Zeng2020GumNet"]


def __getattr__(name):
    """``picker3d.Plugin``, imported when Scipion asks for it: the engine
    (``python -m picker3d`` in its own environment) imports this package too and must not
    load Scipion (PEP 562 module attribute)."""
    if name == "Plugin":
        from .plugin import Plugin
        return Plugin
    raise AttributeError(f"module 'picker3d' has no attribute {name!r}")
