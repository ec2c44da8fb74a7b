"""Conversion between Scipion sets and the engine's coordinate tables.

Positions go through tomo's ``BOTTOM_LEFT_CORNER`` convention: the engine's voxel
coordinates are 0-based array indices with x along the fastest MRC axis, which is what
Scipion's bottom-left-corner origin means (the convention Dynamo's and Relion-tomo's
writers read back). Class names travel with each coordinate (``_picker3dClass``) and
their order with the set (``_picker3dClasses``); ``groupId`` holds the 1-based class
index that other plugins understand.
"""
import json
import math
import os

import numpy as np
import pyworkflow.object as pwobj
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import Coordinate3D

from .engine.formats.table import CoordTable

CLASS_ATTR = "_picker3dClass"
CLASSES_ATTR = "_picker3dClasses"


def box_from_diameter(diameter_px):
    """Box size in pixels for a particle diameter: the diameter rounded up to an even number."""
    return int(2 * math.ceil(float(diameter_px) / 2.0))


def set_class_names(coord_set, names):
    setattr(coord_set, CLASSES_ATTR, pwobj.String(json.dumps(list(names))))


def get_class_names(coord_set):
    """Class names stored on a picker3d set (loading the set property when needed), or None."""
    value = getattr(coord_set, CLASSES_ATTR, None)
    if value is None and hasattr(coord_set, "loadProperty"):
        try:
            coord_set.loadProperty(CLASSES_ATTR, None)
            value = getattr(coord_set, CLASSES_ATTR, None)
        except Exception:
            value = None
    text = value.get() if hasattr(value, "get") else value
    return json.loads(text) if text else None


def coordinate_class(coord, single_class=None):
    """Class name of one coordinate: picker3d's own attribute, else the group id as text."""
    if single_class:
        return single_class
    name = getattr(coord, CLASS_ATTR, None)
    if name is not None and name.get():
        return name.get()
    gid = coord.getGroupId()
    return str(gid if gid is not None else 1)


def tables_from_coordinates(coord_set, single_class=None, scale=1.0, with_ids=False):
    """{tsId: CoordTable} from a SetOfCoordinates3D (positions in pixels of its tomograms).

    ``scale`` multiplies positions (coordinates sampling / target sampling); ``with_ids``
    adds the coordinates' object ids as an ``objId`` column (to map results back).
    """
    rows = {}
    for coord in coord_set.iterCoordinates():
        x, y, z = coord.getPosition(BOTTOM_LEFT_CORNER)
        score = coord.getScore() if hasattr(coord, "getScore") else None
        rows.setdefault(coord.getTomoId(), []).append(
            (x * scale, y * scale, z * scale, coordinate_class(coord, single_class),
             1.0 if score is None else float(score), coord.getObjId()))
    out = {}
    for ts_id, r in rows.items():
        xyz = np.array([t[:3] for t in r], dtype=float)
        extra = {"objId": [t[5] for t in r]} if with_ids else None
        out[ts_id] = CoordTable(xyz, [t[3] for t in r], [t[4] for t in r], extra)
    return out


def append_table(coord_set, table, tomo, class_names):
    """Append a table's particles on ``tomo`` to ``coord_set`` (identity orientation)."""
    index = {c: i + 1 for i, c in enumerate(class_names)}
    scores = table.scores if table.scores is not None else np.ones(len(table))
    classes = table.classes if table.classes is not None else [class_names[0]] * len(table)
    eye = np.eye(4)
    for (x, y, z), cls, score in zip(table.xyz, classes, scores):
        coord = Coordinate3D()
        coord.setVolume(tomo)
        coord.setPosition(float(x), float(y), float(z), BOTTOM_LEFT_CORNER)
        coord.setGroupId(index[cls])
        coord.setScore(float(score))
        coord.setMatrix(eye)
        setattr(coord, CLASS_ATTR, pwobj.String(cls))
        coord_set.append(coord)


def tomograms_by_ts_id(tomo_set):
    """{tsId: tomogram clone}; a set without tsIds gets an error naming it."""
    out = {}
    for tomo in tomo_set.iterItems():
        ts_id = tomo.getTsId()
        if not ts_id:
            raise ValueError(f"tomogram {tomo.getFileName()} of set {tomo_set.getObjName() or ''} has no tsId")
        out[ts_id] = tomo.clone()
    return out


def tomogram_link_path(folder, ts_id):
    """Where :func:`link_tomogram` puts the link of tomogram ``ts_id`` in ``folder``."""
    return os.path.join(folder, ts_id + ".mrc")


def link_tomogram(tomo, folder):
    """Symbolic link ``folder/<tsId>.mrc`` to the tomogram's file (inputs stay untouched)."""
    os.makedirs(folder, exist_ok=True)
    src = os.path.abspath(tomo.getFileName().split(":")[0])
    dst = tomogram_link_path(folder, tomo.getTsId())
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(src, dst)
    return dst


def alignment_transforms(table, box):
    """{objId: pwem Transform} from a classify table's alignment columns (``rot tilt psi``,
    ZYZ degrees, and ``shift_x shift_y shift_z``, voxels) for boxes of side ``box``, in the
    tomo plugin's matrix convention (``subtomogram(r) = average(M r)`` about the box centre),
    which Relion-tomo's and Dynamo's writers turn into their angles and origins
    (picker3d.engine.formats.relion_subtomo). Empty when the table has no alignment."""
    from pwem.objects import Transform

    from .engine.formats.relion_subtomo import ALIGNMENT_COLUMNS, scipion_matrices
    if not all(c in table.extra for c in ALIGNMENT_COLUMNS) or "objId" not in table.extra:
        return {}
    values = np.stack([np.asarray(table.extra[c], float) for c in ALIGNMENT_COLUMNS], 1)
    aligned = np.all(np.isfinite(values), axis=1)     # a class of one member is not aligned
    matrices = scipion_matrices(values[aligned, :3], values[aligned, 3:], box)
    ids = np.asarray(table.extra["objId"])[aligned]
    return {int(oid): Transform(m) for oid, m in zip(ids, matrices)}
