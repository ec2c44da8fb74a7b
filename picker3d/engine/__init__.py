"""picker3d engine: numpy/torch science with no Scipion import, usable from a plain script.

Modules: ``simulate`` (synthetic tomograms with ground truth), ``coords`` (coordinate
tables and file formats), ``masks`` (weak labels), ``metrics`` (evaluation),
``mrcio`` (validated, atomic MRC I/O), ``cli`` (the ``picker3d`` command).
"""
from .errors import InputError

__all__ = ["InputError"]
