"""Simulated cryo-electron tomograms with ground truth (the embedded default dataset).

Real tomograms cannot be downloaded here, so picker3d generates its own test bed.
The imaging recipe follows the one summarised in Gum-Net's supplement (Gum-Net,
§S3, "simulation recipe"): rigidly placed structures are projected along a
single-axis tilt series, each projection is modulated by the CTF, Gaussian noise is
added to a target SNR and the series is back-projected.

Geometry and conventions
- Volumes are ``data[z, y, x]``; the tilt axis is ``y``; a tilt by ``theta`` projects
  onto the detector axis ``u = x cos(theta) + z sin(theta)`` (centred coordinates).
  The same formula is used by the projector and the back-projector, so the
  reconstruction is not z-mirrored (a wrong tilt sign mirrors it; a test checks this).
- Density is positive protein potential; the CTF (under-focus, Δf > 0) makes the low
  frequencies negative, so particles are dark in the reconstruction, as in real data.
- SNR = var(signal) / var(noise) per projection, where the signal of a tomogram is the
  labelled particles' CTF-modulated projection inside their footprints (a particle box,
  as Gum-Net defines a sub-tomogram's SNR, Gum-Net §S3.5.1) and the noise is the same
  for every tilt (constant dose). Gold, membranes and crowders therefore add contrast,
  not noise. (Earlier builds let the whole field's variance per projection set the noise,
  so distractors raised it: SNR 0.05 then gave the particles an SNR of 0.02-0.03.)
  Sub-tomogram stacks use each box's whole variance.

Particles are built deterministically from pseudo-atoms (points splatted into the
grid, then blurred by one Gaussian), orientations are uniform on SO(3), and nothing
overlaps. Unlabelled crowders, membranes, vesicles and gold beads are optional
distractors that are NOT in the ground truth.

Modules: :mod:`.species` (the particles), :mod:`.scene` (placement, density, occupancy),
:mod:`.imaging` (tilt series, CTF, noise, back-projection), :mod:`.dataset` (tomograms,
sub-tomogram stacks and the files ``picker3d simulate`` writes).
"""
from .dataset import simulate_subtomograms, simulate_tomogram, write_simulation
from .species import SPECIES_BUILDERS, build_species

__all__ = ["SPECIES_BUILDERS", "build_species", "simulate_subtomograms", "simulate_tomogram", "write_simulation"]
