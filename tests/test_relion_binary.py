"""RELION itself reconstructs what picker3d writes: the proof, by the program users run, that
picker3d's angle and origin conventions are right. Uses Debian's RELION 3.1.3
(``relion_reconstruct``); installed here when missing (apt-get, as root), else the tests fail
with the reason."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from picker3d.engine.formats.mrc import read_volume, write_volume
from picker3d.engine.formats.table import CoordTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def relion_reconstruct():
    """The path of relion_reconstruct, installing Debian's RELION when it is missing."""
    exe = shutil.which("relion_reconstruct")
    if exe:
        return exe
    if shutil.which("apt-get") and os.geteuid() == 0:
        for cmd in (["apt-get", "install", "-y", "-qq", "relion"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "relion"]):
            subprocess.run(cmd, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            exe = shutil.which("relion_reconstruct")
            if exe:
                return exe
    pytest.fail("relion_reconstruct is not installed and Debian's 'relion' package could not be installed "
                "(needs apt-get as root): install RELION 3.1 to run these tests")


def reconstruct(star, out, *extra, cwd=None):
    r = subprocess.run([relion_reconstruct(), "--i", star, "--o", out, "--3d_rot", *extra], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    return read_volume(os.path.join(cwd or ".", out))[0]


def correlation(a, b, sigma=1.0):
    """Pearson correlation inside a sphere of the two volumes, both low-passed alike."""
    from picker3d.engine.classification.alignment import soft_sphere
    m = soft_sphere(a.shape[0]) > 0.5
    a, b = ndimage.gaussian_filter(a, sigma)[m], ndimage.gaussian_filter(b, sigma)[m]
    return float(np.corrcoef(a, b)[0, 1])


def asymmetric_reference(box):
    z, y, x = np.meshgrid(*[np.arange(box)] * 3, indexing="ij")
    c = box // 2
    ref = np.zeros((box,) * 3, np.float32)
    for dx, dy, dz, r, a in [(0, 0, 0, 3, 1.0), (7, 0, 0, 3, 1.0), (-7, -4, 2, 2, 0.9), (0, 6, 0, 2.5, 0.8),
                             (0, 0, -6, 2, 0.6)]:
        ref += a * ((x - c - dx) ** 2 + (y - c - dy) ** 2 + (z - c - dz) ** 2 <= r * r)
    return ndimage.gaussian_filter(ref, 0.8)


def test_relion_binary_reconstructs_known_rotations_and_shifts(tmp_path):
    """Boxes made from a reference with known rotations and shifts (picker3d's convention,
    the alignment's own transform), written as particles.star: RELION rebuilds the reference;
    with the angles zeroed, or the shifts ignored, it does not."""
    from scipy.spatial.transform import Rotation

    from picker3d.engine.classification.alignment import transform_volumes
    from picker3d.engine.formats.relion_subtomo import write_particles_star
    box = 32
    ref = asymmetric_reference(box)
    n = 60
    rot = Rotation.random(n, random_state=3)
    shifts = np.random.default_rng(3).uniform(-2.5, 2.5, (n, 3))
    members = transform_volumes(ref, rot.as_matrix(), shifts)
    names = []
    for i, m in enumerate(members):
        names.append(f"particle_{i + 1:06d}.mrc")
        write_volume(tmp_path / names[-1], m, 8.0)
    euler = rot.as_euler("ZYZ", degrees=True)
    extra = {"box_file": np.asarray(names, dtype=object), "cluster": np.ones(n, int),
             **{k: euler[:, j] for j, k in enumerate(("rot", "tilt", "psi"))},
             **{k: shifts[:, j] for j, k in enumerate(("shift_x", "shift_y", "shift_z"))}}
    table = CoordTable(np.full((n, 3), 50.0), extra=extra)
    write_particles_star(str(tmp_path / "particles.star"), table, box, 8.0, tilt_range=90)
    rec = reconstruct("particles.star", "rec.mrc", cwd=tmp_path)
    assert read_volume(tmp_path / "rec.mrc")[1] == pytest.approx(8.0)
    good = correlation(rec, ref, 0.5)
    assert good >= 0.97, good
    for what in ("rot", "shift_x"):
        wrong = CoordTable(table.xyz, extra={**extra, what: np.zeros(n)})
        if what == "shift_x":
            wrong.extra.update(shift_y=np.zeros(n), shift_z=np.zeros(n))
        write_particles_star(str(tmp_path / f"no_{what}.star"), wrong, box, 8.0, tilt_range=90)
        bad = correlation(reconstruct(f"no_{what}.star", f"no_{what}.mrc", cwd=tmp_path), ref, 0.5)
        assert bad < good - 0.05, (what, bad, good)


def _simulated_boxes(tmp_path):
    """Two species, 16 boxes each (SNR 1, box 28), as 'picker3d simulate --subtomograms'."""
    from picker3d.engine.simulation.dataset import simulate_subtomograms
    stack, rows = simulate_subtomograms(16, 28, seed=5, snr=1.0, species=["large", "shell"])
    path = tmp_path / "boxes.mrc"
    write_volume(path, stack, 10.0)
    from picker3d.engine.formats.writers import write_table
    write_table(str(tmp_path / "boxes.tsv"), CoordTable(np.full((len(rows), 3), 13.5),
                                                        [r["class"] for r in rows]))
    return path


def test_relion_binary_reconstructs_classify_boxes_like_picker3d_average(tmp_path):
    """``classify --boxes-dir`` writes particles.star: relion_reconstruct of each class (with
    and without the missing wedge as CTF) correlates >= 0.9 with picker3d's own average, and
    clearly better than with the angles set to zero."""
    import starfile
    stack = _simulated_boxes(tmp_path)
    boxes = tmp_path / "boxes"
    r = subprocess.run([sys.executable, "-m", "picker3d", "classify", "--subtomograms", str(stack),
                        "--box", "28", "--k-range", "2-2", "--bin", "2", "--iterations", "2", "--device", "cpu",
                        "--split-separation", "0",
                        "--boxes-dir", str(boxes), "--out", str(tmp_path / "labels.tsv")],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    star = starfile.read(boxes / "particles.star", always_dict=True)
    parts = star["particles"]
    assert int(star["optics"]["rlnImageDimensionality"].iloc[0]) == 3
    assert len(parts) == 32 and set(parts["rlnClassNumber"]) == {1, 2}
    zeroed = dict(star, particles=parts.assign(rlnAngleRot=0.0, rlnAngleTilt=0.0, rlnAnglePsi=0.0))
    starfile.write(zeroed, boxes / "zero_angles.star", overwrite=True)
    for cls in (1, 2):
        average = read_volume(tmp_path / "labels_averages" / f"class_{cls:02d}.mrc")[0]
        for ctf in ([], ["--ctf"]):
            rec = reconstruct("particles.star", f"class{cls}{''.join(ctf)}.mrc", "--class", str(cls), *ctf,
                              cwd=boxes)
            cc = correlation(rec, average)
            assert cc >= 0.9, (cls, ctf, cc)
        flat = correlation(reconstruct("zero_angles.star", f"zero{cls}.mrc", "--class", str(cls), cwd=boxes),
                           average)
        assert flat < cc - 0.1, (cls, flat, cc)
