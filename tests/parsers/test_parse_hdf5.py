"""HDF5 array dumps: the layout of formats.md section 4, bad files, writer."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from parsers_helpers import assert_same_reads, roundtrip, sample_table

from hfox_fit.exceptions import FormatError, ParseError
from hfox_fit.parsers import read_measurements, write_measurements

pytestmark = pytest.mark.filterwarnings("ignore::hfox_fit.exceptions.IngestWarning")


def dump(path, i_read, *, rows=(0, 0), cols=(0, 1), attrs=None, group="W07/D12/A2"):
    attrs = {"v_read": 0.1, "v_pulse": 1.25, "pulse_width": 1e-6} if attrs is None else attrs
    with h5py.File(path, "a") as fh:
        g = fh.create_group(group)
        g.attrs.update(attrs)
        g["row"] = np.asarray(rows, dtype=np.int32)
        g["col"] = np.asarray(cols, dtype=np.int64)
        g["i_read"] = np.asarray(i_read, dtype=np.float64)
    return path


def test_three_d_layout(tmp_path):
    i = np.array([[[1e-5, 2e-5, np.nan], [1e-5, 1e-5, 1e-5]], [[4e-5, 5e-5, 5e-5], [1e-5, 1e-5, 2e-5]]])
    f = dump(tmp_path / "dump.h5", i, rows=(3, 0), cols=(12, 1))
    res = read_measurements(f)
    t = res.table
    assert res.format == "hdf5" and res.rows_read == 12 == len(t) and res.notes == []
    assert t["device"].unique().tolist() == ["A2/r00c01", "A2/r03c12"]
    first = t[t["device"] == "A2/r03c12"]
    assert first["cycle"].tolist() == [0, 0, 0, 1, 1, 1] and first["pulse"].tolist() == [0, 1, 2] * 2
    np.testing.assert_array_equal(first["resistance"].to_numpy(), 0.1 / i[0].reshape(-1))
    assert math.isnan(first["resistance"].iloc[2])  # a failed read is kept
    assert t[["wafer", "die"]].drop_duplicates().values.tolist() == [["W07", "D12"]]
    assert (t["v_pulse"] == 1.25).all() and (t["pulse_width"] == 1e-6).all()
    assert res.metadata["groups"][0]["path"] == "/W07/D12/A2"


def test_two_d_dataset_is_a_single_cycle(tmp_path):
    f = dump(tmp_path / "dump.h5", [[1e-5, 2e-5, 3e-5], [1e-5, 1e-5, 1e-5]])
    t = read_measurements(f).table
    assert (t["cycle"] == 0).all() and t["pulse"].tolist() == [0, 1, 2, 0, 1, 2]


def test_several_groups_and_missing_attributes(tmp_path):
    f = tmp_path / "two.hdf5"
    dump(f, [[1e-5]], rows=(0,), cols=(0,), group="W07/D12/A1")
    dump(f, [[1e-5]], rows=(0,), cols=(0,), group="W07/D13/A1", attrs={})
    res = read_measurements(f)
    assert res.table["die"].tolist() == ["D12", "D13"] and res.table["v_read"].tolist() == [0.1, 0.1]
    assert np.isnan(res.table["v_pulse"].iloc[1])
    assert "v_read not given: the default 0.1 V was used" in res.notes
    assert read_measurements(f, v_read=0.3).table["v_read"].tolist() == [0.1, 0.3]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"i_read": [[1e-5, -1e-5]]}, r"dump\.h5:/W07/D12/A2/i_read\[0, 0, 1\]: negative read current"),
        ({"i_read": [[0.0, 1e-5]]}, r"dump\.h5:/W07/D12/A2/i_read\[0, 0, 0\]: zero read current"),
        ({"i_read": [[np.inf, 1e-5]]}, r"i_read\[0, 0, 0\]: infinite read current"),
    ],
)
def test_bad_values_name_the_hdf5_path_and_index(tmp_path, kw, match):
    f = dump(tmp_path / "dump.h5", kw["i_read"], rows=(0,), cols=(0,))
    with pytest.raises(ParseError, match=match):
        read_measurements(f)
    res = read_measurements(f, on_bad_lines="skip")
    assert (res.rows_read, len(res.table), res.rows_rejected) == (2, 1, 1)
    assert res.rejected[0].startswith(f"{f}:/W07/D12/A2/i_read[")


def test_bad_layouts(tmp_path):
    f = dump(tmp_path / "a.h5", [1e-5, 2e-5], rows=(0,), cols=(0,))
    with pytest.raises(ParseError, match=r"a\.h5:/W07/D12/A2/i_read: expected a float dataset of shape "
                                         r"\[devices, cycles, pulses \+ 1\] or \[devices, pulses \+ 1\], saw float64 \(2,\)"):
        read_measurements(f)
    f = dump(tmp_path / "b.h5", [[1e-5], [1e-5]], rows=(0,), cols=(0, 1))
    with pytest.raises(ParseError, match=r"b\.h5:/W07/D12/A2: expected one row and col per device \(first axis "
                                         r"of i_read, 2\), saw 1 rows and 2 cols"):
        read_measurements(f)
    f = dump(tmp_path / "c.h5", [[1e-5], [1e-5]], rows=(0, 0), cols=(1, 1))
    with pytest.raises(ParseError, match=r"c\.h5:/W07/D12/A2/row: two devices share a \(row, col\) pair"):
        read_measurements(f)
    f = tmp_path / "d.h5"
    with h5py.File(f, "w") as fh:
        fh.create_group("W07/D12/A2")["row"] = [0]
    with pytest.raises(ParseError, match=r"d\.h5:/W07/D12/A2: no dataset 'col'; expected /<wafer>/<die>/<array>/"):
        read_measurements(f)
    f = tmp_path / "g.h5"
    with h5py.File(f, "w") as fh:
        g = fh.create_group("W07/D12/A2")
        g["row"], g["i_read"] = [0], [[1e-5]]
        g.create_group("col")
    with pytest.raises(ParseError, match=r"g\.h5:/W07/D12/A2/col: expected a dataset, saw a Group"):
        read_measurements(f)
    f = dump(tmp_path / "e.h5", [[1e-5]], rows=(0,), cols=(0,), attrs={"v_read": "fast"})
    with pytest.raises(ParseError, match=r"e\.h5:/W07/D12/A2: attribute 'v_read' must be one number"):
        read_measurements(f)
    f = tmp_path / "f.h5"
    with h5py.File(f, "w") as fh:
        fh["junk"] = [1, 2]
    with pytest.raises(ParseError, match=r"f\.h5: no array group in the file"):
        read_measurements(f)


def test_damaged_files(tmp_path):
    good = dump(tmp_path / "good.h5", np.full((4, 3, 50), 1e-5), rows=(0, 0, 1, 1), cols=(0, 1, 0, 1))
    data = good.read_bytes()
    f = tmp_path / "cut.h5"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=r"cut\.h5: "):
        read_measurements(f)
    f = tmp_path / "text.h5"
    f.write_text("row,col\n")
    with pytest.raises(ParseError, match=r"text\.h5: not a readable HDF5 file"):
        read_measurements(f)


# --------------------------------------------------------------------- writer
def test_round_trip(tmp_path):
    table = sample_table(devices=300, pulses=5, cycles=2)  # arrays A1 and A2
    files, got = roundtrip(table, tmp_path / "w.h5", "hdf5")
    with h5py.File(files[0]) as fh:
        assert fh["W01/D01/A1/i_read"].shape == (256, 2, 6) and fh["W01/D01/A2/row"].shape == (44,)
        assert fh["W01/D01/A1"].attrs["v_read"] == 0.1
    # the file keeps currents: v_read / (v_read / R) is R to the last bit or two
    assert_same_reads(got, table, rtol=1e-15)


def test_writer_needs_full_grids_and_one_condition_per_array(tmp_path):
    t = sample_table(devices=2, pulses=3, cycles=1)
    with pytest.raises(FormatError, match=r"W01/D01/A1 in the hdf5 format: it holds 7 reads, not the full grid "
                                          r"of 2 devices x 1 cycles \(0\.\.0\) x 4 pulses"):
        write_measurements(t.iloc[1:], tmp_path / "x.h5", "hdf5")
    t.loc[0, "v_pulse"] = 2.0
    with pytest.raises(FormatError, match=r"cannot write W01/D01/A1 in the hdf5 format: v_pulse changes there"):
        write_measurements(t, tmp_path / "x.h5", "hdf5")


def test_a_campaign_store_among_the_raw_files_is_named_as_one(tmp_path):
    """A store left in a folder of raw files (an old run's campaign.h5) is said to be a store, with what to do."""
    from hfox_fit.parsers.hdf5 import STORE_FORMAT
    from hfox_fit.store import FORMAT, CampaignStore

    assert STORE_FORMAT == FORMAT
    store = CampaignStore(tmp_path / "old_store.h5")
    store.ingest([read_measurements(dump(tmp_path / "raw.h5", np.full((2, 3), 1e-5)))])
    with pytest.raises(ParseError, match=r"old_store\.h5: is an hfox_fit campaign store, not a raw acquisition "
                                         r"dump; move it out of the raw files"):
        read_measurements(store.path)
