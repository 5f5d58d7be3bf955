"""Decoding single image files and converting images to graft's uint8 tensors.

Every path into graft ends in a uint8 tensor C×H×W (C = 1 or 3) of a fixed square size. The
conversion rules, in one place so that all sources agree:

* Colour: images are converted to "L" (channels=1) or "RGB" (channels=3). Transparency (RGBA, LA,
  PA, palette images with a transparent index) is composited onto black. CMYK, YCbCr and other
  colour modes go through PIL's own conversion to RGB. High-bit-depth greyscale ("I;16", "I",
  "F") is scaled into 0..255 rather than clipped (see `_high_depth_to_l`).
* Size: resized straight to image_size×image_size with PIL's antialiased bilinear filter. The
  aspect ratio is not kept and nothing is cropped: the whole picture is always visible, squeezed
  if it was not square.
* Files: only the first frame of an animated GIF / multi-page TIFF is used, and the EXIF
  orientation tag (phone photos) is applied before anything else.

Whole arrays of images (IDX files, torchvision `.data` arrays) go through `resize_batch`, which
follows the same colour rules (grey->RGB by repeating, RGB->grey by ITU-R 601 luma, the weights
PIL uses) and resizes with torch's antialiased bilinear interpolation.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from graft.data.dataset import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""Suffixes (lower case, with the dot) of files read as images; compare with `is_image_file`."""

# ITU-R 601-2 luma, the weights PIL's convert("L") uses.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_BATCH_CHUNK = 512  # images resized at once by resize_batch; bounds the float working memory


def is_image_file(path: Path) -> bool:
    """True when the suffix of `path` is one of IMAGE_EXTENSIONS, in any letter case."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _check_target(image_size: int, channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Greyscale with more than 8 bits ("I;16*", "I", "F") -> "L", scaling instead of clipping.

    16-bit modes are divided by 257 (65535 -> 255). "I" (32-bit int, which PIL also uses for
    16-bit PNGs) is kept as is when it fits in 0..255, divided by 257 when it fits in 16 bits and
    scaled by its maximum otherwise. "F" is taken as 0..1 when its maximum is at most 1, else
    clipped to 0..255.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.size == 0:
        return Image.new("L", image.size)
    if image.mode.startswith("I;16"):
        arr = arr / 257.0
    elif image.mode == "I":
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0:
            arr = arr - lo
            hi -= lo
        if hi > 65535:
            arr = arr * (255.0 / hi)
        elif hi > 255:
            arr = arr / 257.0
    else:  # "F"
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if float(arr.max()) <= 1.0:
            arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to "L" (channels=1) or "RGB" (channels=3); alpha goes onto black."""
    target = "L" if channels == 1 else "RGB"
    mode = image.mode
    if mode == target:
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _high_depth_to_l(image)
        return grey if channels == 1 else grey.convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        if mode == "La":  # premultiplied; PIL converts it only to "LA"
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        rgb = Image.alpha_composite(black, rgba).convert("RGB")
        return rgb if channels == 3 else rgb.convert("L")
    if mode in ("1", "L", "P", "RGB") or channels == 3:
        return image.convert(target)
    # CMYK, YCbCr, LAB, HSV, ... -> RGB first, then luma, so grey always means the same thing.
    return image.convert("RGB").convert("L")


def to_uint8_tensor(image: Image.Image, image_size: int, channels: int) -> torch.Tensor:
    """A PIL image of any mode and size -> uint8 tensor channels×image_size×image_size.

    The image is converted to "L" or "RGB" (alpha composited onto black, 16-bit grey scaled down)
    and resized directly to the square with antialiased bilinear filtering: no crop, so a
    non-square picture is squeezed, not cut.
    """
    _check_target(image_size, channels)
    converted = _to_mode(image, channels)
    if converted.size != (image_size, image_size):
        converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.array(converted, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _bomb_message(path: Path, pixels: int | None) -> str:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return (
        f"{path}: image has {count}, over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} "
        f"pixels (PIL.Image.MAX_IMAGE_PIXELS); shrink the image or remove the file"
    )


def _pixels_in_message(exc: BaseException) -> int | None:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else None


def _decode(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """decode_image_file without touching the warnings filters (safe to call from threads).

    The pixel limit is checked here explicitly, so a bomb is refused whatever the filters say;
    callers that also turn DecompressionBombWarning into an error only stop PIL printing it.
    """
    try:
        with Image.open(path) as image:
            limit = Image.MAX_IMAGE_PIXELS
            pixels = image.size[0] * image.size[1]
            if limit is not None and pixels > limit:
                raise DataError(_bomb_message(path, pixels))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_uint8_tensor(image, image_size, channels)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(_bomb_message(path, _pixels_in_message(exc))) from exc
    except Image.UnidentifiedImageError as exc:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        reason = "the file is empty: 0 bytes" if empty else "not a recognised image format"
        raise DataError(f"{path}: cannot be read as an image ({reason})") from exc
    except Exception as exc:  # any decoder failure means this one file is unusable
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot be read as an image ({reason})") from exc


def decode_image_file(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """Read one image file -> uint8 tensor channels×image_size×image_size (see to_uint8_tensor).

    Raises DataError naming the file when it cannot be decoded (corrupt, truncated, empty, not an
    image) or when it has more pixels than PIL.Image.MAX_IMAGE_PIXELS (a decompression bomb; PIL's
    DecompressionBombWarning is an error during this call only, the filters are restored after).
    """
    _check_target(image_size, channels)
    with bomb_warnings_as_errors():
        return _decode(Path(path), image_size, channels)


@contextlib.contextmanager
def bomb_warnings_as_errors() -> Iterator[None]:
    """Inside it PIL's DecompressionBombWarning raises; the warning filters are restored on exit.

    Warning filters are process-wide in Python 3.11, so enter it in one thread (around a whole pool
    of decoders), not in each worker thread.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def resize_batch(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """uint8 N×C×H×W (C = 1 or 3) -> uint8 N×channels×image_size×image_size.

    Grey->RGB repeats the channel (after resizing, which is cheaper); RGB->grey uses ITU-R 601
    luma (before resizing). Resizing is torch's bilinear interpolation with antialias=True, then
    round and clamp to 0..255; it runs in chunks so memory stays bounded for large arrays.
    """
    _check_target(image_size, channels)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected N×C×H×W with C 1 or 3, got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    n, c, h, w = images.shape
    same_size = (h, w) == (image_size, image_size)
    if same_size and c == channels:
        return images.contiguous()
    out = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
    luma = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    for start in range(0, n, _BATCH_CHUNK):
        chunk = images[start : start + _BATCH_CHUNK]
        if c == 3 and channels == 1:
            x = (chunk.float() * luma).sum(dim=1, keepdim=True)
        elif same_size:
            out[start : start + len(chunk)] = chunk.expand(-1, channels, -1, -1)
            continue
        else:
            x = chunk.float()
        if not same_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        y = x.round_().clamp_(0, 255).to(torch.uint8)
        out[start : start + len(chunk)] = y.expand(-1, channels, -1, -1) if y.shape[1] != channels else y
    return out
