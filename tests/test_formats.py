import json

import numpy as np
import pytest

from picker3d.engine.errors import InputError
from picker3d.engine.formats.readers import read_table
from picker3d.engine.formats.table import CoordTable, diameter_of, parse_diameters
from picker3d.engine.formats.writers import (
    write_coords,
    write_copick,
    write_shrec,
    write_star,
    write_table,
    write_tbl,
    write_txt,
    write_xml,
)


@pytest.fixture
def table():
    rng = np.random.default_rng(4)
    xyz = rng.uniform(0, 90, size=(7, 3)).round(3)
    return CoordTable(xyz, classes=["large", "tiny", "large", "rod", "tiny", "tiny", "rod"],
                        scores=rng.uniform(0, 1, 7))


def _same(a, b, tol=1e-3):
    np.testing.assert_allclose(a.xyz, b.xyz, atol=tol)


def test_tsv_round_trip(tmp_path, table):
    p = tmp_path / "a.tsv"
    write_table(p, table)
    back = read_table(p)
    _same(back, table)
    assert back.classes.tolist() == table.classes.tolist()
    np.testing.assert_allclose(back.scores, table.scores, atol=1e-5)
    assert p.read_text().splitlines()[0] == "x\ty\tz\tclass\tscore"


@pytest.mark.parametrize("order", ["xyz", "xzy", "zyx"])
@pytest.mark.parametrize("origin", [0, 1])
def test_txt_round_trip_with_column_order_and_origin(tmp_path, table, order, origin):
    p = tmp_path / "a.txt"
    write_txt(p, table, column_order=order, origin=origin)
    back = read_table(p, "txt", column_order=order, origin=origin)
    _same(back, table)


def test_txt_column_order_matters(tmp_path, table):
    p = tmp_path / "a.txt"
    write_txt(p, table, column_order="xzy")
    back = read_table(p, "txt", column_order="xyz")
    assert not np.allclose(back.xyz, table.xyz)


def test_star_round_trip(tmp_path, table):
    p = tmp_path / "a.star"
    write_star(p, table, tomo_name="TS_01")
    back = read_table(p)
    _same(back, table)
    assert back.extra["tomo"].tolist() == ["TS_01"] * len(table)
    # classes become 1-based numbers in order of appearance
    assert back.classes.tolist()[:2] == ["1", "2"]


def test_star_relion5_centred_angstrom(tmp_path):
    import pandas as pd
    import starfile
    shape = (50, 80, 100)   # z y x
    apix = 7.5
    xyz = np.array([[10.0, 20.0, 30.0], [99.0, 0.0, 49.0]])
    ctr = np.array([shape[2], shape[1], shape[0]]) / 2.0
    df = pd.DataFrame((xyz - ctr) * apix, columns=[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"])
    df["rlnTomoName"] = "TS_1"
    starfile.write({"particles": df}, tmp_path / "r5.star")
    back = read_table(tmp_path / "r5.star", tomo_shape=shape, pixel_size=apix)
    np.testing.assert_allclose(back.xyz, xyz, atol=1e-6)
    with pytest.raises(InputError, match="centred coordinates need"):
        read_table(tmp_path / "r5.star")


def test_tbl_round_trip(tmp_path, table):
    p = tmp_path / "a.tbl"
    write_tbl(p, table, tomo_index=3)
    arr = np.loadtxt(p)
    np.testing.assert_allclose(arr[:, 23:26], table.xyz, atol=1e-3)   # columns 24-26
    back = read_table(p)
    _same(back, table)
    assert set(back.extra["tomo"].tolist()) == {3}


def test_tbl_shifts_are_added(tmp_path):
    row = np.zeros(35)
    row[23:26] = [10, 20, 30]
    row[3:6] = [0.5, -1.0, 2.0]
    np.savetxt(tmp_path / "s.tbl", row[None])
    np.testing.assert_allclose(read_table(tmp_path / "s.tbl").xyz, [[10.5, 19.0, 32.0]])


def test_coords_xml_shrec_round_trip(tmp_path, table):
    write_coords(tmp_path / "a.coords", table, class_names=["large", "tiny", "rod"])
    back = read_table(tmp_path / "a.coords")
    _same(back, table)
    assert back.classes.tolist() == [str(["large", "tiny", "rod"].index(c) + 1) for c in table.classes]
    write_xml(tmp_path / "objl.xml", table)
    back = read_table(tmp_path / "objl.xml")
    _same(back, table)
    assert back.classes.tolist() == table.classes.tolist()
    t2 = CoordTable(table.xyz, table.classes, extra={"rot": np.arange(7.0), "tilt": np.ones(7), "psi": np.zeros(7)})
    write_shrec(tmp_path / "particle_locations.txt", t2)
    back = read_table(tmp_path / "particle_locations.txt")
    _same(back, table)
    np.testing.assert_allclose(back.extra["rot"], np.arange(7.0))


def test_copick_json_in_angstrom(tmp_path, table):
    write_copick(tmp_path / "picks.json", table, pixel_size=13.48, object_name="ribosome")
    data = json.loads((tmp_path / "picks.json").read_text())
    assert abs(data["points"][0]["location"]["x"] - table.xyz[0, 0] * 13.48) < 1e-6
    back = read_table(tmp_path / "picks.json", pixel_size=13.48)
    _same(back, table)
    assert set(back.classes) == {"ribosome"}


def test_round_trip_to_the_voxel_through_every_format(tmp_path):
    """Integer voxel positions come back as the same voxels in every format."""
    xyz = np.array([[0, 0, 0], [5, 17, 3], [63, 31, 15]], float)
    t = CoordTable(xyz, classes=["a", "b", "a"])
    writers = {"tsv": lambda p: write_table(p, t), "star": lambda p: write_star(p, t),
               "tbl": lambda p: write_tbl(p, t), "coords": lambda p: write_coords(p, t),
               "xml": lambda p: write_xml(p, t), "shrec": lambda p: write_shrec(p, t),
               "json": lambda p: write_copick(p, t, 4.0), "txt": lambda p: write_txt(p, t)}
    for fmt, w in writers.items():
        p = tmp_path / f"f_{fmt}.dat"
        w(p)
        back = read_table(p, fmt, pixel_size=4.0)
        assert np.array_equal(np.round(back.xyz).astype(int), xyz.astype(int)), fmt


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("a\tb\tc\n1\t2\t3\n", "header lacks column"),
    ("x\ty\tz\n1\t2\n", ":2: 2 columns"),
    ("x\ty\tz\n1\tnan\t3\n", ":2: column 'y' is nan"),
    ("x\ty\tz\n1\tabc\t3\n", ":2: column 'y' is not a number"),
    ("x\ty\tz\n1\t-4\t3\n", "row 1 has a negative coordinate"),
    ("x\ty\tz\n", "no coordinates"),
])
def test_bad_tables_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(InputError, match=match) as exc:
        read_table(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "nope.tsv")
    (tmp_path / "a.tsv").write_text("x\ty\tz\n1\t2\t3\n")
    with pytest.raises(InputError, match="unknown coordinate format"):
        read_table(tmp_path / "a.tsv", "pdf")


def test_out_of_volume_rows_are_reported_with_axis_hint():
    t = CoordTable([[10, 90, 5], [20, 80, 6]])   # y beyond 50, fits as x z y
    with pytest.raises(InputError, match="row 1 .* outside the volume.*x z y"):
        t.check_inside((100, 50, 40), "picks.tsv")   # nz=100, ny=50, nx=40
    CoordTable([[10, 5, 9]]).check_inside((100, 50, 40))


def test_parse_diameters():
    assert parse_diameters("large=24,tiny=7") == {"large": 24.0, "tiny": 7.0}
    assert diameter_of(parse_diameters("12"), "anything") == 12.0
    with pytest.raises(InputError, match="--diameters"):
        parse_diameters("large=abc")
    with pytest.raises(InputError, match="no diameter given for class 'rod'"):
        diameter_of({"large": 3}, "rod")
