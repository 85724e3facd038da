"""Rendered images (pacs.rendering): the pixel pipeline of PS3.4 N.2 on synthetic instances
with known pixels, region and viewport, the encoders, and every stored compressed transfer
syntax (made with DCMTK dcmcjpeg/dcmcjpls/dcmcrle and pydicom's JPEG 2000 encoder)."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pacs.rendering import (
    GIF,
    JPEG,
    PNG,
    DecodeFailed,
    FrameNotFound,
    InvalidRenderParameter,
    NotRenderable,
    RenderOptions,
    Viewport,
    Window,
    render_instance,
    thumbnail_options,
)
from pacs.rendering_params import parse_options, parse_region, parse_viewport, parse_window
from tests.conftest import require_tool
from tests.pacs.dicom_data import make_dataset, write_part10


def image_file(path: Path, pixels: np.ndarray, **extra: object) -> Path:
    """A Part 10 CT-like instance holding ``pixels`` (rows, columns[, 3]) or frames."""
    ds = make_dataset(**extra)  # type: ignore[arg-type]
    frames = pixels if pixels.ndim == 3 and pixels.shape[-1] != 3 else pixels[None]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    if frames.ndim == 4:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = (
            3,
            extra.get("PhotometricInterpretation", "RGB"),
        )
        ds.PlanarConfiguration = extra.get("PlanarConfiguration", 0)
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if pixels.dtype.itemsize == 1:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if ds.get("PlanarConfiguration") == 1:
        frames = frames.transpose(0, 3, 1, 2)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    write_part10(ds, path)
    return path


def decoded(data: bytes, media_type: str = PNG) -> np.ndarray:
    image = Image.open(BytesIO(data))
    assert image.format == {PNG: "PNG", JPEG: "JPEG", GIF: "GIF"}[media_type]
    return np.asarray(image.convert("RGB") if image.mode == "P" else image)


def rendered(path: Path, frame: int = 1, **options: object) -> np.ndarray:
    chosen = RenderOptions(media_type=PNG, **options)  # type: ignore[arg-type]
    return decoded(render_instance(path, frame, chosen).data).astype(int)


def ramp(columns: int = 8, top: int = 4095) -> np.ndarray:
    """One row per image of evenly spaced values 0..top, repeated over 4 rows."""
    return np.tile(np.linspace(0, top, columns).round().astype(np.uint16), (4, 1))


# --- Grayscale pipeline ------------------------------------------------------------------


def test_the_files_first_window_is_applied(tmp_path: Path) -> None:
    pixels = np.array([[0, 500, 1000, 1500, 2000]] * 2, dtype=np.uint16)
    path = image_file(tmp_path / "w.dcm", pixels, WindowCenter=["1000", "40"],
                      WindowWidth=["1001", "400"])  # fmt: skip
    assert rendered(path)[0].tolist() == [0, 0, 128, 255, 255]


def test_a_window_parameter_overrides_the_file(tmp_path: Path) -> None:
    pixels = np.array([[0, 100, 200, 300]] * 2, dtype=np.uint16)
    path = image_file(tmp_path / "w.dcm", pixels, WindowCenter="3000", WindowWidth="10")
    window = parse_window("150,201")
    assert window == Window(150, 201, "LINEAR")
    assert rendered(path, window=window)[0].tolist() == [0, 64, 192, 255]


def test_linear_exact_and_sigmoid_functions(tmp_path: Path) -> None:
    pixels = np.array([[0, 100, 200]] * 2, dtype=np.uint16)
    path = image_file(tmp_path / "f.dcm", pixels)
    exact = rendered(path, window=parse_window("100,200,linear-exact"))[0].tolist()
    assert exact == [0, 128, 255]
    sigmoid = rendered(path, window=parse_window("100,100,SIGMOID"))[0].tolist()
    assert sigmoid[1] == 128 and sigmoid[0] == round(255 / (1 + np.exp(4)))
    from_file = image_file(tmp_path / "s.dcm", pixels, WindowCenter="100", WindowWidth="100",
                           VOILUTFunction="SIGMOID")  # fmt: skip
    assert rendered(from_file)[0].tolist() == sigmoid


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path: Path) -> None:
    pixels = np.array([[0, 1024, 2048]] * 2, dtype=np.uint16)  # HU -1024, 0, 1024 (slope 1)
    path = image_file(tmp_path / "r.dcm", pixels, RescaleIntercept="-1024", RescaleSlope="1",
                      WindowCenter="0", WindowWidth="2049")  # fmt: skip
    assert rendered(path)[0].tolist() == [0, 128, 255]
    halved = image_file(tmp_path / "h.dcm", pixels, RescaleIntercept="0", RescaleSlope="0.5",
                        WindowCenter="512", WindowWidth="1025")  # fmt: skip
    assert rendered(halved)[0].tolist() == [0, 128, 255]


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[0, 4095]] * 2, dtype=np.uint16)
    path = image_file(tmp_path / "m1.dcm", pixels, PhotometricInterpretation="MONOCHROME1",
                      WindowCenter="2048", WindowWidth="4096")  # fmt: skip
    assert rendered(path)[0].tolist() == [255, 0]


def test_signed_pixels_with_twelve_bits_stored(tmp_path: Path) -> None:
    values = np.array([[-2048, -1000, 0, 2047]] * 2, dtype=np.int16)
    stored = (values.astype(np.uint16) & 0x0FFF).view(np.int16)  # upper bits left zero
    path = image_file(tmp_path / "s.dcm", stored, WindowCenter="0", WindowWidth="4096")
    assert rendered(path)[0].tolist() == [0, 65, 128, 255]


def test_without_a_window_the_frame_range_is_shown(tmp_path: Path) -> None:
    path = image_file(tmp_path / "n.dcm", np.array([[100, 200, 300]] * 2, dtype=np.uint16))
    assert rendered(path)[0].tolist() == [0, 128, 255]


def test_padding_is_left_out_of_the_frame_range(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000, 1100, 1200]] * 2, dtype=np.uint16)  # 0: outside the body
    path = image_file(tmp_path / "p.dcm", pixels, PixelPaddingValue=0)
    assert rendered(path)[0].tolist() == [0, 0, 128, 255]


def test_a_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries from stored value 0, 8-bit output
    lut.add_new("LUTData", "US", [255, 170, 85, 0])
    path = image_file(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3]] * 2, dtype=np.uint16),
                      VOILUTSequence=[lut])  # fmt: skip
    assert rendered(path)[0].tolist() == [255, 170, 85, 0]


# --- Colour ------------------------------------------------------------------------------


def colour_pixels() -> np.ndarray:
    red, green, blue, grey = [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]
    return np.array([[red, green, blue, grey]] * 4, dtype=np.uint8)


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_in_either_planar_configuration(tmp_path: Path, planar: int) -> None:
    path = image_file(tmp_path / "rgb.dcm", colour_pixels(), PlanarConfiguration=planar)
    assert (rendered(path) == colour_pixels()).all()


def test_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    ybr = convert_color_space(colour_pixels(), "RGB", "YBR_FULL")
    path = image_file(tmp_path / "ybr.dcm", ybr, PhotometricInterpretation="YBR_FULL")
    assert np.abs(rendered(path) - colour_pixels()).max() <= 2


def test_native_ybr_full_422_is_upsampled_and_converted(tmp_path: Path) -> None:
    rgb = np.zeros((4, 8, 3), dtype=np.uint8)
    rgb[:, :4], rgb[:, 4:] = [255, 0, 0], [0, 0, 255]
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(int)
    cb, cr = (ybr[..., k].reshape(4, 4, 2).mean(axis=2).round() for k in (1, 2))
    packed = np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], cb, cr], axis=-1)  # Y1 Y2 Cb Cr
    ds = make_dataset(rows=4, PixelData=packed.astype(np.uint8).tobytes())
    ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 8, 3, 0
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    write_part10(ds, tmp_path / "422.dcm")
    assert np.abs(rendered(tmp_path / "422.dcm") - rgb).max() <= 2


def test_palette_color_is_looked_up(tmp_path: Path) -> None:
    ds = make_dataset(rows=2, PixelData=np.tile(np.arange(256, dtype=np.uint8), 2).tobytes())
    ds.Columns, ds.PhotometricInterpretation = 256, "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ramp16 = np.arange(256, dtype=np.uint16) * 257
    for colour, lut in (("Red", ramp16), ("Green", 0 * ramp16), ("Blue", ramp16[::-1])):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [256, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", lut.tobytes())
    write_part10(ds, tmp_path / "palette.dcm")
    shown = rendered(tmp_path / "palette.dcm")
    assert shown[0, 1].tolist() == [1, 0, 254] and shown[1, 255].tolist() == [255, 0, 0]


# --- Frames, viewport, encodings ----------------------------------------------------------


def test_a_multi_frame_instance_renders_the_frame_asked_for(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 6), value, dtype=np.uint16) for value in (0, 2048, 4095)])
    path = image_file(tmp_path / "mf.dcm", frames, WindowCenter="2048", WindowWidth="4097")
    assert {rendered(path, n)[0, 0] for n in (1, 2, 3)} == {0, 128, 255}
    assert (rendered(path, 2) == 128).all()
    with pytest.raises(FrameNotFound, match="frame 4 does not exist: the instance has 3"):
        render_instance(path, 4)
    with pytest.raises(FrameNotFound):
        render_instance(path, 0)


def test_enhanced_per_frame_window_is_used(tmp_path: Path) -> None:
    frames = np.stack([np.full((2, 2), 1000, dtype=np.uint16)] * 2)
    groups = []
    for center in ("0", "2000"):
        voi, item = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, "1000"
        item.FrameVOILUTSequence = [voi]
        groups.append(item)
    path = image_file(tmp_path / "enh.dcm", frames, PerFrameFunctionalGroupsSequence=groups)
    assert rendered(path, 1)[0, 0] == 255 and rendered(path, 2)[0, 0] == 0


def test_the_viewport_scales_to_fit_keeping_the_aspect_ratio(tmp_path: Path) -> None:
    path = image_file(tmp_path / "v.dcm", np.zeros((32, 64), dtype=np.uint16))
    assert rendered(path, viewport=Viewport(32, 32)).shape == (16, 32)
    assert rendered(path, viewport=Viewport(None, 64)).shape == (64, 128)
    assert rendered(path, viewport=parse_viewport("640,20")).shape == (20, 40)


def test_the_source_region_is_cut_then_scaled_and_may_flip(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8), dtype=np.uint16)
    pixels[:, 4:] = 4095  # left half black, right half white
    path = image_file(tmp_path / "r.dcm", pixels, WindowCenter="2048", WindowWidth="4096")
    right = rendered(path, viewport=parse_viewport("16,16,4,0,4,8"))
    assert right.shape == (16, 8) and (right == 255).all()
    flipped = rendered(path, viewport=parse_viewport("8,8,0,0,-8,8"))
    assert flipped[0, 0] == 255 and flipped[0, 7] == 0
    with pytest.raises(InvalidRenderParameter, match="outside the image"):
        render_instance(path, 1, RenderOptions(viewport=parse_viewport("8,8,20,20,4,4")))


def test_a_wado_uri_region_is_cut_before_the_viewport(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8), dtype=np.uint16)
    pixels[4:, 4:] = 4095  # the bottom right quarter white
    path = image_file(tmp_path / "q.dcm", pixels, WindowCenter="2048", WindowWidth="4096")
    quarter = parse_region("0.5,0.5,1,1")
    shown = rendered(path, region=quarter, viewport=Viewport(16, 16))
    assert shown.shape == (16, 16) and (shown == 255).all()
    for bad in ("0.5,0.5,0.2,1", "0,0,1", "0,0,1,1.5"):
        with pytest.raises(InvalidRenderParameter, match="region"):
            parse_region(bad)


def test_jpeg_is_the_default_and_quality_is_honoured(tmp_path: Path) -> None:
    noise = np.random.default_rng(7).integers(0, 4096, (64, 64), dtype=np.uint16)
    path = image_file(tmp_path / "q.dcm", noise)
    low = render_instance(path, 1, RenderOptions(quality=5))
    high = render_instance(path, 1, RenderOptions(quality=95))
    assert low.media_type == high.media_type == JPEG
    assert decoded(low.data, JPEG).shape == (64, 64)
    assert len(low.data) < len(high.data) / 2


def test_jpeg_and_gif_values_are_close_to_png(tmp_path: Path) -> None:
    path = image_file(tmp_path / "g.dcm", np.tile(ramp(64), (16, 1)))
    exact = rendered(path)
    for media_type in (JPEG, GIF):
        image = decoded(render_instance(path, 1, RenderOptions(media_type)).data, media_type)
        grey = image if image.ndim == 2 else image[..., 0]
        assert np.abs(grey.astype(int) - exact).mean() < 3


def test_thumbnail_fits_a_small_box(tmp_path: Path) -> None:
    path = image_file(tmp_path / "t.dcm", np.zeros((512, 256), dtype=np.uint16))
    thumb = render_instance(path, 1, thumbnail_options())
    assert decoded(thumb.data, JPEG).shape == (128, 64)
    asked = thumbnail_options(RenderOptions(viewport=Viewport(32, 32)))
    assert decoded(render_instance(path, 1, asked).data, JPEG).shape == (32, 16)


# --- What cannot be rendered ------------------------------------------------------------


def test_an_instance_without_pixels_is_not_renderable(tmp_path: Path) -> None:
    ds = make_dataset()
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored"):
        delattr(ds, keyword)
    path = tmp_path / "sr.dcm"
    write_part10(ds, path)
    with pytest.raises(NotRenderable, match="no image pixel data") as caught:
        render_instance(path)
    assert caught.value.status == 406


def test_a_damaged_file_fails_with_a_reason(tmp_path: Path) -> None:
    path = image_file(tmp_path / "d.dcm", np.zeros((64, 64), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-2000])  # pixel data cut short
    with pytest.raises(DecodeFailed) as caught:
        render_instance(path)
    assert caught.value.status == 500 and caught.value.reason
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(DecodeFailed, match="cannot be read"):
        render_instance(tmp_path / "junk.dcm")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"quality": "0"}, "quality"),
        ({"quality": "high"}, "quality"),
        ({"window": "40"}, "center,width"),
        ({"window": "a,400"}, "window center"),
        ({"window": "40,400,cubic"}, "window function"),
        ({"window": "40,0"}, "too small"),
        ({"viewport": "0,10"}, "vw"),
        ({"viewport": "10,10,1"}, "vw,vh"),
        ({"viewport": ","}, "needs vw or vh"),
        ({"viewport": "10,10,-1,0,5,5"}, "sx, sy"),
        ({"viewport": "10,10,0,0,x,5"}, "sw"),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(query: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidRenderParameter, match=reason) as caught:
        parse_options(JPEG, query)
    assert caught.value.status == 400


def test_parameters_parse(tmp_path: Path) -> None:
    options = parse_options(PNG, {"window": "40,400,sigmoid", "viewport": "100,,0,0,50,50",
                                  "quality": "70", "annotation": "patient"})  # fmt: skip
    assert options == RenderOptions(PNG, Window(40, 400, "SIGMOID"),
                                    Viewport(100, None, 0, 0, 50, 50), 70)  # fmt: skip


# --- Stored compressed transfer syntaxes ---------------------------------------------------


def dcmtk_compress(tool: str, options: tuple[str, ...], source: Path, target: Path) -> Path:
    subprocess.run([require_tool(tool), *options, str(source), str(target)], check=True,
                   capture_output=True)  # fmt: skip
    return target


def pydicom_compress(source: Path, target: Path, syntax: str) -> Path:
    from pydicom import dcmread

    ds = dcmread(source)
    ds.compress(syntax)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize(
    ("tool", "options", "syntax"),
    [
        ("dcmcjpeg", (), JPEGLosslessSV1),
        ("dcmcjpeg", ("+el", "+sv", "6"), "1.2.840.10008.1.2.4.57"),
        ("dcmcjpls", (), JPEGLSLossless),
        ("dcmcrle", (), RLELossless),
        ("pydicom", (), JPEG2000Lossless),
    ],
)
def test_lossless_compressed_files_render_as_the_uncompressed(
    tmp_path: Path, tool: str, options: tuple[str, ...], syntax: str
) -> None:
    # 64 x 64: the JPEG 2000 encoder's default resolution levels need that much
    frames = np.stack([np.tile(ramp(64), (16, 1)), np.full((64, 64), 3000, dtype=np.uint16)])
    source = image_file(tmp_path / "plain.dcm", frames, WindowCenter="2048", WindowWidth="4096")
    target = tmp_path / "packed.dcm"
    if tool == "pydicom":
        pydicom_compress(source, target, syntax)
    else:
        dcmtk_compress(tool, options, source, target)
    assert read_syntax(target) == syntax
    for frame in (1, 2):
        assert (rendered(target, frame) == rendered(source, frame)).all()


@pytest.mark.parametrize(
    ("bits", "options", "syntax"),
    [(8, ("+eb",), JPEGBaseline8Bit), (12, ("+ee",), JPEGExtended12Bit)],
)
def test_lossy_jpeg_files_render_close_to_the_original(
    tmp_path: Path, bits: int, options: tuple[str, ...], syntax: str
) -> None:
    pixels = np.tile(ramp(32, 2**bits - 1), (8, 1)).astype(np.uint8 if bits == 8 else np.uint16)
    source = image_file(tmp_path / "plain.dcm", pixels)
    target = dcmtk_compress("dcmcjpeg", options, source, tmp_path / "lossy.dcm")
    assert read_syntax(target) == syntax
    assert np.abs(rendered(target) - rendered(source)).mean() < 4


def test_near_lossless_jpeg_ls_and_lossy_jpeg_2000_render_close_to_the_original(
    tmp_path: Path,
) -> None:
    pixels = np.tile(ramp(64), (16, 1))
    source = image_file(tmp_path / "plain.dcm", pixels, WindowCenter="2048", WindowWidth="4096")
    near = dcmtk_compress("dcmcjpls", ("+en",), source, tmp_path / "near.dcm")
    assert read_syntax(near) == JPEGLSNearLossless
    from pydicom import dcmread

    lossy = dcmread(source)
    lossy.compress(JPEG2000, j2k_cr=[20])  # a compression ratio of 20
    lossy.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    for target in (near, tmp_path / "j2k.dcm"):
        assert np.abs(rendered(target) - rendered(source)).max() <= 2


def test_rgb_jpeg_baseline_in_ybr_full_422_renders_as_rgb(tmp_path: Path) -> None:
    pixels = np.repeat(np.repeat(colour_pixels(), 8, axis=0), 8, axis=1)  # 32 x 32 blocks
    source = image_file(tmp_path / "rgb.dcm", pixels)
    target = dcmtk_compress("dcmcjpeg", ("+eb",), source, tmp_path / "rgb-jpeg.dcm")
    assert read_syntax(target) == JPEGBaseline8Bit
    assert np.abs(rendered(target) - pixels.astype(int)).mean() < 12  # chroma halved


def read_syntax(path: Path) -> str:
    from pydicom import dcmread

    meta: FileMetaDataset = dcmread(path, stop_before_pixels=True).file_meta
    return str(meta.TransferSyntaxUID)


def test_one_frame_is_read_not_the_whole_pixel_data(tmp_path: Path) -> None:
    import tracemalloc

    frames = np.random.default_rng(3).integers(0, 4096, (60, 256, 256), dtype=np.uint16)
    path = image_file(tmp_path / "big.dcm", frames)
    packed = dcmtk_compress("dcmcjpeg", (), path, tmp_path / "big-jpeg.dcm")
    for source in (path, packed):
        tracemalloc.start()
        try:
            render_instance(source, 30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < frames.nbytes / 4  # 7.9 MB of pixel data; a frame is 128 KB
