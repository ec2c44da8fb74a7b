"""The coordinate table every command reads and writes, and class diameters."""
import numpy as np

from ..errors import InputError


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
