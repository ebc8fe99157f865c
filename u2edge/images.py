"""Reading, converting and atomically writing images.

Every failure to read an image is one ``ImageError`` that names the file. A header that claims
more pixels than the limit (``max_pixels``, else the environment variable ``U2EDGE_MAX_PIXELS``,
else ``MAX_PIXELS``) is refused before anything is decoded, so that a small file that decodes to
gigabytes (a decompression bomb) cannot exhaust memory.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ._files import write_bytes_atomic
from .errors import ImageError, OutputError, U2EdgeError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "MAX_PIXELS_ENV", "expand_inputs", "image_size", "pair_files",
           "pixel_limit", "read_image", "read_mask", "to_bgr8", "write_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")

# 2**27 pixels: a 100-megapixel camera's photo (11648x8736) fits; decoded as 16-bit RGBA it takes 1 GiB
MAX_PIXELS = 1 << 27
MAX_PIXELS_ENV = "U2EDGE_MAX_PIXELS"
# the largest file an image within the limit can be: 24 bytes a pixel (ASCII PNM of 16-bit RGB) plus metadata
_BYTES_PER_PIXEL, _METADATA_BYTES = 24, 64 << 20
_HEAD_BYTES = 1 << 16  # holds the size of every header but a JPEG frame behind large APP segments, a TIFF IFD at the end


def expand_inputs(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images, sorted) and globs -> (image paths in order without repeats,
    one problem line per input that names nothing)."""
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += images
            if not images:
                problems.append(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            found += matches
            if not matches:
                problems.append(f"{item}: no files match")
        else:
            problems.append(f"{item}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values()), problems


def pair_files(images: Path, masks: Path, *, names: tuple[str, str] = ("images", "masks")
               ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) pairs of two folders by file name without its suffix (as ECSSD, DUTS and
    most SOD datasets lay them out), and one problem line for every image without a mask.
    ``names`` are the two folders' parameter names, for the error when there is nothing to pair."""
    for folder, name in zip((images, masks), names):
        if not folder.is_dir():
            raise U2EdgeError(lambda spell, name=name, folder=folder: f"{spell(name)} {folder} is not a folder")
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    found, problems = [], []
    for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = by_stem.get(image.stem)
        if mask is None:
            problems.append(f"{image}: no mask named {image.stem}.* in {masks}")
        else:
            found.append((image, mask))
    if not found:
        raise U2EdgeError(f"no image in {images} has a mask of the same name in {masks}")
    return found, problems


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Gray, BGRA or 16-bit images -> HxWx3 uint8 BGR (returned as is when already so)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"cannot convert a {image.dtype} image; expected uint8 or uint16 pixels")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"cannot convert an image of shape {image.shape}; expected HxW, HxWx3 or HxWx4")


def pixel_limit(max_pixels: int | None = None) -> int:
    """The most pixels an image may have: ``max_pixels``, else ``U2EDGE_MAX_PIXELS``, else ``MAX_PIXELS``."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return MAX_PIXELS
        try:
            max_pixels = int(text)
        except ValueError:
            raise U2EdgeError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels; unset it, or give one "
                              f"such as {MAX_PIXELS}") from None
        if max_pixels < 1:
            raise U2EdgeError(f"{MAX_PIXELS_ENV}={text!r} must be at least 1 pixel")
    elif max_pixels < 1:
        raise U2EdgeError(lambda spell: f"{spell('max_pixels')} {max_pixels} must be at least 1 pixel")
    return max_pixels


def _read(path: Path, limit: int) -> np.ndarray:
    """The file's bytes, once its header's size (where it is in the first 64 KiB) is within the
    limit, and its length one that an image within the limit can have."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a device such as /dev/zero never ends; a pipe blocks
            raise ImageError(f"{path}: not a file (a folder, a device or a pipe); give an image file")
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            _check_size(path, image_size(head), limit)
            size = os.fstat(f.fileno()).st_size
            if size > limit * _BYTES_PER_PIXEL + _METADATA_BYTES:
                raise ImageError(lambda spell: f"{path}: {size:,} bytes is more than an image within the limit of "
                                               f"{limit:,} pixels can take; if it is a real image, raise the limit "
                                               f"with {spell('max_pixels')} or the environment variable "
                                               f"{MAX_PIXELS_ENV}")
            if len(head) == size:
                return np.frombuffer(head, np.uint8)
            f.seek(0)
            return np.fromfile(f, np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to read it") from None


def _check_size(path: Path, dims: tuple[int, int] | None, limit: int) -> None:
    if dims is not None and dims[0] * dims[1] > limit:
        width, height = dims
        raise ImageError(lambda spell: f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of "
                                       f"{limit:,} that guards against decompression bombs; if the image is real, "
                                       f"raise the limit with {spell('max_pixels')} or the environment variable "
                                       f"{MAX_PIXELS_ENV}")


def _decode(path: Path, flags: int, max_pixels: int | None) -> np.ndarray:
    limit = pixel_limit(max_pixels)
    data = _read(path, limit)
    if not data.size:
        raise ImageError(f"{path}: empty file (0 bytes); not an image")
    if data.size > _HEAD_BYTES:  # a size the first 64 KiB did not hold: a JPEG's frame header, a TIFF's IFD
        _check_size(path, image_size(data), limit)
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:  # OpenCV's own size limit, an allocation that failed, a decoder's assertion
        raise _decode_error(path, exc) from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode it") from None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt, empty, or an unsupported format)")
    _check_size(path, image.shape[1::-1], limit)  # a format whose header u2edge does not read
    return image


def _decode_error(path: Path, exc: cv2.error) -> ImageError:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if "CV_IO_MAX_IMAGE" in text:  # only for a format whose header u2edge does not read
        return ImageError(f"{path}: OpenCV refuses its size ({text.split('error: ')[-1]}), its guard against "
                          "decompression bombs (2**30 pixels unless OPENCV_IO_MAX_IMAGE_PIXELS says otherwise); "
                          "if the image is real, set OPENCV_IO_MAX_IMAGE_PIXELS higher before u2edge starts "
                          "(OpenCV reads it once, when it loads)")
    if getattr(exc, "code", None) == cv2.Error.StsNoMem:
        return ImageError(f"{path}: not enough memory to decode it")
    return ImageError(f"{path}: OpenCV cannot decode it ({text})")


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file as HxWx3 uint8 BGR, turned as its EXIF orientation says; gray, alpha
    and 16-bit inputs are converted. An image over ``max_pixels`` (see ``pixel_limit``) is
    refused from its header, before decoding; every failure is an ``ImageError`` naming the file."""
    path = Path(path)
    image = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_pixels)
    try:
        return to_bgr8(image)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def read_mask(path: str | os.PathLike, *, max_pixels: int | None = None, strict: bool = False) -> np.ndarray:
    """Decode a mask file as HxW uint8; the same checks as ``read_image``. A color file is turned
    gray, unless ``strict`` (training labels): then only a gray file, or one whose color channels
    are equal, is a mask, and any other is an ``ImageError``."""
    path = Path(path)
    if not strict:
        return _decode(path, cv2.IMREAD_GRAYSCALE, max_pixels)
    mask = _decode(path, cv2.IMREAD_UNCHANGED, max_pixels)
    if mask.dtype == np.uint16:
        mask = (mask >> 8).astype(np.uint8)
    elif mask.dtype != np.uint8:
        raise ImageError(f"{path}: {mask.dtype} pixels; a mask is 8- or 16-bit gray")
    if mask.ndim == 3:
        color = mask[:, :, :3]
        if mask.shape[2] == 2 or (color != color[:, :, :1]).any():
            raise ImageError(f"{path}: a {mask.shape[2]}-channel image whose channels differ is not a mask; "
                             "save masks single-channel (8-bit gray PNG, white = object)")
        mask = np.ascontiguousarray(color[:, :, 0])
    return mask


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the suffix and write atomically: the file is complete or absent."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise OutputError(f"{path}: OpenCV cannot encode {path.suffix} images")
    write_bytes_atomic(path, encoded)  # the encoder's buffer itself: no copy of a large PNG


# --- image sizes from headers ------------------------------------------------------------------------

def image_size(data) -> tuple[int, int] | None:
    """(width, height) from the header of an image in any format OpenCV reads here (PNG, JPEG,
    BMP, TIFF, WebP, PNM/PAM/PFM, Sun raster, Radiance HDR, JPEG 2000, GIF, AVIF), without decoding
    it; None when ``data`` (bytes or a uint8 array, at least the file's start) holds no such header."""
    view = memoryview(data)
    for reader in _READERS:
        try:
            dims = reader(view)
        except (struct.error, ValueError, IndexError):  # a header cut short, or with garbage in it
            dims = None
        if dims is not None:
            return dims if dims[0] > 0 and dims[1] > 0 else None
    return None


def _png(d) -> tuple[int, int] | None:
    if bytes(d[:8]) == b"\x89PNG\r\n\x1a\n" and bytes(d[12:16]) == b"IHDR":
        return struct.unpack_from(">II", d, 16)
    return None


def _jpeg(d) -> tuple[int, int] | None:
    if bytes(d[:2]) != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack_from(">HH", d, i + 5)
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came
            return None
        else:
            i += 2 + struct.unpack_from(">H", d, i + 2)[0]
    return None


def _bmp(d) -> tuple[int, int] | None:
    if bytes(d[:2]) != b"BM":
        return None
    if struct.unpack_from("<I", d, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack_from("<HH", d, 18)
    width, height = struct.unpack_from("<ii", d, 18)
    return abs(width), abs(height)  # a negative height: rows stored top-down


def _tiff(d) -> tuple[int, int] | None:
    order = {b"II": "<", b"MM": ">"}.get(bytes(d[:2]))
    if order is None:
        return None
    version = struct.unpack_from(order + "H", d, 2)[0]
    if version == 42:
        offset, = struct.unpack_from(order + "I", d, 4)
        count, = struct.unpack_from(order + "H", d, offset)
        first, step, value_at = offset + 2, 12, 8
    elif version == 43:  # BigTIFF
        offset, = struct.unpack_from(order + "Q", d, 8)
        count, = struct.unpack_from(order + "Q", d, offset)
        first, step, value_at = offset + 8, 20, 12
    else:
        return None
    found = {}
    for k in range(min(count, 4096)):
        entry = first + k * step
        tag, kind = struct.unpack_from(order + "HH", d, entry)
        if tag in (256, 257):
            code = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if code is None:
                return None
            found[tag] = struct.unpack_from(order + code, d, entry + value_at)[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _webp(d) -> tuple[int, int] | None:
    if bytes(d[:4]) != b"RIFF" or bytes(d[8:12]) != b"WEBP":
        return None
    chunk = bytes(d[12:16])
    if chunk == b"VP8 " and bytes(d[23:26]) == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", d, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and d[20] == 0x2F:
        bits, = struct.unpack_from("<I", d, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(d) >= 30:
        return int.from_bytes(bytes(d[24:27]), "little") + 1, int.from_bytes(bytes(d[27:30]), "little") + 1
    return None


def _pnm(d) -> tuple[int, int] | None:
    head = bytes(d[:4096])
    if len(head) < 3 or head[0:1] != b"P":
        return None
    if head[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines
        width, height = re.search(rb"\nWIDTH\s+(\d+)", head), re.search(rb"\nHEIGHT\s+(\d+)", head)
        return (int(width.group(1)), int(height.group(1))) if width and height else None
    if head[1:2] not in (b"1", b"2", b"3", b"4", b"5", b"6", b"F", b"f") or not head[2:3].isspace():
        return None
    tokens = re.sub(rb"#[^\n]*", b" ", head[2:]).split(None, 2)
    return int(tokens[0]), int(tokens[1])


def _sun_raster(d) -> tuple[int, int] | None:
    if bytes(d[:4]) == b"\x59\xa6\x6a\x95":
        return struct.unpack_from(">II", d, 4)
    return None


def _radiance(d) -> tuple[int, int] | None:
    head = bytes(d[:4096])
    if not head.startswith(b"#?"):
        return None
    match = re.search(rb"\n\s*\n([-+][XY])\s+(\d+)\s+([-+][XY])\s+(\d+)", head)
    if match is None:
        return None
    first, second = int(match.group(2)), int(match.group(4))
    return (second, first) if match.group(1).endswith(b"Y") else (first, second)


def _jpeg2000(d) -> tuple[int, int] | None:
    if bytes(d[:4]) == b"\xff\x4f\xff\x51":  # a raw codestream: the SIZ segment
        x, y, x0, y0 = struct.unpack_from(">IIII", d, 8)
        return x - x0, y - y0
    if bytes(d[4:8]) == b"jP  ":
        at = bytes(d[:4096]).find(b"ihdr")
        if at >= 0:
            height, width = struct.unpack_from(">II", d, at + 4)
            return width, height
    return None


def _gif(d) -> tuple[int, int] | None:
    if bytes(d[:6]) in (b"GIF87a", b"GIF89a"):
        return struct.unpack_from("<HH", d, 6)
    return None


def _heif(d) -> tuple[int, int] | None:
    """AVIF (and HEIF): the largest image spatial extent ('ispe') box in the header."""
    if bytes(d[4:8]) != b"ftyp":
        return None
    head = bytes(d[:_HEAD_BYTES])
    sizes = [struct.unpack_from(">II", head, m.start() + 8) for m in re.finditer(b"ispe", head)]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


_READERS = (_png, _jpeg, _bmp, _tiff, _webp, _pnm, _sun_raster, _radiance, _jpeg2000, _gif, _heif)
