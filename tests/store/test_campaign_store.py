"""CampaignStore: ingest, merge, provenance, duplicates, conflicts, atomicity, bad stores."""

from __future__ import annotations

import hashlib
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from store_helpers import as_result, ragged, sorted_table, store_files, wafer_table

from hfox_fit import StoreError
from hfox_fit.exceptions import ParseError, SchemaError
from hfox_fit.schema import DTYPES, dies_to_table, table_to_dies
from hfox_fit.store import FORMAT_VERSION, CampaignStore

ID = ["wafer", "die", "device"]


def file_sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def split(table, n):
    """Cut a table into n files by device (each file a few whole cells of every die)."""
    codes = pd.factorize(table["device"].astype(str))[0] % n
    return [table.loc[codes == i].reset_index(drop=True) for i in range(n)]


# ------------------------------------------------------------------ round trip
def test_round_trip_exact(tmp_path, two_wafers):
    parts = split(two_wafers, 3)
    store = CampaignStore(tmp_path / "c.h5")
    summary = store.ingest([as_result(p, tmp_path / f"f{i}.csv") for i, p in enumerate(parts)])
    assert summary.files == [str(tmp_path / f"f{i}.csv") for i in range(3)]
    assert summary.rows_read == summary.rows_stored == len(two_wafers)
    assert summary.duplicates == []

    back = store.read_table()
    assert [str(t) for t in back.dtypes] == [str(DTYPES[c]) for c in back.columns]
    pd.testing.assert_frame_equal(sorted_table(back), back.astype({c: "string" for c in ID}))  # sorted
    pd.testing.assert_frame_equal(sorted_table(back), sorted_table(two_wafers))
    assert back["resistance"].isna().sum() == two_wafers["resistance"].isna().sum() > 0
    assert back["v_pulse"].isna().any()
    # Ragged: trains of different lengths, holes that are "not taken", not NaN rows.
    lengths = back.groupby(["wafer", "die", "device", "cycle"], observed=True).size()
    assert lengths.nunique() > 3

    assert store.dies() == [("W01", "D01"), ("W01", "D02"), ("W02", "D01")]
    ref = {(d.wafer, d.die): d for d in table_to_dies(two_wafers)}
    for die in store.iter_dies():
        r = ref[(die.wafer, die.die)]
        np.testing.assert_array_equal(die.devices, r.devices)
        np.testing.assert_array_equal(die.cycles, r.cycles)
        np.testing.assert_array_equal(die.present, r.present)
        np.testing.assert_array_equal(die.resistance, r.resistance)  # NaN == NaN here
        np.testing.assert_array_equal(die.v_pulse, r.v_pulse)
    one = store.read_die("W02", "D01")
    assert one.n_reads == int((two_wafers["wafer"] == "W02").sum())

    s = store.summary()
    assert (s["wafers"], s["dies"], s["reads"], s["sources"]) == (2, 3, len(two_wafers), 3)
    assert s["failed_reads"] == int(two_wafers["resistance"].isna().sum())
    assert s["cells"] == two_wafers.groupby(["wafer", "die", "device"], observed=True).ngroups


def test_layout_units_and_provenance(tmp_path):
    table = wafer_table(devices=20, pulses=4, cycles=1)
    res = as_result(table, tmp_path / "run1.csv", format="bench", rows_rejected=2,
                    rejected=["line 7: expected 5 fields, found 4", "line 9: bad number 'x'"],
                    notes=["v_read taken from --v-read"], metadata={"array": "A1", "v": np.float64(0.1)})
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([res])
    with h5py.File(store.path, "r") as f:
        assert f.attrs["format"] == "hfox_fit.campaign"
        assert f.attrs["format_version"] == FORMAT_VERSION
        g = f["measurements/W01/D01"]
        assert g["resistance"].attrs["unit"] == "Ohm"
        assert g["v_read"].attrs["unit"] == "V" and g["pulse_width"].attrs["unit"] == "s"
        assert g["resistance"].compression is not None and g["resistance"].chunks is not None
        assert g["resistance"].shape == (20, 1, 5)
    (src,) = store.sources()
    assert src["path"] == str(tmp_path / "run1.csv")
    assert src["sha256"] == file_sha(tmp_path / "run1.csv")
    assert src["format"] == "bench"
    assert (src["rows_read"], src["rows_stored"], src["rows_rejected"]) == (len(table) + 2, len(table), 2)
    assert src["rejected"][0].startswith("line 7")
    assert src["notes"] == ["v_read taken from --v-read"]
    assert src["metadata"] == {"array": "A1", "v": 0.1}
    assert src["ingested_at"].endswith("+00:00") and src["hfox_fit_version"]
    assert src["dies"] == [["W01", "D01"]]
    assert store.summary()["rows_rejected"] == 2
    assert store.sha256() == file_sha(store.path)


def test_odd_ids_round_trip(tmp_path):
    table = wafer_table(devices=6, pulses=3, cycles=1)
    table["wafer"] = "lot 7/W.1%"
    table["die"] = ".hidden"
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(table, tmp_path / "odd.csv")])
    assert store.dies() == [("lot 7/W.1%", ".hidden")]
    pd.testing.assert_frame_equal(sorted_table(store.read_table()), sorted_table(table))


# ------------------------------------------------------------------ merging
def test_merge_into_existing_dies(tmp_path):
    full = ragged(wafer_table(devices=1100, pulses=10, cycles=3, seed=3), seed=4)
    low = full["device"].astype(str) < "A3"
    first = full[(full["cycle"] < 2) & (full["pulse"] < 6) & low]
    rest = full.drop(first.index)
    low = low[rest.index]
    more_pulses = rest[(rest["cycle"] < 2) & low]  # same trains, later pulses
    new_cycle = rest[(rest["cycle"] == 2) & low]
    new_cells = rest[~low]
    assert len(rest) == len(more_pulses) + len(new_cycle) + len(new_cells)

    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(first, tmp_path / "a.csv")])
    s = store.ingest([as_result(more_pulses, tmp_path / "b.csv"), as_result(new_cycle, tmp_path / "c.csv")])
    assert s.rows_stored == len(more_pulses) + len(new_cycle)
    assert s.dies == [("W01", "D01"), ("W01", "D02")]
    d2_before = store.read_die("W01", "D02")
    s = store.ingest([as_result(new_cells[new_cells["die"] == "D01"], tmp_path / "d.csv")])
    assert s.dies == [("W01", "D01")]  # D02 copied, not rewritten
    d2_after = store.read_die("W01", "D02")
    np.testing.assert_array_equal(d2_after.resistance, d2_before.resistance)
    np.testing.assert_array_equal(d2_after.devices, d2_before.devices)
    store.ingest([as_result(new_cells[new_cells["die"] == "D02"], tmp_path / "e.csv")])
    pd.testing.assert_frame_equal(sorted_table(store.read_table()), sorted_table(full))
    assert [s["path"][-5:] for s in store.sources()] == ["a.csv", "b.csv", "c.csv", "d.csv", "e.csv"]


def test_ingest_table_and_generator(tmp_path):
    table = wafer_table(devices=10, pulses=3, cycles=1)
    store = CampaignStore(tmp_path / "c.h5")
    assert store.ingest_table(table, name="sim").rows_stored == len(table)
    again = store.ingest_table(table, name="again")
    assert again.files == [] and again.duplicates == [("again", "sim")]
    with pytest.raises(StoreError, match="comes from both 'sim' and 'shuffled'"):
        store.ingest_table(table.sample(frac=1.0, random_state=0), name="shuffled")
    gen = (as_result(t, tmp_path / f"g{i}.csv") for i, t in enumerate([wafer_table("W09", devices=4, pulses=2)]))
    assert store.ingest(gen).files == [str(tmp_path / "g0.csv")]
    assert ("W09", "D01") in store.dies()


def test_an_empty_table_is_refused_and_writes_nothing(tmp_path):
    empty = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in DTYPES.items()})
    path = tmp_path / "s.h5"
    with pytest.raises(StoreError, match=r"sim: the table holds no reads \(0 rows.*nothing was written"):
        CampaignStore(path).ingest_table(empty, name="sim")
    assert not path.exists()
    # into an existing store: the file is left as it was
    store = CampaignStore(path)
    store.ingest_table(wafer_table(devices=2, cycles=1, pulses=5), name="first")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="holds no reads"):
        store.ingest_table(empty.iloc[:0], name="later")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_write_seconds_times_the_hdf5_writes(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    t = time.perf_counter()
    s = store.ingest([as_result(wafer_table(w, devices=20, pulses=5), tmp_path / f"{w}.csv") for w in ("W01", "W02")])
    total = time.perf_counter() - t
    assert isinstance(s.write_seconds, float)
    assert 0.0 < s.write_seconds <= total
    again = store.ingest([as_result(wafer_table("W01", devices=20, pulses=5), tmp_path / "copy.csv")])
    assert not again.changed and again.write_seconds == 0.0  # same SHA-256: nothing written


# ------------------------------------------------------------------ duplicates and conflicts
def test_duplicate_files_add_nothing(tmp_path):
    table = wafer_table(devices=10, pulses=4)
    store = CampaignStore(tmp_path / "c.h5")
    a = as_result(table, tmp_path / "a.csv")
    copy = tmp_path / "sub"
    copy.mkdir()
    (copy / "a_copy.csv").write_bytes((tmp_path / "a.csv").read_bytes())
    s = store.ingest([a, as_result(table, copy / "a_copy.csv")])  # repeated within one call
    assert s.files == [str(tmp_path / "a.csv")]
    assert s.duplicates == [(str(copy / "a_copy.csv"), str(tmp_path / "a.csv"))]
    assert s.rows_stored == len(table)
    before = file_sha(store.path)
    s = store.ingest([as_result(table, tmp_path / "a.csv")])  # already in the store
    assert s.files == [] and s.skipped == [str(tmp_path / "a.csv")] and not s.changed
    assert "already ingested" in s.notes[0]
    assert file_sha(store.path) == before
    assert len(store.sources()) == 1


def test_conflicting_reads_name_both_files(tmp_path):
    table = wafer_table(devices=10, pulses=4)
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(table, tmp_path / "old.csv")])
    before = file_sha(store.path)
    clash = table.iloc[5:8].copy()
    clash["resistance"] *= 1.01
    with pytest.raises(StoreError, match=r"W01/D01/A1/r00c00 cycle 1 pulse 0 comes from both '.*old\.csv' and '.*new\.csv'"):
        store.ingest([as_result(clash, tmp_path / "new.csv")])
    assert file_sha(store.path) == before
    assert store_files(tmp_path) == ["c.h5", "new.csv", "old.csv"]


def test_conflict_within_one_call(tmp_path):
    table = wafer_table(devices=10, pulses=4)
    store = CampaignStore(tmp_path / "c.h5")
    a = as_result(table.iloc[:30], tmp_path / "a.csv")
    b = as_result(table.iloc[25:40], tmp_path / "b.csv")
    with pytest.raises(StoreError, match=r"5 read\(s\) overlap"):
        store.ingest([a, b])
    assert not store.exists()
    assert store_files(tmp_path) == ["a.csv", "b.csv"]


def test_condition_change_within_train_is_refused(tmp_path):
    table = wafer_table(devices=4, pulses=6, cycles=1)
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(table[table["pulse"] < 3], tmp_path / "a.csv")])
    later = table[table["pulse"] >= 3].copy()
    later["v_pulse"] = 1.5
    with pytest.raises(StoreError, match=r"v_pulse = 1\.25 in '.*a\.csv' but 1\.5 in '.*b\.csv'"):
        store.ingest([as_result(later, tmp_path / "b.csv")])
    bad = table.copy()
    bad.loc[bad.index[1], "v_read"] = 0.2
    with pytest.raises(SchemaError, match="v_read changes within one pulse train"):
        CampaignStore(tmp_path / "d.h5").ingest([as_result(bad, tmp_path / "bad.csv")])


# ------------------------------------------------------------------ atomicity
def test_failing_second_file_leaves_store_untouched(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=10, pulses=4), tmp_path / "a.csv")])
    before = file_sha(store.path)

    def results():
        yield as_result(wafer_table("W02", devices=10, pulses=4), tmp_path / "b.csv")
        raise ParseError("expected 5 fields, found 4", path=tmp_path / "c.csv", line=12)

    with pytest.raises(ParseError, match="c.csv:12"):
        store.ingest(results())
    assert file_sha(store.path) == before
    assert store.dies() == [("W01", "D01")]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError, RuntimeError])
def test_interrupted_write_leaves_store_untouched(tmp_path, monkeypatch, exc):
    import hfox_fit.store._ingest as st

    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=10, pulses=4), tmp_path / "a.csv")])
    before = file_sha(store.path)
    calls = []
    real = st.write_die

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second die of the new files: the temp file is half written
            raise exc("boom")
        return real(*args, **kw)

    monkeypatch.setattr(st, "write_die", flaky)
    new = [as_result(wafer_table(w, devices=10, pulses=4), tmp_path / f"{w}.csv") for w in ("W02", "W03")]
    with pytest.raises(exc):
        store.ingest(new)
    assert len(calls) == 2
    assert file_sha(store.path) == before
    assert store_files(tmp_path) == ["W02.csv", "W03.csv", "a.csv", "c.h5"]  # no temp file left
    monkeypatch.setattr(st, "write_die", real)
    assert store.ingest(new).files == [str(p.path) for p in new]


def test_interrupted_save_fit_leaves_store_untouched(tmp_path, monkeypatch):
    import hfox_fit.store._fit as st

    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=5, pulses=3), tmp_path / "a.csv")])
    before = file_sha(store.path)

    def broken(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "write_frame", broken)
    with pytest.raises(KeyboardInterrupt):
        store.save_fit(pd.DataFrame({"x": [1.0]}), {}, {})
    assert file_sha(store.path) == before
    assert store_files(tmp_path) == ["a.csv", "c.h5"]


def test_concurrent_change_is_detected(tmp_path, monkeypatch):
    import hfox_fit.store._ingest as st

    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=5, pulses=3), tmp_path / "a.csv")])
    real = st.write_die

    def meddle(*a, **k):  # another process rewrites the store meanwhile
        CampaignStore(store.path).save_fit(pd.DataFrame({"x": [1]}), {}, {})
        return real(*a, **k)

    monkeypatch.setattr(st, "write_die", meddle)
    with pytest.raises(StoreError, match="changed by another process"):
        store.ingest([as_result(wafer_table("W02", devices=5, pulses=3), tmp_path / "b.csv")])
    assert store.dies() == [("W01", "D01")]


@pytest.mark.parametrize("write", ["ingest", "ingest_table", "save_fit", "duplicate"])
def test_read_only_store_is_never_replaced(tmp_path, write):
    # Tests run as root in CI, where writing a 0o444 file succeeds: the refusal must come from
    # the mode bits, and must happen before any raw file is read.
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=5, pulses=3), tmp_path / "a.csv")])
    store.path.chmod(0o444)
    before, st = file_sha(store.path), store.path.stat()
    consumed = []

    def results():
        consumed.append(1)
        yield as_result(wafer_table("W02", devices=5, pulses=3), tmp_path / "b.csv")

    calls = {
        "ingest": lambda: store.ingest(results()),
        "ingest_table": lambda: store.ingest_table(wafer_table("W02", devices=5, pulses=3)),
        "save_fit": lambda: store.save_fit(pd.DataFrame({"x": [1.0]}), {}, {}),
        "duplicate": lambda: store.ingest([as_result(wafer_table(devices=5, pulses=3), tmp_path / "a.csv")]),
    }
    with pytest.raises(StoreError) as err:
        calls[write]()
    assert str(err.value) == (
        f"the campaign store {str(store.path)!r} is read-only; writing to a store (ingest, fit, calibrate) "
        "rewrites it. Make it writable (chmod u+w) or copy it."
    )
    assert not consumed
    assert file_sha(store.path) == before
    after = store.path.stat()
    assert (after.st_mode, after.st_ino, after.st_mtime_ns) == (st.st_mode, st.st_ino, st.st_mtime_ns)
    assert store_files(tmp_path) == ["a.csv", "c.h5"]  # no temp file left
    store.path.chmod(0o644)  # made writable again, the same call goes through
    calls[write]()


def test_store_made_read_only_during_a_write_is_not_replaced(tmp_path, monkeypatch):
    import hfox_fit.store._ingest as st

    store = CampaignStore(tmp_path / "c.h5")
    store.ingest([as_result(wafer_table(devices=5, pulses=3), tmp_path / "a.csv")])
    before = file_sha(store.path)
    real = st.write_die

    def lock(*a, **k):
        store.path.chmod(0o444)
        return real(*a, **k)

    monkeypatch.setattr(st, "write_die", lock)
    with pytest.raises(StoreError, match=r"is read-only; writing to a store \(ingest, fit, calibrate\) rewrites it\. Make it writable"):
        store.ingest([as_result(wafer_table("W02", devices=5, pulses=3), tmp_path / "b.csv")])
    assert file_sha(store.path) == before
    assert store.path.stat().st_mode & 0o777 == 0o444
    assert store_files(tmp_path) == ["a.csv", "b.csv", "c.h5"]  # no temp file left


# ------------------------------------------------------------------ bad stores
def test_missing_store(tmp_path):
    with pytest.raises(StoreError, match=r"'.*nope\.h5' does not exist\. Create it with `hfox-fit ingest"):
        CampaignStore(tmp_path / "nope.h5").read_table()
    with pytest.raises(StoreError, match="folder .* does not exist"):
        CampaignStore(tmp_path / "no" / "c.h5").ingest_table(wafer_table(devices=2, pulses=2))


def test_not_hdf5(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("row,col,cycle,pulse,i_read\n")
    with pytest.raises(StoreError, match=r"'.*notes\.h5' is not an HDF5 file"):
        CampaignStore(p).dies()
    with pytest.raises(StoreError, match="not an HDF5 file"):
        CampaignStore(p).ingest_table(wafer_table(devices=2, pulses=2))
    assert p.read_text() == "row,col,cycle,pulse,i_read\n"
    with pytest.raises(StoreError, match="is a directory"):
        CampaignStore(tmp_path).summary()


def test_hdf5_not_a_store(tmp_path):
    p = tmp_path / "dump.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("W07/D12/A2/i_read", data=np.ones((2, 3)))
    before = file_sha(p)
    with pytest.raises(StoreError, match="not a hfox_fit campaign store .* ingest it"):
        CampaignStore(p).sources()
    with pytest.raises(StoreError, match="not a hfox_fit campaign store"):
        CampaignStore(p).ingest_table(wafer_table(devices=2, pulses=2))
    assert file_sha(p) == before


def test_newer_store_version(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest_table(wafer_table(devices=2, pulses=2))
    with h5py.File(store.path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StoreError, match=rf"format_version {FORMAT_VERSION + 1}; .* Upgrade hfox_fit"):
        store.read_table()


def test_damaged_store(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest_table(wafer_table(devices=50, pulses=20))
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match="c.h5"):
        store.read_table()


def test_unknown_die(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest_table(wafer_table(devices=2, pulses=2))
    with pytest.raises(StoreError, match=r"holds no die W01/D09; it holds 1 die\(s\): W01/D01"):
        store.read_die("W01", "D09")


def test_fit_note_after_new_measurements(tmp_path):
    store = CampaignStore(tmp_path / "c.h5")
    store.ingest_table(wafer_table(devices=4, pulses=2))
    store.save_fit(pd.DataFrame({"device": ["a"]}), {"n": 1}, {"law": "power"})
    s = store.ingest_table(wafer_table("W02", devices=4, pulses=2), name="more")
    assert any("predates these measurements" in n for n in s.notes)
    assert store.load_fit().summary == {"n": 1}  # the fit is kept


def test_table_to_dies_inverse_is_dies_to_table(tmp_path, two_wafers):
    # The store relies on the schema's array form; check it on the same data it stores.
    back = dies_to_table(table_to_dies(two_wafers))
    pd.testing.assert_frame_equal(sorted_table(back), sorted_table(two_wafers))


def test_atomic_writer_refuses_a_read_only_target(tmp_path):
    # The one helper behind every atomic writer (store, checkpoint, tidy table, truth JSON).
    from hfox_fit._atomic import atomic_path
    from hfox_fit.exceptions import HfoxError

    target = tmp_path / "out.json"
    target.write_text("{}\n")
    target.chmod(0o444)
    with pytest.raises(HfoxError, match=r"the file '.*out\.json' is read-only; this write would replace it\. "
                                         r"Make it writable \(chmod u\+w\) or copy it\."):
        with atomic_path(target) as tmp:
            tmp.write_text("[]\n")
    assert target.read_text() == "{}\n" and target.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    target.chmod(0o644)
    with atomic_path(target) as tmp:
        tmp.write_text("[]\n")
    assert target.read_text() == "[]\n" and target.stat().st_mode & 0o777 == 0o644
