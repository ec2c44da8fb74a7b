"""Writing coordinate tables (atomically: a temporary file, then a rename)."""
import json
import xml.etree.ElementTree as ET

import numpy as np

from ..fileio import atomic_text, atomic_write


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


def write_star(path, table, tomo_name="tomo", origin=0):
    import starfile
    import pandas as pd
    df = pd.DataFrame({"rlnTomoName": [tomo_name] * len(table),
                       "rlnCoordinateX": table.xyz[:, 0] + origin,
                       "rlnCoordinateY": table.xyz[:, 1] + origin,
                       "rlnCoordinateZ": table.xyz[:, 2] + origin})
    ids, _ = _class_ids(table)
    df["rlnClassNumber"] = ids
    with atomic_write(path, ".star") as tmp:
        starfile.write({"particles": df}, tmp, overwrite=True)
    return path


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


def write_copick(path, table, pixel_size, object_name=None):
    name = object_name or (table.class_names()[0] if table.classes is not None else "particle")
    pts = [{"location": {"x": x * pixel_size, "y": y * pixel_size, "z": z * pixel_size},
            "transformation_": np.eye(4).tolist(), "instance_id": 0,
            **({"score": float(table.scores[i])} if table.scores is not None else {})}
           for i, (x, y, z) in enumerate(table.xyz)]
    return atomic_text(path, json.dumps({"pickable_object_name": name, "user_id": "picker3d",
                                          "session_id": "0", "points": pts}, indent=1))


def write_txt(path, table, column_order="xyz", origin=0):
    idx = ["xyz".index(c) for c in column_order]
    return atomic_text(path, "".join(" ".join(f"{p[i] + origin:.3f}" for i in idx) + "\n" for p in table.xyz))
