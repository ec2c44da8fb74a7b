"""picker3d engine: numpy/torch science with no Scipion import, usable from a plain script.

Subpackages: ``formats`` (coordinate tables and files, MRC I/O), ``simulation`` (synthetic
tomograms with ground truth), ``training``, ``picking``, ``classification``; modules:
``masks`` (weak labels), ``metrics`` (evaluation), ``network``, ``pu``, ``volume``,
``fileio``, ``modelinfo`` / ``modelfile``, ``devices``, ``sampling``; ``options`` (every option of
train, pick and classify, declared once) and ``cli`` / ``commands`` (the ``picker3d`` command).
docs/developers.md maps them.
"""
from .errors import InputError

__all__ = ["InputError"]
