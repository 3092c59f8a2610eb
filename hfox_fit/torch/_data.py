"""The data sets of the training study, all local: scikit-learn's 8×8 digits, or an MNIST-style IDX folder.

Nothing is downloaded. :func:`load_dataset` gives ``(x_train, y_train, x_test, y_test)``
as float32 / int64 tensors with pixels in [0, 1]; :func:`read_idx` reads one IDX file
(gzipped or not) and names the file and what was wrong when it cannot.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..exceptions import ParseError

__all__ = ["load_dataset", "read_idx", "IDX_FILES", "make_loader"]

#: the four files of an MNIST / Fashion-MNIST folder (each may end in .gz)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format: 2 zero bytes, a type code, the number of dimensions, the sizes).

    Raises
    ------
    ParseError
        Not an IDX file, an unknown type code, or fewer bytes than its header announces.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ParseError(f"cannot read the IDX file: {err}. Expected an MNIST-style file "
                         "(gzipped or not).", path=path) from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ParseError(f"not an IDX file: expected the magic bytes 00 00 <type> <ndim>, found "
                         f"{data[:4].hex(' ') or 'an empty file'}.", path=path)
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ParseError(f"unknown IDX type code 0x{code:02x}; expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}.", path=path)
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ParseError(f"the IDX header announces {ndim} dimension(s) but the file ends after "
                         f"{len(data)} bytes.", path=path)
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != need:
        raise ParseError(f"the IDX header announces shape {shape} ({need} bytes of data) but the file "
                         f"holds {len(data) - header} bytes after it: truncated or not this format.", path=path)
    return np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise ParseError(f"no {stem} (or {stem}.gz) in this folder; an MNIST-style folder holds "
                     f"{', '.join(IDX_FILES.values())}.", path=folder)


def _load_idx_folder(folder: Path):
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in IDX_FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise ParseError(f"{part} images of shape {x.shape} do not match {part} labels of shape {y.shape}: "
                             "expected N images and N labels.", path=folder)
        if len(x) == 0:
            raise ParseError(f"the {part} files hold no image: expected at least one.", path=folder)
        if y.min() < 0:
            raise ParseError(f"the {part} labels hold {int(y.min())}: expected class numbers 0, 1, 2, ...",
                             path=folder)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ParseError(f"train images of {arrays['x_train'].shape[1:]} pixels and test images of "
                         f"{arrays['x_test'].shape[1:]}: expected images of one size.", path=folder)
    out = []
    for key in ("x_train", "y_train", "x_test", "y_test"):
        a = arrays[key]
        if key.startswith("x"):
            a = a.reshape(len(a), -1).astype(np.float32)
            a = a / max(float(a.max()), 1.0)
            out.append(torch.from_numpy(np.ascontiguousarray(a)))
        else:
            out.append(torch.from_numpy(a.astype(np.int64)))
    return tuple(out)


def _load_digits(test_fraction: float = 0.25):
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the 8x8 digits set comes with scikit-learn, which is not installed: "
                          "pip install 'hfox_fit[train]' (or pip install scikit-learn), or give "
                          "--dataset PATH of a local MNIST-style folder.") from err
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    # a fixed stratified split (independent of any training seed): every class 25 % in the test set
    rng = np.random.default_rng(20210714)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, size=int(round(test_fraction * len(idx))), replace=False)] = True
    return (torch.from_numpy(x[~test]), torch.from_numpy(y[~test]), torch.from_numpy(x[test]),
            torch.from_numpy(y[test]))


def load_dataset(name="digits"):
    """``(x_train, y_train, x_test, y_test)`` of ``"digits"`` or of an MNIST-style folder path."""
    if str(name) == "digits":
        return _load_digits()
    folder = Path(name)
    if not folder.is_dir():
        raise ParseError("the dataset must be 'digits' or a folder holding "
                         f"{', '.join(IDX_FILES.values())} (gzipped or not); this is not a folder.", path=folder)
    return _load_idx_folder(folder)


def make_loader(x, y, *, batch_size: int = 64, shuffle: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader over tensors; its ``generator`` is reseeded by the training loop each epoch."""
    ds = torch.utils.data.TensorDataset(x, y)
    g = torch.Generator()
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g)
