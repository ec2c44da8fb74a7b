"""Coordinate tables and the file formats of the cryo-ET world.

Canonical convention (every CLI command reads and writes it):
    tab-separated text with a header; columns ``x y z`` in voxels, 0-based, the centre
    of the first voxel is 0, ``x`` is the LAST axis of the MRC array ``data[z, y, x]``;
    optional ``class`` (species name or integer) and ``score``; other columns
    (e.g. ``rot tilt psi``) are kept as extra columns.

Other formats, each with its axis order and origin stated where it is read:
    star    RELION: ``rlnCoordinateX/Y/Z`` (pixels, origin 0 as Scipion's converters
            write them; ``origin=1`` for 1-based files) or RELION 5
            ``rlnCenteredCoordinateX/Y/ZAngst`` (Å from the tomogram centre; needs the
            tomogram shape and pixel size: x = X_A / apix + nx / 2).
    tbl     Dynamo table: columns 24-26 (1-based) are x y z, 4-6 the shifts dx dy dz
            that are added, 22 the class; origin 0 as Scipion's dynamo plugin writes.
    coords  DeepETPicker: ``class x y z`` with 1-based integer classes, 0-based voxels.
    xml     DeepFinder object list: ``<object class_label= x= y= z= .../>``, 0-based.
    shrec   SHREC ``particle_locations.txt``: ``CLASS x y z rot tilt psi``, 0-based.
    json    copick: ``points[].location.{x,y,z}`` in Å, location = voxel index × apix.
    txt     plain numbers, whitespace separated, column order selectable
            (``xyz``, IMOD-style ``xzy``, ...) and origin 0 or 1.
"""
import json
import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from .errors import InputError
from .fileio import atomic_text, atomic_write

FORMATS = ("tsv", "txt", "star", "tbl", "coords", "xml", "shrec", "json")


class CoordTable:
    """Particle positions (voxels, 0-based, ``x`` = last array axis) with optional class/score."""

    def __init__(self, xyz, classes=None, scores=None, extra=None):
        self.xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        n = len(self.xyz)
        self.classes = None if classes is None else np.asarray([str(c) for c in classes], dtype=object)
        self.scores = None if scores is None else np.asarray(scores, dtype=np.float64)
        self.extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        for name, col in (("class", self.classes), ("score", self.scores), *self.extra.items()):
            if col is not None and len(col) != n:
                raise ValueError(f"column '{name}' has {len(col)} values for {n} positions")

    def __len__(self):
        return len(self.xyz)

    @classmethod
    def from_rows(cls, rows):
        """Build from dicts with keys x, y, z and optionally class, score and extras."""
        rows = list(rows)
        if not rows:
            return cls(np.zeros((0, 3)))
        keys = [k for k in rows[0] if k not in ("x", "y", "z", "class", "score")]
        return cls([[r["x"], r["y"], r["z"]] for r in rows],
                   classes=[r["class"] for r in rows] if "class" in rows[0] else None,
                   scores=[r["score"] for r in rows] if "score" in rows[0] else None,
                   extra={k: [r[k] for r in rows] for k in keys})

    def subset(self, idx):
        idx = np.asarray(idx)
        if idx.dtype != bool:
            idx = idx.astype(int)      # an empty list would otherwise be a float index
        return CoordTable(self.xyz[idx],
                          None if self.classes is None else self.classes[idx],
                          None if self.scores is None else self.scores[idx],
                          {k: v[idx] for k, v in self.extra.items()})

    def class_names(self):
        """Distinct class names in order of first appearance."""
        if self.classes is None:
            return []
        return list(dict.fromkeys(self.classes.tolist()))

    def scaled(self, factor):
        """Positions rescaled by ``factor`` (e.g. coordinate pixel size / tomogram pixel size)."""
        return CoordTable(self.xyz * factor, self.classes, self.scores, self.extra)

    def check_inside(self, shape_zyx, source="coordinates"):
        """Raise InputError naming the first row outside the volume ``(nz, ny, nx)``."""
        lim = np.array(shape_zyx[::-1], dtype=float) - 0.5
        bad = np.where(np.any((self.xyz < -0.5) | (self.xyz > lim), axis=1))[0]
        if len(bad):
            i = int(bad[0])
            x, y, z = self.xyz[i]
            hint = ""
            if np.all(self.xyz[:, [0, 2, 1]].max(axis=0) <= lim + 0.5) and not np.all(self.xyz.max(axis=0) <= lim + 0.5):
                hint = " (the columns look like x z y: set the column order)"
            raise InputError(f"{source}: row {i + 1} ({x:.1f}, {y:.1f}, {z:.1f}) lies outside the volume "
                             f"x<{shape_zyx[2]}, y<{shape_zyx[1]}, z<{shape_zyx[0]}{hint}; "
                             f"{len(bad)} of {len(self)} rows are outside")


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------

def _number(value, path, line, column):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}:{line}: column '{column}' is not a number: {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{path}:{line}: column '{column}' is {value} (NaN/Inf)")
    return v


def _finish(path, xyz, classes=None, scores=None, extra=None, allow_empty=False):
    table = CoordTable(np.array(xyz, dtype=float).reshape(-1, 3), classes, scores, extra)
    if len(table) == 0 and not allow_empty:
        raise InputError(f"{path}: no coordinates in file")
    if len(table) and np.any(table.xyz < -0.5):
        i = int(np.where(np.any(table.xyz < -0.5, axis=1))[0][0])
        raise InputError(f"{path}: row {i + 1} has a negative coordinate {tuple(np.round(table.xyz[i], 2))}")
    return table


def read_tsv(path, allow_empty=False):
    """Canonical table: header with x, y, z (+ class, score, extras)."""
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        if allow_empty:
            return CoordTable(np.zeros((0, 3)))
        raise InputError(f"{path}: empty file (expected a header line with x y z)")
    header = lines[0].rstrip("\r\n").split("\t") if "\t" in lines[0] else lines[0].split()
    header = [h.strip() for h in header]
    missing = [c for c in ("x", "y", "z") if c not in header]
    if missing:
        raise InputError(f"{path}:1: header lacks column(s) {', '.join(missing)} "
                         f"(found: {' '.join(header)}); the canonical table has x y z [class] [score]")
    cols = {h: [] for h in header}
    for ln_no, ln in enumerate(lines[1:], start=2):
        parts = ln.rstrip("\r\n").split("\t") if "\t" in ln else ln.split()
        if len(parts) != len(header):
            raise InputError(f"{path}:{ln_no}: {len(parts)} columns where the header has {len(header)}")
        for h, v in zip(header, parts):
            cols[h].append(v.strip())
    xyz = [[_number(cols[c][i], path, i + 2, c) for c in ("x", "y", "z")] for i in range(len(lines) - 1)]
    scores = [_number(v, path, i + 2, "score") for i, v in enumerate(cols["score"])] if "score" in cols else None
    extra = {}
    for h in header:
        if h in ("x", "y", "z", "class", "score"):
            continue
        try:
            extra[h] = np.array(cols[h], dtype=float)
        except ValueError:
            extra[h] = np.array(cols[h], dtype=object)
    return _finish(path, xyz, cols.get("class"), scores, extra, allow_empty=allow_empty)


def read_txt(path, column_order="xyz", origin=0, class_name=None):
    """Plain numbers, one particle per line; ``column_order`` names the first three columns."""
    order = column_order.lower()
    if sorted(order) != ["x", "y", "z"]:
        raise InputError(f"column order '{column_order}': must be a permutation of xyz (e.g. xyz, xzy)")
    xyz = []
    with open(path) as fh:
        for ln_no, ln in enumerate(fh, start=1):
            s = ln.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.replace(",", " ").split()
            if len(parts) < 3:
                raise InputError(f"{path}:{ln_no}: expected at least 3 numbers, found {len(parts)}")
            try:
                vals = [float(p) for p in parts[:3]]
            except ValueError:
                if not xyz:  # a header line
                    continue
                raise InputError(f"{path}:{ln_no}: not a number in {s!r}") from None
            if not all(math.isfinite(v) for v in vals):
                raise InputError(f"{path}:{ln_no}: NaN/Inf coordinate")
            d = dict(zip(order, vals))
            xyz.append([d["x"] - origin, d["y"] - origin, d["z"] - origin])
    classes = None if class_name is None else [class_name] * len(xyz)
    return _finish(path, xyz, classes)


def read_star(path, origin=0, tomo_shape=None, pixel_size=None, coords_pixel_size=None):
    """RELION star file; returns a CoordTable (with an ``tomo`` extra column when present)."""
    import starfile
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable STAR file ({exc})") from exc
    df = None
    for block in data.values():
        if hasattr(block, "columns") and ({"rlnCoordinateX", "rlnCenteredCoordinateXAngst"} & set(block.columns)):
            df = block
            break
    if df is None:
        raise InputError(f"{path}: no data block with rlnCoordinateX/Y/Z or rlnCenteredCoordinateX/Y/ZAngst")
    if "rlnCoordinateX" in df.columns:
        xyz = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(float) - origin
    else:
        if tomo_shape is None or not pixel_size:
            raise InputError(f"{path}: RELION 5 centred coordinates need the tomogram shape and pixel size")
        nz, ny, nx = tomo_shape
        xyz = df[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                  "rlnCenteredCoordinateZAngst"]].to_numpy(float) / pixel_size + np.array([nx, ny, nz]) / 2.0
    if not np.all(np.isfinite(xyz)):
        raise InputError(f"{path}: row {int(np.where(~np.isfinite(xyz).all(1))[0][0]) + 1} has a NaN/Inf coordinate")
    classes = df["rlnClassNumber"].astype(str).tolist() if "rlnClassNumber" in df.columns else None
    extra = {"tomo": df["rlnTomoName"].astype(str).to_numpy(object)} if "rlnTomoName" in df.columns else None
    return _finish(path, xyz, classes, extra=extra)


def read_tbl(path, origin=0):
    """Dynamo table: x y z = columns 24-26 plus shifts 4-6; class = column 22; tomo = 20."""
    try:
        arr = np.loadtxt(path, ndmin=2)
    except Exception as exc:
        raise InputError(f"{path}: not a numeric Dynamo table ({exc})") from exc
    if arr.size == 0:
        raise InputError(f"{path}: no coordinates in file")
    if arr.shape[1] < 26:
        raise InputError(f"{path}: {arr.shape[1]} columns; a Dynamo table has at least 26 (x y z are 24-26)")
    if not np.all(np.isfinite(arr[:, :26])):
        raise InputError(f"{path}:{int(np.where(~np.isfinite(arr[:, :26]).all(1))[0][0]) + 1}: NaN/Inf value")
    xyz = arr[:, 23:26] + arr[:, 3:6] - origin
    classes = [str(int(c)) for c in arr[:, 21]]
    return _finish(path, xyz, classes, extra={"tomo": arr[:, 19].astype(int)})


def read_coords(path):
    """DeepETPicker ``.coords``: ``class x y z`` (classes 1-based integers)."""
    classes, xyz = [], []
    with open(path) as fh:
        for ln_no, ln in enumerate(fh, start=1):
            p = ln.split()
            if not p:
                continue
            if len(p) < 4:
                raise InputError(f"{path}:{ln_no}: expected 'class x y z', found {len(p)} fields")
            c = _number(p[0], path, ln_no, "class")
            if c < 1 or c != int(c):
                raise InputError(f"{path}:{ln_no}: class must be an integer >= 1, found {p[0]}")
            classes.append(str(int(c)))
            xyz.append([_number(v, path, ln_no, k) for v, k in zip(p[1:4], "xyz")])
    return _finish(path, xyz, classes)


def read_xml(path):
    """DeepFinder object list XML."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a DeepFinder object-list XML ({exc})") from exc
    xyz, classes = [], []
    for i, obj in enumerate(root.iter("object"), start=1):
        try:
            xyz.append([float(obj.attrib[k]) for k in ("x", "y", "z")])
        except (KeyError, ValueError):
            raise InputError(f"{path}: object {i} lacks numeric x, y, z attributes") from None
        classes.append(obj.attrib.get("class_label", "1"))
    return _finish(path, xyz, classes)


def read_shrec(path):
    """SHREC ``particle_locations.txt``: ``CLASS x y z rot tilt psi``."""
    classes, xyz, ang = [], [], []
    with open(path) as fh:
        for ln_no, ln in enumerate(fh, start=1):
            p = ln.split()
            if not p or p[0].startswith("#"):
                continue
            if len(p) < 4:
                raise InputError(f"{path}:{ln_no}: expected 'CLASS x y z [rot tilt psi]'")
            classes.append(p[0])
            xyz.append([_number(v, path, ln_no, k) for v, k in zip(p[1:4], "xyz")])
            ang.append([_number(v, path, ln_no, k) for v, k in zip(p[4:7], ("rot", "tilt", "psi"))]
                       + [0.0] * (3 - len(p[4:7])))
    ang = np.array(ang).reshape(-1, 3)
    return _finish(path, xyz, classes, extra={"rot": ang[:, 0], "tilt": ang[:, 1], "psi": ang[:, 2]})


def read_copick(path, pixel_size):
    """copick JSON picks (Å); ``pixel_size`` converts to voxels."""
    if not pixel_size or pixel_size <= 0:
        raise InputError(f"{path}: copick locations are in Å: a positive pixel size is needed")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from exc
    pts = data.get("points")
    if pts is None:
        raise InputError(f"{path}: no 'points' list (not a copick picks file)")
    name = data.get("pickable_object_name", "1")
    xyz, scores = [], []
    for i, p in enumerate(pts, start=1):
        try:
            loc = p["location"]
            xyz.append([float(loc[k]) / pixel_size for k in ("x", "y", "z")])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: point {i} lacks location x, y, z") from None
        scores.append(float(p.get("score", 1.0) or 1.0))
    return _finish(path, xyz, [name] * len(xyz), scores)


def guess_format(path):
    ext = os.path.splitext(path)[1].lower()
    base = os.path.basename(path).lower()
    if "particle_locations" in base:
        return "shrec"
    return {".tsv": "tsv", ".star": "star", ".tbl": "tbl", ".coords": "coords", ".xml": "xml",
            ".json": "json", ".txt": "txt", ".csv": "txt"}.get(ext, "tsv")


def read_table(path, fmt=None, **kw):
    """Read any supported format into a CoordTable; ``fmt=None`` guesses from the name.

    Keyword arguments are passed to the format's reader (``column_order``, ``origin``,
    ``class_name``, ``pixel_size``, ``tomo_shape``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: coordinate file not found")
    fmt = fmt or guess_format(path)
    table = None
    if fmt == "tsv":
        # a headerless numeric file given as .tsv is a plain table
        with open(path) as fh:
            first = fh.readline().split()
        try:
            float(first[0]) if first else None
            headerless = bool(first)
        except ValueError:
            headerless = False
        if headerless:
            fmt = "txt"
        else:
            table = read_tsv(path, allow_empty=kw.get("allow_empty", False))
    readers = {
        "txt": lambda: read_txt(path, kw.get("column_order", "xyz"), kw.get("origin", 0), kw.get("class_name")),
        "star": lambda: read_star(path, kw.get("origin", 0), kw.get("tomo_shape"), kw.get("pixel_size")),
        "tbl": lambda: read_tbl(path, kw.get("origin", 0)),
        "coords": lambda: read_coords(path),
        "xml": lambda: read_xml(path),
        "shrec": lambda: read_shrec(path),
        "json": lambda: read_copick(path, kw.get("pixel_size")),
    }
    if table is None:
        if fmt not in readers:
            raise InputError(f"--format: unknown coordinate format '{fmt}' (known: {', '.join(FORMATS)})")
        table = readers[fmt]()
    if kw.get("class_name") and fmt != "txt":    # a fixed class name overrides the file's class column
        table.classes = np.asarray([kw["class_name"]] * len(table), dtype=object)
    return table


# ----------------------------------------------------------------------------------------
# writing (atomic: temp file + rename)
# ----------------------------------------------------------------------------------------

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


def parse_diameters(text):
    """``name=VOX,name2=VOX`` (or a single number for all classes) → dict name → diameter."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return dict(text)
    out = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
        else:
            k, v = "*", part
        try:
            d = float(v)
        except ValueError:
            raise InputError(f"--diameters: '{part}' is not name=VOXELS") from None
        if not d > 0:
            raise InputError(f"--diameters: diameter of '{k}' must be positive, got {v}")
        out[k.strip()] = d
    return out


def diameter_of(diameters, name):
    if name in diameters:
        return diameters[name]
    if "*" in diameters:
        return diameters["*"]
    raise InputError(f"--diameters: no diameter given for class '{name}' "
                     f"(given: {', '.join(diameters) or 'none'})")


__all__ = ["CoordTable", "read_table", "write_table", "write_star", "write_tbl", "write_coords",
           "write_xml", "write_shrec", "write_copick", "write_txt", "parse_diameters", "diameter_of",
           "FORMATS", "guess_format"]
