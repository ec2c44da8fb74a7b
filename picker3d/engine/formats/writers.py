"""Writing coordinate tables (atomically: a temporary file, then a rename)."""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import InputError
from ..fileio import atomic_text, atomic_write

# what 'pick --format' and 'convert --to' write, and the reader format each comes back with
OUTPUT_FORMATS = {"tsv": "tsv", "relion5": "star", "relion": "star", "dynamo": "tbl", "copick": "json"}


def _fmt(v, spec=".3f"):
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return str(v)


def write_table(path, table):
    """Write the canonical tab-separated table (x y z [class] [score] [extras])."""
    header = ["x", "y", "z"]
    cols = [table.xyz[:, 0], table.xyz[:, 1], table.xyz[:, 2]]
    if table.classes is not None:
        header.append("class")
        cols.append(table.classes)
    if table.scores is not None:
        header.append("score")
        cols.append(table.scores)
    for k, v in table.extra.items():
        header.append(k)
        cols.append(v)
    # positions to 1/1000 voxel, scores and extras to 6 significant digits
    specs = [".3f"] * 3 + [".6g"] * (len(cols) - 3)
    lines = ["\t".join(header)]
    for i in range(len(table)):
        lines.append("\t".join(_fmt(c[i], f) for c, f in zip(cols, specs)))
    return atomic_text(path, "\n".join(lines) + "\n")


def _class_ids(table, class_names=None):
    names = class_names or table.class_names()
    if table.classes is None:
        return np.ones(len(table), dtype=int), names
    lookup = {n: i + 1 for i, n in enumerate(names)}
    return np.array([lookup.get(c, int(c) if str(c).isdigit() else 0) for c in table.classes]), names


def _write_star_block(path, table, columns):
    import pandas as pd
    import starfile
    df = pd.DataFrame(columns)
    df["rlnClassNumber"] = _class_ids(table)[0]
    if table.scores is not None:
        df["rlnAutopickFigureOfMerit"] = np.round(table.scores, 6)
    with atomic_write(path, ".star") as tmp:
        starfile.write({"particles": df}, tmp, overwrite=True, float_format="%.6f")
    return path


def write_star(path, table, tomo_name="tomo", origin=0):
    """RELION 3/4 (``rlnCoordinateX/Y/Z``, pixels of the tomogram, origin 0 as Scipion's
    converters write them), the class as ``rlnClassNumber`` (1-based, in order of first
    appearance), the score as ``rlnAutopickFigureOfMerit``."""
    return _write_star_block(path, table, {"rlnTomoName": [tomo_name] * len(table),
                                           "rlnCoordinateX": table.xyz[:, 0] + origin,
                                           "rlnCoordinateY": table.xyz[:, 1] + origin,
                                           "rlnCoordinateZ": table.xyz[:, 2] + origin})


def write_relion5(path, table, tomo_name, tomo_shape, pixel_size):
    """RELION 5: ``rlnTomoName`` and ``rlnCenteredCoordinateX/Y/ZAngst``, Å from the
    tomogram's centre (``X_A = (x - nx / 2) * pixel_size``, the inverse of the reader)."""
    if not pixel_size or pixel_size <= 0:
        raise InputError(f"{path}: RELION 5 coordinates are in Å: a positive pixel size is needed "
                         f"(the tomogram's header has {pixel_size})")
    centre = np.array(tomo_shape[::-1], dtype=float) / 2.0
    xa = (table.xyz - centre) * pixel_size
    return _write_star_block(path, table, {"rlnTomoName": [tomo_name] * len(table),
                                           "rlnCenteredCoordinateXAngst": xa[:, 0],
                                           "rlnCenteredCoordinateYAngst": xa[:, 1],
                                           "rlnCenteredCoordinateZAngst": xa[:, 2]})


def write_tbl(path, table, tomo_index=1, origin=0):
    ids, _ = _class_ids(table)
    rows = []
    for i, (x, y, z) in enumerate(table.xyz):
        r = np.zeros(35)
        r[0], r[1], r[2] = i + 1, 1, 1
        r[12] = 1
        r[19] = tomo_index
        r[21] = ids[i]
        r[23:26] = (x + origin, y + origin, z + origin)
        rows.append(" ".join(_fmt(v) if k in (23, 24, 25) else str(int(v)) for k, v in enumerate(r)))
    return atomic_text(path, "\n".join(rows) + "\n")


def write_coords(path, table, class_names=None):
    ids, _ = _class_ids(table, class_names)
    return atomic_text(path, "".join(f"{c}\t{x:.3f}\t{y:.3f}\t{z:.3f}\n" for c, (x, y, z) in zip(ids, table.xyz)))


def write_xml(path, table):
    root = ET.Element("objlist")
    classes = table.classes if table.classes is not None else ["1"] * len(table)
    for c, (x, y, z) in zip(classes, table.xyz):
        ET.SubElement(root, "object", tomo_idx="0", class_label=str(c), x=f"{x:.3f}", y=f"{y:.3f}", z=f"{z:.3f}")
    return atomic_text(path, ET.tostring(root, encoding="unicode") + "\n")


def write_shrec(path, table):
    classes = table.classes if table.classes is not None else ["1"] * len(table)
    ang = [table.extra.get(k, np.zeros(len(table))) for k in ("rot", "tilt", "psi")]
    return atomic_text(path, "".join(f"{c} {x:.3f} {y:.3f} {z:.3f} {a:.2f} {b:.2f} {g:.2f}\n"
                                      for c, (x, y, z), a, b, g in zip(classes, table.xyz, *ang)))


def write_copick(path, table, pixel_size, object_name=None, user_id="picker3d", session_id="0", run_name=None):
    """A copick picks file (one object): locations in Å (voxel index x voxel spacing), the
    score of each point kept."""
    if not pixel_size or pixel_size <= 0:
        raise InputError(f"{path}: copick locations are in Å: a positive pixel size is needed "
                         f"(the tomogram's header has {pixel_size})")
    name = object_name or (table.class_names()[0] if table.classes is not None else "particle")
    pts = [{"location": {"x": x * pixel_size, "y": y * pixel_size, "z": z * pixel_size},
            "transformation_": np.eye(4).tolist(), "instance_id": 0,
            **({"score": float(table.scores[i])} if table.scores is not None else {})}
           for i, (x, y, z) in enumerate(table.xyz)]
    return atomic_text(path, json.dumps({"pickable_object_name": name, "user_id": user_id,
                                          "session_id": session_id, "run_name": run_name,
                                          "points": pts}, indent=1))


def write_format(path, table, fmt, tomo_name, tomo_shape=None, pixel_size=None):
    """Write ``table`` (one tomogram's picks) in ``fmt`` (a key of OUTPUT_FORMATS) to
    ``path``; copick writes one file per class, ``<path stem>_<class>.json``. Returns the
    paths written."""
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"--format: unknown output format '{fmt}' (known: {', '.join(OUTPUT_FORMATS)})")
    if fmt == "tsv":
        return [write_table(path, table)]
    if fmt == "relion":
        return [write_star(path, table, tomo_name)]
    if fmt == "relion5":
        return [write_relion5(path, table, tomo_name, tomo_shape, pixel_size)]
    if fmt == "dynamo":
        return [write_tbl(path, table)]
    stem = os.path.splitext(path)[0]
    names = table.class_names() or ["particle"]
    return [write_copick(f"{stem}_{name}.json",
                         table.subset(table.classes == name) if table.classes is not None else table,
                         pixel_size, name, run_name=tomo_name) for name in names]


def format_suffix(fmt):
    return {"tsv": ".tsv", "relion5": ".star", "relion": ".star", "dynamo": ".tbl", "copick": ".json"}[fmt]


def write_txt(path, table, column_order="xyz", origin=0):
    idx = ["xyz".index(c) for c in column_order]
    return atomic_text(path, "".join(" ".join(f"{p[i] + origin:.3f}" for i in idx) + "\n" for p in table.xyz))
