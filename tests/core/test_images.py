"""Image references resolved under the images folder, and image headers probed without decoding."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.core.images import ImageResolver, probe_image, reference_parts
from converter.errors import SampleError

from .media import jpeg_bytes, png_bytes, write_file

# --- reference_parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("s3://bucket/a/b.jpg", ("bucket", ("a", "b.jpg"))),
        ("s3://my-bucket/some dir/x/img.png", ("my-bucket", ("some dir", "x", "img.png"))),
        ("gs://bucket/img.jpg", ("bucket", ("img.jpg",))),
        (
            "https://host.example.com/path/to/img.jpg?X-Amz-Signature=abc",
            ("host.example.com", ("path", "to", "img.jpg")),
        ),
        ("http://localhost:8080/img.jpg", ("localhost:8080", ("img.jpg",))),
        ("/data/a.jpg", ("", ("data", "a.jpg"))),
        ("images/./a.jpg", ("", ("images", "a.jpg"))),
        ("a.jpg", ("", ("a.jpg",))),
        ("C:\\data\\img\\a.jpg", ("", ("C:", "data", "img", "a.jpg"))),
        ("D:/exports/a.jpg", ("", ("D:", "exports", "a.jpg"))),
        ("folder\\a.jpg", ("", ("folder", "a.jpg"))),
    ],
)
def test_reference_parts(reference: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert reference_parts(reference) == expected


# --- ImageResolver ---------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


def _error(resolver: ImageResolver, reference: str) -> SampleError:
    with pytest.raises(SampleError) as raised:
        resolver.resolve(reference)
    return raised.value


def test_whole_key_path_under_the_folder(root: Path) -> None:
    expected = write_file(root / "some dir" / "a.jpg", b"x")
    write_file(root / "a.jpg", b"decoy")  # a shorter match must not win over the whole path
    assert ImageResolver(root).resolve("s3://bucket/some dir/a.jpg") == expected


def test_bucket_prefixed_path(root: Path) -> None:
    expected = write_file(root / "bucket" / "x" / "b.jpg", b"x")
    assert ImageResolver(root).resolve("s3://bucket/x/b.jpg") == expected


def test_trailing_components_longest_first(root: Path) -> None:
    expected = write_file(root / "x" / "c.jpg", b"x")
    write_file(root / "c.jpg", b"decoy")
    assert ImageResolver(root).resolve("s3://bucket/deep/er/x/c.jpg") == expected


def test_unique_file_name_anywhere(root: Path) -> None:
    expected = write_file(root / "elsewhere" / "nested" / "d.jpg", b"x")
    assert ImageResolver(root).resolve("s3://bucket/other/d.jpg") == expected


def test_local_and_windows_paths(root: Path) -> None:
    expected = write_file(root / "img" / "a.jpg", b"x")
    resolver = ImageResolver(root)
    assert resolver.resolve("/home/me/dataset/img/a.jpg") == expected
    assert resolver.resolve("C:\\Users\\me\\dataset\\img\\a.jpg") == expected
    assert resolver.resolve("img/a.jpg") == expected


def test_ambiguous_name(root: Path) -> None:
    write_file(root / "p" / "e.jpg", b"x")
    write_file(root / "q" / "e.jpg", b"y")
    error = _error(ImageResolver(root), "s3://bucket/r/e.jpg")
    assert error.code == "ambiguous_image"
    assert "is ambiguous: 2 files" in error.message
    assert "p/e.jpg" in error.message
    assert "q/e.jpg" in error.message


def test_ambiguous_name_is_decided_by_the_path(root: Path) -> None:
    expected = write_file(root / "p" / "e.jpg", b"x")
    write_file(root / "q" / "e.jpg", b"y")
    assert ImageResolver(root).resolve("s3://bucket/p/e.jpg") == expected


def test_absent_image(root: Path) -> None:
    write_file(root / "a.jpg", b"x")
    error = _error(ImageResolver(root), "s3://bucket/missing.jpg")
    assert error.code == "missing_image"
    assert "'s3://bucket/missing.jpg' not found" in error.message


def test_reference_without_a_file(root: Path) -> None:
    assert _error(ImageResolver(root), "s3://bucket/").code == "missing_image"


def test_a_folder_is_not_an_image(root: Path) -> None:
    (root / "a.jpg").mkdir()
    assert _error(ImageResolver(root), "a.jpg").code == "missing_image"


@pytest.mark.parametrize(
    "reference",
    ["s3://bucket/../secret.jpg", "../secret.jpg", "images/../../secret.jpg", "s3://bucket/%2e%2e/secret.jpg"],
)
def test_parent_components_are_refused(root: Path, reference: str) -> None:
    write_file(root.parent / "secret.jpg", b"x")
    error = _error(ImageResolver(root), reference)
    assert error.code == "unsafe_path"
    assert "contains '..'" in error.message


def test_symlink_out_of_the_folder_is_refused(root: Path, tmp_path: Path) -> None:
    outside = write_file(tmp_path / "outside" / "secret.jpg", b"x")
    (root / "link.jpg").symlink_to(outside)
    error = _error(ImageResolver(root), "s3://bucket/link.jpg")
    assert error.code == "unsafe_path"
    assert "a link out of" in error.message


def test_symlinked_folder_out_of_the_folder_is_refused(root: Path, tmp_path: Path) -> None:
    write_file(tmp_path / "outside" / "secret.jpg", b"x")
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert _error(ImageResolver(root), "linked/secret.jpg").code == "unsafe_path"


def test_symlink_out_of_the_folder_is_never_found_by_name(root: Path, tmp_path: Path) -> None:
    outside = write_file(tmp_path / "outside" / "secret.jpg", b"x")
    (root / "sub").mkdir()
    (root / "sub" / "secret.jpg").symlink_to(outside)
    assert _error(ImageResolver(root), "s3://bucket/elsewhere/secret.jpg").code == "missing_image"


def test_symlink_inside_the_folder_is_followed(root: Path) -> None:
    target = write_file(root / "store" / "a.jpg", b"x")
    (root / "a.jpg").symlink_to(target)
    assert ImageResolver(root).resolve("a.jpg") == root / "a.jpg"


def test_images_folder_reached_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    expected_real = write_file(real / "x" / "a.jpg", b"x")
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    resolved = ImageResolver(tmp_path / "alias").resolve("s3://bucket/x/a.jpg")
    assert resolved.resolve() == expected_real.resolve()


def test_url_encoded_key(root: Path) -> None:
    expected = write_file(root / "my photos" / "img 1.jpg", b"x")
    resolver = ImageResolver(root)
    assert resolver.resolve("s3://bucket/my%20photos/img%201.jpg") == expected
    assert resolver.resolve("s3://bucket/other/img%201.jpg") == expected  # by name, decoded


def test_literal_percent_in_a_file_name(root: Path) -> None:
    expected = write_file(root / "100%20done.jpg", b"x")
    assert ImageResolver(root).resolve("s3://bucket/100%20done.jpg") == expected


def test_unicode_file_name(root: Path) -> None:
    expected = write_file(root / "Straße" / "café.jpg", b"x")
    assert ImageResolver(root).resolve("s3://bucket/Straße/café.jpg") == expected
    assert ImageResolver(root).resolve("s3://bucket/Stra%C3%9Fe/caf%C3%A9.jpg") == expected


# --- probe_image -----------------------------------------------------------------------------


def test_jpeg_format_and_size() -> None:
    info = probe_image(jpeg_bytes(40, 20))
    assert (info.format, info.width, info.height, info.exif_orientation) == ("jpeg", 40, 20, 1)
    assert info.stored_size == (40, 20)


def test_png_format_and_size() -> None:
    info = probe_image(png_bytes(30, 10))
    assert (info.format, info.width, info.height, info.exif_orientation) == ("png", 30, 10, 1)


@pytest.mark.parametrize(
    ("orientation", "displayed"),
    [
        (1, (40, 20)),
        (2, (40, 20)),
        (3, (40, 20)),
        (4, (40, 20)),
        (5, (20, 40)),
        (6, (20, 40)),
        (7, (20, 40)),
        (8, (20, 40)),
    ],
)
def test_exif_orientation_gives_the_displayed_size(orientation: int, displayed: tuple[int, int]) -> None:
    info = probe_image(jpeg_bytes(40, 20, orientation=orientation))
    assert (info.width, info.height) == displayed
    assert info.exif_orientation == orientation
    assert info.stored_size == (40, 20)


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_exif_orientation_is_ignored(orientation: int) -> None:
    info = probe_image(jpeg_bytes(40, 20, orientation=orientation))
    assert (info.width, info.height, info.exif_orientation) == (40, 20, 1)


def test_probe_does_not_decode_pixels() -> None:
    # A header followed by garbage scan data still probes: only the header and end marker are read.
    data = bytearray(jpeg_bytes(64, 48))
    start = data.index(b"\xff\xda") + 20  # inside the first scan's entropy-coded data
    data[start : start + 50] = bytes(range(50))
    info = probe_image(bytes(data))
    assert (info.width, info.height) == (64, 48)


def _corrupt(data: bytes) -> SampleError:
    with pytest.raises(SampleError) as raised:
        probe_image(data)
    assert raised.value.code == "corrupt_image"
    return raised.value


def test_empty_bytes() -> None:
    assert "empty" in _corrupt(b"").message


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(seed: int) -> None:
    assert "cannot be read" in _corrupt(random.Random(seed).randbytes(2000)).message


def test_text_file_is_not_an_image() -> None:
    assert "cannot be read" in _corrupt(b"<html><body>Access Denied</body></html>").message


@pytest.mark.parametrize("cut", [1, 2, 10, 200])
def test_truncated_jpeg(cut: int) -> None:
    data = jpeg_bytes(64, 48)
    assert "truncated" in _corrupt(data[:-cut]).message


@pytest.mark.parametrize("cut", [1, 4, 12, 100])
def test_truncated_png(cut: int) -> None:
    data = png_bytes(64, 48)
    assert "truncated" in _corrupt(data[:-cut]).message


_SAMPLES = {"jpeg": jpeg_bytes(32, 24, seed=3), "png": png_bytes(32, 24, seed=3)}


@settings(max_examples=60)
@given(kind=st.sampled_from(["jpeg", "png"]), fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_any_truncation_is_corrupt(kind: str, fraction: float) -> None:
    data = _SAMPLES[kind]
    _corrupt(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_data_appended_after_the_end_marker_is_accepted(kind: str) -> None:
    """Cameras append data after the end marker (motion photos append a video): still a whole image."""
    data = _SAMPLES[kind] + random.Random(1).randbytes(5000)
    assert probe_image(data).format == kind


def test_truncated_jpeg_with_an_exif_thumbnail_is_still_corrupt() -> None:
    """The thumbnail inside APP1 has its own end marker; only the main image's counts."""
    from io import BytesIO

    from PIL import Image

    thumbnail = jpeg_bytes(16, 12, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 1
    exif_bytes = exif.tobytes() + thumbnail  # an end marker early in the file, inside APP1
    stream = BytesIO()
    Image.open(BytesIO(jpeg_bytes(64, 48, seed=6))).save(stream, "JPEG", exif=exif_bytes)
    whole = stream.getvalue()
    assert whole.find(b"\xff\xd9") < len(whole) - 2  # the thumbnail's marker comes first
    assert probe_image(whole).format == "jpeg"
    assert "truncated" in _corrupt(whole[: len(whole) - 50]).message
