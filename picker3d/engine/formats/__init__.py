"""File formats: coordinate tables and the coordinate formats of the cryo-ET world
(:mod:`.table`, :mod:`.readers`, :mod:`.writers`), and MRC volumes (:mod:`.mrc`).

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
from .readers import FORMATS, guess_format, read_table
from .table import CoordTable, diameter_of, parse_diameters
from .writers import write_table

__all__ = ["FORMATS", "CoordTable", "diameter_of", "guess_format", "parse_diameters", "read_table", "write_table"]
