"""read_image and read_mask on real photos in every layout, and on damaged files: each failure is
one ImageError that names the file, and a header over the pixel limit is refused before decoding."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from u2edge.bench.fuzz import png_bomb, png_header
from u2edge.errors import ImageError, U2EdgeError
from u2edge.images import MAX_PIXELS, MAX_PIXELS_ENV, image_size, pixel_limit, read_image, read_mask

# every format this OpenCV writes and reads; float formats are written from a [0, 1] float image
FORMATS = (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pgm", ".pbm", ".pam", ".pfm", ".sr", ".hdr", ".jp2",
           ".gif", ".avif")


def encode(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok, ext
    return buf.tobytes()


@pytest.fixture(scope="module")
def coffee(photos) -> np.ndarray:
    """A real photo cut to an odd, non-square size, so that width and height cannot be swapped unseen."""
    return photos["coffee.png"][:, :333]


@pytest.mark.parametrize("ext", FORMATS)
def test_image_size_reads_every_header(coffee, ext):
    if ext in (".pfm", ".hdr"):
        image = coffee.astype(np.float32) / 255
    elif ext in (".pgm", ".pbm"):
        image = cv2.cvtColor(coffee, cv2.COLOR_BGR2GRAY)
    else:
        image = coffee
    height, width = coffee.shape[:2]
    assert image_size(encode(ext, image)) == (width, height)


def test_image_size_reads_lossless_webp_and_a_frame_header_past_64_kib(coffee):
    assert image_size(encode(".webp", coffee, (cv2.IMWRITE_WEBP_QUALITY, 101))) == (333, 400)  # VP8L
    jpeg = encode(".jpg", coffee)
    comment = b"\xff\xfe" + struct.pack(">H", 65000) + bytes(64998)  # two large COM segments before the frame
    padded = jpeg[:2] + comment * 2 + jpeg[2:]
    assert cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (400, 333)
    assert image_size(padded[:1 << 16]) is None
    assert image_size(padded) == (333, 400)


@pytest.mark.parametrize("data", [b"", b"text", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00\xff\xff\xff\xff",
                                  b"RIFF\x00\x00\x00\x00WEBPVP8X", b"P6\n", b"P3 a b", b"GIF89a", b"BM"])
def test_image_size_of_no_header_is_none(data):
    assert image_size(data) is None


def huge_headers(coffee) -> dict[str, bytes]:
    """Real files of each common format, their header patched to claim 60000x60000 pixels (16000x16000 for WebP,
    whose limit is 16383)."""
    def patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, offset, *values)
        return bytes(out)

    jpeg = encode(".jpg", coffee)
    sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)
    webp = encode(".webp", coffee, (cv2.IMWRITE_WEBP_QUALITY, 90))
    gif = encode(".gif", coffee)
    bmp = encode(".bmp", coffee)
    jp2 = encode(".jp2", coffee)
    ihdr = jp2.index(b"ihdr")
    return {
        "huge.png": png_header(60000, 60000),
        "huge.jpg": patch(jpeg, sof + 5, ">HH", 60000, 60000),
        "huge.bmp": patch(bmp, 18, "<ii", 60000, 60000),
        "huge.webp": patch(webp, 26, "<HH", 16000, 16000),
        "huge.gif": patch(gif, 6, "<HH", 60000, 60000),
        "huge.ppm": b"P6\n60000 60000\n255\n" + bytes(100),
        "huge.jp2": patch(jp2, ihdr + 4, ">II", 60000, 60000),
    }


def test_huge_headers_are_refused_naming_the_file_and_the_limit(coffee, tmp_path):
    for name, data in huge_headers(coffee).items():
        path = tmp_path / name
        path.write_bytes(data)
        assert image_size(data)[0] * image_size(data)[1] > MAX_PIXELS, name
        with pytest.raises(ImageError) as info:
            read_image(path)
        text = str(info.value)
        assert text.startswith(f"{path}: ") and "decompression bombs" in text, text
        assert f"{MAX_PIXELS:,}" in text and "max_pixels" in text and MAX_PIXELS_ENV in text, text
        assert "--max-pixels" in info.value.message(lambda name: "--" + name.replace("_", "-"))
        with pytest.raises(ImageError, match="decompression bombs"):
            read_mask(path)


def test_opencv_size_limit_is_one_line_too(tmp_path):
    """Raised above OpenCV's own limit (2**30 pixels), the 60000x60000 PNG reaches OpenCV, whose assertion
    (cv2.error) becomes the file's ImageError, naming OpenCV's limit and how to raise it."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(60000, 60000))
    with pytest.raises(ImageError) as info:
        read_image(path, max_pixels=4 * 10**9)
    text = str(info.value)
    assert text.startswith(f"{path}: OpenCV refuses its size") and "OPENCV_IO_MAX_IMAGE_PIXELS" in text, text


def test_a_real_bomb_is_refused_from_its_header(tmp_path):
    """A valid PNG of zeros, 146 KB, that would decode to 12085x12085 pixels (438 MB as BGR)."""
    path = tmp_path / "bomb.png"
    side = 12085
    path.write_bytes(png_bomb(side, side))
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match=f"{side}x{side} is {side * side:,} pixels"):
        read_image(path)


def test_the_limit_is_a_parameter_and_an_environment_variable(photo_paths, monkeypatch):
    path = photo_paths[0]  # astronaut.png, 512x512
    assert read_image(path, max_pixels=512 * 512).shape == (512, 512, 3)
    with pytest.raises(ImageError, match="512x512 is 262,144 pixels, over the limit of 262,143"):
        read_image(path, max_pixels=512 * 512 - 1)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert pixel_limit() == 1000
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        read_image(path)
    assert read_image(path, max_pixels=10**6).shape == (512, 512, 3)  # the parameter wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(U2EdgeError, match=f"{MAX_PIXELS_ENV}='lots' is not a number of pixels"):
        read_image(path)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    assert pixel_limit() == MAX_PIXELS
    with pytest.raises(U2EdgeError, match="max_pixels 0 must be at least 1"):
        read_image(path, max_pixels=0)


def test_layouts_of_real_photos(photos, tmp_path):
    image = photos["chelsea.png"]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cases = {
        "gray.png": (gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)),
        "rgb16.png": (image.astype(np.uint16) * 257, image),
        "gray16.png": (gray.astype(np.uint16) * 257, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)),
        "rgba.png": (np.dstack([image, gray]), image),
        "rgb16.tif": (image.astype(np.uint16) * 257, image),
        "pixel.png": (image[:1, :1], image[:1, :1]),
        "row.png": (image[:1], image[:1]),
    }
    for name, (stored, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(encode(".png" if name.endswith(".png") else ".tif", stored))
        got = read_image(path)
        assert got.dtype == np.uint8 and np.array_equal(got, expected), name
        assert read_mask(path).shape == expected.shape[:2], name


def test_every_truncation_and_flip_is_an_image_error_naming_the_file(photos, tmp_path):
    """Truncated at 60 offsets and with bits flipped, as PNG and JPEG: either the photo's size or
    one ImageError that names the file, never another exception."""
    rng = np.random.default_rng(0)
    image = photos["rocket.jpg"]
    failed = 0
    for ext in (".png", ".jpg"):
        data = encode(ext, image)
        variants = [data[:cut] for cut in sorted({0, 1, 7, 8, 16, 33, 100} | set(rng.integers(1, len(data), 53)))]
        for count in (1, 4, 32, 256):
            flipped = np.frombuffer(data, np.uint8).copy()
            flipped[rng.integers(0, len(data), count)] ^= np.uint8(1 << int(rng.integers(8)))
            variants.append(flipped.tobytes())
        for i, variant in enumerate(variants):
            path = tmp_path / f"v{i}{ext}"
            path.write_bytes(variant)
            try:
                got = read_image(path)
            except ImageError as exc:
                assert str(exc).startswith(f"{path}: "), str(exc)
                failed += 1
            else:
                assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
                # a flip in the frame header may change the size; a truncation never does
                assert got.shape == image.shape or len(variant) == len(data), (path, got.shape)
    assert failed >= 100  # most truncations cannot be decoded


@pytest.mark.parametrize("name, data, message", [
    ("empty.png", b"", "empty file"),
    ("text.png", b"just some text\n" * 10, "not a readable image"),
    ("page.jpg", b"<html>404</html>", "not a readable image"),
    ("under_limit.png", png_header(11585, 11585), "not a readable image"),
])
def test_unreadable_files(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    for read in (read_image, read_mask):
        with pytest.raises(ImageError, match=message) as info:
            read(path)
        assert str(info.value).startswith(f"{path}: ")


def test_a_folder_device_or_missing_file_is_an_image_error(tmp_path):
    for path in (tmp_path, Path("/dev/zero")):  # /dev/zero would be read forever
        with pytest.raises(ImageError, match=f"^{path}: not a file"):
            read_image(path)
    with pytest.raises(ImageError, match="cannot read .No such file"):
        read_image(tmp_path / "missing.png")


def test_float_images_name_the_file(photos, tmp_path):
    path = tmp_path / "float.pfm"
    path.write_bytes(encode(".pfm", photos["chelsea.png"].astype(np.float32) / 255))
    with pytest.raises(ImageError, match=f"^{path}: cannot convert a float32 image"):
        read_image(path)
