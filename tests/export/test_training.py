"""The training study: conditions, re-SET of saturated pairs, endurance counts, reproducibility, IDX data, CLI."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfox_fit import preset_model  # noqa: E402
from hfox_fit.cli import main  # noqa: E402
from hfox_fit.exceptions import HfoxError, ParseError  # noqa: E402
from hfox_fit.torch import (  # noqa: E402
    CONDITIONS,
    BinarizedMLP,
    CellBackedWeights,
    export_checkpoint,
    headroom_pulses,
    read_idx,
    run_ablation,
    summarize_ablation,
    train_network,
)
from hfox_fit.torch._data import load_dataset, make_loader  # noqa: E402
from hfox_fit.torch._study import summary_text  # noqa: E402
from hfox_fit.torch._training import cell_weights  # noqa: E402


def _write_idx(path, array, code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(">u1" if code == 0x08 else array.dtype).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _idx_folder(root, n_train=240, n_test=80, gz=False, seed=0):
    """A tiny MNIST-style set: 6x6 images, class = which third of the image is bright."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 6, 6))
        for i, c in enumerate(y):
            x[i, 2 * c: 2 * c + 2, :] += 180
        sfx = ".gz" if gz else ""
        _write_idx(root / f"{part}-images-idx3-ubyte{sfx}", x.astype(np.uint8))
        _write_idx(root / f"{part}-labels-idx1-ubyte{sfx}", y.astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    export_checkpoint(preset_model("paper"), path, provenance={"cells_used": 1, "store_sha256": "0" * 64})
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    _write_idx(path, a)
    np.testing.assert_array_equal(read_idx(path), a)


def test_read_idx_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ParseError, match="not an IDX file") as err:
        read_idx(bad)
    assert "train-images-idx3-ubyte" in str(err.value)
    _write_idx(bad, np.zeros((4, 2, 2), np.uint8))
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(ParseError, match="truncated"):
        read_idx(bad)
    folder = _idx_folder(tmp_path / "set")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ParseError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(folder)


def test_idx_folders_that_cannot_train_are_named_with_the_problem(tmp_path):
    empty = _idx_folder(tmp_path / "empty")
    _write_idx(empty / "t10k-images-idx3-ubyte", np.zeros((0, 6, 6), np.uint8))
    _write_idx(empty / "t10k-labels-idx1-ubyte", np.zeros(0, np.uint8))
    with pytest.raises(ParseError, match="empty: the test files hold no image"):
        load_dataset(empty)
    negative = _idx_folder(tmp_path / "negative")
    _write_idx(negative / "train-labels-idx1-ubyte", np.full(240, -1, np.int8), code=0x09)
    with pytest.raises(ParseError, match="the train labels hold -1: expected class numbers"):
        load_dataset(negative)
    sizes = _idx_folder(tmp_path / "sizes")
    _write_idx(sizes / "t10k-images-idx3-ubyte", np.zeros((80, 8, 8), np.uint8))
    with pytest.raises(ParseError, match=r"train images of \(6, 6\) pixels and test images of \(8, 8\)"):
        load_dataset(sizes)


def test_idx_folder_loads_scaled_and_matched(tmp_path):
    x, y, xt, yt = load_dataset(_idx_folder(tmp_path / "set", gz=True))
    assert x.shape == (240, 36) and xt.shape == (80, 36) and x.dtype == torch.float32
    assert float(x.max()) <= 1.0 and set(y.tolist()) <= {0, 1, 2} and y.dtype == torch.int64


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_each_condition_switches_off_its_part_only(condition, checkpoint):
    net = BinarizedMLP((8, 6, 3))
    cells = cell_weights(net, checkpoint, condition, scale=0.01, seed=1)
    if condition == "software":
        assert cells is None
        return
    arr = cells.cells
    off = {"no_d2d": "d2d", "no_c2c": "c2c", "no_pink": "pink", "no_rtn": "rtn"}.get(condition)
    for part in ("d2d", "c2c", "pink", "rtn"):
        assert getattr(arr, part) is (part != off), (condition, part)
    m1 = arr.cell_parameters["m1"]
    assert (float(m1.std()) == 0.0) is (condition == "no_d2d")  # every cell the median cell without D2D


def test_the_command_line_names_every_condition():
    from hfox_fit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    help_text = sub.choices["train-demo"].format_help().replace("\n", " ")
    for name in CONDITIONS:
        assert name in help_text, name


def test_unknown_condition_is_refused():
    with pytest.raises(HfoxError, match="unknown condition"):
        cell_weights(BinarizedMLP((4, 3, 2)), None, "no_noise", scale=0.01)


def test_saturated_pairs_are_reset_keeping_their_sign_and_counted():
    model = preset_model("paper")
    net = torch.nn.Linear(10, 4, bias=False)
    cells = CellBackedWeights(net, model, scale=0.01, seed=3)
    limit = headroom_pulses(model)
    assert limit == round(model.d2d["t_star"].median())
    # one pulse short of the limit on BL, the limit on BLb: not saturated
    cells._pulse_pairs(torch.full((cells.numel,), limit - 1, dtype=torch.int32))
    cells._pulse_pairs(torch.full((cells.numel,), -limit, dtype=torch.int32))
    assert not bool(cells.saturated(limit).any())
    cells._pulse_pairs(torch.ones(cells.numel, dtype=torch.int32))
    assert bool(cells.saturated(limit).all())
    cells.sync()
    sign_high = torch.sign(net.weight.detach().clone())
    pulses_before = cells.pulse_count.clone()
    assert cells.reset_saturated(limit) == cells.numel
    assert torch.equal(cells.set_count, torch.ones_like(cells.set_count))
    assert not bool(cells.saturated(limit).any())
    assert torch.equal(torch.sign(net.weight.detach()), sign_high)  # the weights kept the sign they read
    assert bool((cells.pulse_count >= pulses_before).all())  # re-programming pulses are counted too
    assert int(cells.pulses_since_set.max()) < limit
    assert cells.reset_saturated(limit) == 0  # nothing left to re-SET


def test_a_re_set_pair_left_reading_the_other_sign_is_counted():
    """With no programming step a re-SET pair reads the sign its cells' R0 give it: each one that is not its
    weight's sign is counted in sign_lost, none silently."""
    model = preset_model("paper")
    net = torch.nn.Linear(16, 8, bias=False)
    cells = CellBackedWeights(net, model, scale=0.01, seed=4)
    limit = headroom_pulses(model)
    cells._pulse_pairs(torch.full((cells.numel,), limit, dtype=torch.int32))
    cells._pulse_pairs(torch.full((cells.numel,), -limit, dtype=torch.int32))
    cells._pulse_pairs(torch.where(torch.arange(cells.numel) % 2 == 0, 1, -1).to(torch.int32))
    cells.sync()
    before = torch.sign(net.weight.detach().clone()).reshape(-1)
    assert cells.reset_saturated(limit, max_steps=0) == cells.numel
    after = torch.where(cells._read_flat() >= 0, 1.0, -1.0)
    lost = int((after != before).sum())
    assert 0 < lost < cells.numel and cells.sign_lost == lost  # (R0's D2D spread decides each pair's sign)
    cells.reset_saturated(limit)  # nothing saturated any more: nothing more lost
    assert cells.sign_lost == lost


def test_training_resets_and_counts_and_is_reproducible(tmp_path, checkpoint):
    folder = _idx_folder(tmp_path / "set")
    kw = dict(dataset=folder, epochs=2, seeds=1, conditions=["software", "device", "no_d2d"], hidden=16)
    a = run_ablation(checkpoint, tmp_path / "a", **kw)
    b = run_ablation(checkpoint, tmp_path / "b", **kw)

    def rows(d):
        with open(d / "ablation.csv") as f:
            return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]

    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert a["conditions"] == b["conditions"]
    got = rows(tmp_path / "a")
    assert len(got) == 3 * 2 and {r["condition"] for r in got} == {"software", "device", "no_d2d"}
    dev = [r for r in got if r["condition"] == "device"]
    assert int(dev[-1]["pulses"]) > 0 and int(dev[-1]["max_cell_pulses"]) > 0
    assert all(int(r["sign_lost"]) <= int(r["resets"]) for r in got)
    assert all(int(r["pulses"]) == 0 for r in got if r["condition"] == "software")
    for name in ("ablation.csv", "ablation.png", "summary.txt", "summary.json"):
        assert (tmp_path / "a" / name).is_file()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["most_harmful"]["condition"] == "no_d2d" and summary["most_harmful"]["exceeds_spread"] is None


def test_resets_happen_in_training_when_pairs_saturate(tmp_path, checkpoint):
    x, y, xt, yt = load_dataset(_idx_folder(tmp_path / "set"))
    rows = train_network(lambda: BinarizedMLP((36, 12, 3)), make_loader(x, y, batch_size=16),
                         make_loader(xt, yt, shuffle=False), condition="device", model=checkpoint, seed=0, epochs=2,
                         headroom=1)  # a pair whose two cells took a pulse since SET counts as saturated
    assert sum(r["resets"] for r in rows) > 0 and rows[-1]["set_ops"] >= 2 * sum(r["resets"] for r in rows)


def test_summary_names_the_largest_recovery_and_its_significance():
    rows = []
    for seed in range(3):
        for cond, acc in (("software", 0.95), ("device", 0.80), ("no_d2d", 0.93), ("no_rtn", 0.81)):
            spread = 0.03 if cond == "no_rtn" else 0.002  # no_rtn: a noisy condition
            rows.append({"condition": cond, "seed": seed, "epoch": 1, "test_accuracy": acc + spread * (seed - 1),
                         "pulses": 1, "resets": 0, "max_cell_pulses": 1})
    s = summarize_ablation(rows)
    assert s["most_harmful"]["imperfection"] == "d2d"
    assert s["most_harmful"]["difference"] == pytest.approx(0.13)
    assert s["most_harmful"]["exceeds_spread"] is True
    assert s["recovery"]["no_rtn"]["difference"] == pytest.approx(0.01)
    assert s["recovery"]["no_rtn"]["exceeds_spread"] is False  # 0.01 within 2 SE (0.035) of the difference
    assert s["device_cost"]["difference"] == pytest.approx(0.15)
    assert s["most_harmful"]["recovers_accuracy"] is True
    lead = s["most_harmful"]["runner_up"]  # d2d's lead over rtn: 0.12, beyond the spread
    assert lead["imperfection"] == "rtn" and lead["difference"] == pytest.approx(0.12) and lead["exceeds_spread"]
    meta = {"dataset": "digits", "n_train": 1, "n_test": 1, "sizes": [1, 1, 1], "epochs": 1, "seeds": 3,
            "model": "m.pt"}
    assert "its lead over removing rtn: +0.120" in summary_text(s, meta)
    # two removals that recover about as much: said to be indistinguishable, not a winner
    tied = [dict(r, test_accuracy=r["test_accuracy"] + 0.115) if r["condition"] == "no_rtn" else r for r in rows]
    s = summarize_ablation(tied)
    assert s["most_harmful"]["runner_up"]["exceeds_spread"] is False
    assert "d2d and rtn cannot be told apart with these seeds" in summary_text(s, meta)
    # no removal helps (device is the best): said so, not "removing ... recovers the most"
    worse = [dict(r, test_accuracy=0.70) if r["condition"].startswith("no_") else r for r in rows]
    s = summarize_ablation(worse)
    assert s["most_harmful"]["recovers_accuracy"] is False
    text = summary_text(s, meta)
    assert "no removal recovers accuracy in this run: the best, removing" in text and "recovers the most" not in text


def test_software_binarized_mlp_learns_the_digits():
    pytest.importorskip("sklearn")
    x, y, xt, yt = load_dataset("digits")
    rows = train_network(lambda: BinarizedMLP((64, 256, 10)), make_loader(x, y), make_loader(xt, yt, shuffle=False),
                         condition="software", seed=0, epochs=15)
    assert rows[-1]["test_accuracy"] >= 0.90


def test_cli_refuses_bad_input_and_leaves_no_output(tmp_path, capsys, checkpoint):
    out = tmp_path / "out"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train-demo", "--model", str(bad), "--out", str(out), "--quiet"]) == 2
    assert "bad.pt" in capsys.readouterr().err
    # the software condition alone uses no cells, but the file it is given is still checked
    assert main(["train-demo", "--model", str(bad), "--out", str(out), "--conditions", "software", "--quiet"]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert main(["train-demo", "--model", str(checkpoint), "--out", str(out), "--conditions", "device,nope",
                 "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err
    # settings that cannot train, and an --out that is a file: refused before any training, no traceback
    taken = tmp_path / "taken"
    taken.write_text("keep\n")
    for option, message in ((["--batch-size", "0"], "batch size must be >= 1"), (["--lr", "nan"], "learning rate"),
                            (["--lr", "-1"], "learning rate"), (["--hidden", "0"], "hidden width must be >= 1"),
                            (["--conditions", ""], "no condition given")):
        assert main(["train-demo", "--model", str(checkpoint), "--out", str(out), *option, "--quiet"]) == 2, option
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, option
    assert main(["train-demo", "--model", str(checkpoint), "--out", str(taken), "--quiet"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and taken.read_text() == "keep\n"
    folder = _idx_folder(tmp_path / "set")
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    assert main(["train-demo", "--model", str(checkpoint), "--out", str(out), "--dataset", str(folder),
                 "--quiet"]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".train-demo-")]


def test_the_progress_is_whole_lines_when_stderr_is_not_a_terminal(tmp_path, checkpoint, capsys):
    run_ablation(checkpoint, tmp_path / "study", dataset=_idx_folder(tmp_path / "set"), epochs=2, seeds=1,
                 conditions=["software", "device"], hidden=8, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert lines[0].startswith("train: ") and "train: 100% (4/4 epoch(s)" in err


def test_the_report_shows_a_study_and_says_when_it_cannot(tmp_path, checkpoint):
    from hfox_fit.report._training import training_section

    run_ablation(checkpoint, tmp_path / "study", dataset=_idx_folder(tmp_path / "set"), epochs=1, seeds=1,
                 conditions=["software", "device"], hidden=8)
    metrics, figs, notes = {"figures": {}}, {}, []
    training_section(tmp_path / "study", metrics, figs, notes)
    assert "training" in figs and not notes
    assert metrics["figures"]["training"]["summary"]["conditions"].keys() == {"software", "device"}
    assert "software" in figs["training"][2]
    training_section(tmp_path / "nothing", metrics, figs := {}, notes)
    assert not figs and "no training study shown" in notes[0]


def test_run_with_train_adds_the_study_before_the_report(tmp_path):
    from hfox_fit.cli import build_parser
    from hfox_fit.cli._run import _step_args

    args = build_parser().parse_args(["run", "raw", "-o", str(tmp_path), "--train"])
    steps = _step_args(args, tmp_path)
    assert list(steps) == ["ingest", "fit", "devices", "export", "train-demo", "report"]
    assert steps["report"][-2:] == ["--training", str(tmp_path / "train")]
    plain = _step_args(build_parser().parse_args(["run", "raw", "-o", str(tmp_path)]), tmp_path)
    assert list(plain) == ["ingest", "fit", "devices", "export", "report"]
