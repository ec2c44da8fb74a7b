"""Picking with a trained network: overlap-tile inference (:mod:`.tiles`), peak
post-processing (:mod:`.peaks`) and whole-tomogram picking with a model file's settings,
slab by slab for thick tomograms (:mod:`.tomogram`)."""
from .peaks import deduplicate, find_particles
from .tiles import predict_volume, tile_overhead, tile_sides, upsample
from .tomogram import default_peak_smoothing, particles_from_probs, peak_smoothing, pick_tomogram

__all__ = ["deduplicate", "default_peak_smoothing", "find_particles", "particles_from_probs", "peak_smoothing",
           "pick_tomogram", "predict_volume", "tile_overhead", "tile_sides", "upsample"]
