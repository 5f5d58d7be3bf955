"""IDX files (the MNIST family's format) -> tensors and ImageDataset.

Format: 2 zero bytes, a dtype code byte (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float,
0x0E double), a byte with the number of dimensions, then one big-endian 32-bit size per dimension,
then the values, big-endian, in row-major order. Files may be gzipped (recognised by the gzip magic
bytes, whatever the file is called).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from graft.data.dataset import DataError, ImageDataset
from graft.data.images import _check_target, resize_batch

GZIP_MAGIC = b"\x1f\x8b"

# dtype code -> (big-endian numpy dtype, name)
IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: IDX file not found; check the path in params")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; expected an IDX file (MNIST format), gzipped or not")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: gzip data is corrupt or truncated ({exc}); download or copy the file again") from exc
    return raw


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (gzipped or not) into a tensor of its own dtype and shape.

    Raises DataError naming the file for a missing file, a bad magic number or dtype code, or a
    data size that does not match the dimensions in the header (truncated or padded file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes); the file is truncated or not IDX")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000 then a dtype code "
            f"{', '.join(f'{c:02x}' for c in IDX_DTYPES)} and the number of dimensions); "
            "this is not an IDX file (MNIST format), or it is compressed with something other than gzip"
        )
    dtype_str, dtype_name = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; the file is corrupt")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header}); copy the file again")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(dtype_str)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"{path}: IDX data is {what}: dimensions {dims} of {dtype_name} need {expected} bytes "
            f"after the header, the file has {actual}; copy or download the file again"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("="), copy=True))


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """IDX image values -> uint8: uint8 as is; floats with max <= 1 scaled by 255; else rounded and clipped to 0..255."""
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        x = torch.nan_to_num(x.double(), nan=0.0)
        if x.numel() and float(x.max()) <= 1.0:
            x = x * 255.0
        return x.round().clamp(0, 255).to(torch.uint8)
    return x.clamp(0, 255).to(torch.uint8)


def load_idx(
    images: Path,
    labels: Path,
    image_size: int,
    channels: int,
    class_names: list[str] | None = None,
    classes: list[str] | None = None,
) -> ImageDataset:
    """An IDX images file (N×H×W grey or N×H×W×C, C 1 or 3) and labels file (N) -> ImageDataset.

    Images are converted to `channels` (grey->RGB repeats, RGB->grey is ITU-R 601 luma) and resized
    to image_size with antialiased bilinear interpolation (graft.data.images.resize_batch).
    class_names name labels 0..K-1 (default: "0", "1", ... up to the largest label); `classes`
    keeps only those classes, relabelled in that order (selection happens before resizing).
    """
    _check_target(image_size, channels)
    images, labels = Path(images), Path(labels)
    x = read_idx(images)
    y = read_idx(labels)

    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    else:
        raise DataError(
            f"{images}: IDX images have shape {tuple(x.shape)}; expected N×H×W (grey) or N×H×W×C with C 1 or 3 "
            "- is this the labels file given as images?"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.is_floating_point():
        raise DataError(f"{labels}: IDX labels must be a 1-D array of integers, got {y.dtype} {tuple(y.shape)} - is this the images file given as labels?")
    if y.shape[0] != x.shape[0]:
        raise DataError(
            f"{labels}: {y.shape[0]} labels for {x.shape[0]} images in {images}; "
            "the two files must come from the same split (e.g. train-images with train-labels)"
        )
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"{labels}: negative label {int(y.min())}; labels must be 0..K-1")
    n_labels = int(y.max()) + 1 if y.numel() else 0
    if class_names is None:
        names = [str(i) for i in range(n_labels)]
    else:
        names = [str(c) for c in class_names]
        if len(names) < n_labels:
            raise DataError(
                f"{labels}: labels go up to {n_labels - 1} but class_names has only {len(names)} names; "
                f"give one name per label 0..{n_labels - 1}"
            )
        if len(set(names)) != len(names):
            raise DataError(f"{labels}: class_names has duplicates {sorted({c for c in names if names.count(c) > 1})}; names must be unique")

    raw = ImageDataset(_as_uint8(x).contiguous(), y.contiguous(), names)
    if classes is not None:
        try:
            raw = raw.select_classes(list(classes))
        except DataError as err:
            raise DataError(f"{images}: {err}; name classes as in class_names (or label numbers when class_names is not set)") from err
    return ImageDataset(resize_batch(raw.images, image_size, channels), raw.labels, raw.classes)
