"""Reading coordinate files of every supported format into a :class:`CoordTable`."""
import json
import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..errors import InputError
from .table import CoordTable

FORMATS = ("tsv", "txt", "star", "tbl", "coords", "xml", "shrec", "json")


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
    scores = df["rlnAutopickFigureOfMerit"].to_numpy(float) if "rlnAutopickFigureOfMerit" in df.columns else None
    extra = {"tomo": df["rlnTomoName"].astype(str).to_numpy(object)} if "rlnTomoName" in df.columns else None
    return _finish(path, xyz, classes, scores, extra=extra)


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


def read_copick(path, pixel_size, run_name=None):
    """copick JSON picks (Å); ``pixel_size`` converts to voxels. With ``run_name``, a file that
    names another run is refused."""
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
    if run_name and data.get("run_name") and data["run_name"] != run_name:
        raise InputError(f"{path}: picks of run {data['run_name']}, not of run {run_name}")
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
        "json": lambda: read_copick(path, kw.get("pixel_size"), kw.get("run_name")),
    }
    if table is None:
        if fmt not in readers:
            raise InputError(f"--format: unknown coordinate format '{fmt}' (known: {', '.join(FORMATS)})")
        table = readers[fmt]()
    if kw.get("class_name") and fmt != "txt":    # a fixed class name overrides the file's class column
        table.classes = np.asarray([kw["class_name"]] * len(table), dtype=object)
    return table
