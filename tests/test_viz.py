"""ugcn_fast.viz: PNG and GIF files decoded back by independent readers written here (zlib + struct, and a
GIF LZW decoder), line charts and skeleton renders checked pixel by pixel where the geometry is known."""
import struct
import zlib

import numpy as np
import pytest

from ugcn_fast import viz
from ugcn_fast.graph import H36M_PARENTS

# ------------------------------------------------------------------------------------------------ decoders


def read_png(path):
    """(image (H, W, 3) uint8, list of chunk types); checks the signature and every chunk's CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind}"
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert pos == len(data) and chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()  # filter type "none" on every row
    return raw[:, 1:].reshape(height, width, 3).copy(), chunks


def lzw_decode(data, min_code_size):
    """GIF LZW, written from the specification independently of the encoder."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    bits = int.from_bytes(data, "little")
    total_bits, pos = len(data) * 8, 0
    width = min_code_size + 1
    table = None
    prev = None
    out = bytearray()
    while pos + width <= total_bits:
        code = (bits >> pos) & ((1 << width) - 1)
        pos += width
        if code == clear:
            table = [bytes([i]) for i in range(clear)] + [b"", b""]
            width, prev = min_code_size + 1, None
            continue
        if code == end:
            return bytes(out)
        assert table is not None, "the stream must start with a clear code"
        if prev is None:
            entry = table[code]
        else:
            entry = table[code] if code < len(table) else table[prev] + table[prev][:1]
            assert code <= len(table)
            if len(table) < 4096:
                table.append(table[prev] + entry[:1])
        out += entry
        prev = code
        if len(table) == 1 << width and width < 12:
            width += 1
    raise AssertionError("no end-of-information code")


def read_gif(path):
    """(frames [(H, W, 3) uint8], delays in 1/100 s, loop count); checks the structure byte by byte."""
    data = open(path, "rb").read()
    assert data[:6] == b"GIF89a"
    width, height, flags, _, _ = struct.unpack("<HHBBB", data[6:13])
    assert flags & 0x80, "a global colour table"
    palette_size = 2 << (flags & 7)
    palette = np.frombuffer(data[13:13 + 3 * palette_size], np.uint8).reshape(-1, 3)
    pos, frames, delays, loop = 13 + 3 * palette_size, [], [], None

    def sub_blocks(pos):
        out = b""
        while data[pos]:
            out += data[pos + 1:pos + 1 + data[pos]]
            pos += 1 + data[pos]
        return out, pos + 1

    while True:
        marker = data[pos]
        if marker == 0x3B:
            assert pos == len(data) - 1, "nothing after the trailer"
            break
        if marker == 0x21:
            label = data[pos + 1]
            body, pos = sub_blocks(pos + 2)
            if label == 0xFF and body.startswith(b"NETSCAPE2.0"):
                (loop,) = struct.unpack("<H", body[12:14])
            elif label == 0xF9:
                delays.append(struct.unpack("<H", body[1:3])[0])
        elif marker == 0x2C:
            x, y, w, h, local = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
            assert (x, y, w, h, local) == (0, 0, width, height, 0)
            min_code_size = data[pos + 10]
            body, pos = sub_blocks(pos + 11)
            indices = np.frombuffer(lzw_decode(body, min_code_size), np.uint8)
            assert indices.size == width * height
            frames.append(palette[indices].reshape(height, width, 3))
        else:
            raise AssertionError(f"unexpected block 0x{marker:02x} at byte {pos}")
    return frames, delays, loop


# ------------------------------------------------------------------------------------------------ PNG


def test_png_round_trip_of_a_known_image(tmp_path):
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = np.arange(7) * 30            # red ramp along x
    image[..., 1] = np.arange(5)[:, None] * 60   # green ramp along y
    image[2, 3] = (1, 2, 3)
    path = tmp_path / "known.png"
    viz.write_png(path, image)
    decoded, chunks = read_png(path)
    assert chunks == [b"IHDR", b"IDAT", b"IEND"]
    assert decoded.shape == (5, 7, 3)
    np.testing.assert_array_equal(decoded, image)
    assert tuple(decoded[2, 3]) == (1, 2, 3) and tuple(decoded[4, 6]) == (180, 240, 0)


def test_png_refuses_bad_images(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        viz.write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        viz.write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        viz.write_png(tmp_path / "no_such_folder" / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


# ------------------------------------------------------------------------------------------------ GIF


def test_gif_round_trip_few_colours(tmp_path):
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    frames = [palette[rng.integers(0, 40, (33, 21))] for _ in range(4)]
    path = tmp_path / "a.gif"
    viz.write_gif(path, frames, fps=20)
    decoded, delays, loop = read_gif(path)
    assert len(decoded) == 4 and delays == [5, 5, 5, 5] and loop == 0
    for got, expected in zip(decoded, frames):
        np.testing.assert_array_equal(got, expected)


def test_gif_lzw_table_resets_and_code_widths(tmp_path):
    # 200 random colours over 256 x 256 pixels fill the 4096-entry table many times over
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (200, 3), dtype=np.uint8)
    frame = palette[rng.integers(0, 200, (256, 256))]
    path = tmp_path / "big.gif"
    viz.write_gif(path, [frame], fps=100)
    decoded, delays, _ = read_gif(path)
    np.testing.assert_array_equal(decoded[0], frame)
    assert delays == [2]  # GIF's fastest reliable delay


def test_lzw_of_a_constant_run_is_compact():
    encoded = viz.lzw_encode(bytes(10000), 8)
    assert lzw_decode(encoded, 8) == bytes(10000)
    assert len(encoded) < 300  # a run of n equal pixels needs about sqrt(2 n) codes


def test_gif_with_many_colours_is_quantised_to_the_web_cube(tmp_path):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)  # 384 colours: more than a palette holds
    path = tmp_path / "many.gif"
    viz.write_gif(path, [frame, frame[::-1].copy()])
    decoded, delays, _ = read_gif(path)
    assert len(decoded) == 2 and delays == [4, 4]
    np.testing.assert_array_equal(decoded[0], (frame.astype(int) + 25) // 51 * 51)


def test_gif_refuses_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        viz.write_gif(tmp_path / "a.gif", [])
    with pytest.raises(ValueError, match="same shape"):
        viz.write_gif(tmp_path / "a.gif", [np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="fps"):
        viz.write_gif(tmp_path / "a.gif", [np.zeros((4, 4, 3), np.uint8)], fps=0)


# ------------------------------------------------------------------------------------------------ charts


def colour_pixels(image, colour):
    return np.argwhere((image == np.array(colour, np.uint8)).all(axis=-1))


def without_swatch(pixels):
    return pixels[pixels[:, 1] < pixels[:, 1].max() - 13]


def test_plot_curves_draws_each_series_where_its_values_are(tmp_path):
    path = tmp_path / "curves.png"
    viz.plot_curves(path, {"rising": [0, 1, 2, 3, 4], "flat": [2, 2, 2, 2, 2]}, title="loss", xlabel="epoch")
    image, _ = read_png(path)
    assert image.shape == (420, 720, 3)
    rising, flat = colour_pixels(image, viz.COLORS[0]), colour_pixels(image, viz.COLORS[1])
    assert len(rising) > 100 and len(flat) > 100
    # each legend swatch (14 x 6 pixels) is the rightmost thing of its colour; the curve is left of it
    plot_rising, plot_flat = without_swatch(rising), without_swatch(flat)
    assert len(rising) - len(plot_rising) == len(flat) - len(plot_flat) == 14 * 6
    # "flat" is one horizontal line (2 px thick plus markers), at the middle height of "rising"
    assert np.ptp(plot_flat[:, 0]) <= 5
    rows_by_column = {c: plot_rising[plot_rising[:, 1] == c, 0].mean() for c in np.unique(plot_rising[:, 1])}
    columns = sorted(rows_by_column)
    assert rows_by_column[columns[0]] > rows_by_column[columns[-1]] + 200  # rises left to right (rows go down)
    middle = (rows_by_column[columns[0]] + rows_by_column[columns[-1]]) / 2
    assert abs(plot_flat[:, 0].mean() - middle) < 3
    assert (image[5:40] < 100).all(axis=-1).any()  # the title's dark text


def test_plot_curves_x_values_gaps_and_log_axis(tmp_path):
    path = tmp_path / "x.png"
    viz.plot_curves(path, {"val": [5.0, None, float("nan"), 1.0]}, x=[10, 20, 30, 40], log_y=True)
    image, _ = read_png(path)
    line = colour_pixels(image, viz.COLORS[0])
    # two isolated markers (5 x 5 pixels each), no line between them (the gap is kept), and the legend swatch
    assert len(line) == 2 * 25 + 14 * 6
    assert len(without_swatch(line)) == 2 * 25
    with pytest.raises(ValueError, match="only 2"):
        viz.plot_curves(path, {"a": [1, 2, 3]}, x=[1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_curves(path, {})
    with pytest.raises(ValueError, match="no finite"):
        viz.plot_curves(path, {"a": [None, float("inf")]})


def test_nice_ticks():
    assert viz.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert viz.nice_ticks(3, 97) == [20, 40, 60, 80]
    assert viz.format_tick(0.0001) == "1E-4" and viz.format_tick(250.0) == "250"


# ------------------------------------------------------------------------------------------------ skeletons


def test_render_skeleton_frontal_view_geometry():
    # two joints: root at the origin and a child 1 m straight up (camera y points down)
    poses = np.array([[[0, 0, 3], [0, -1, 3]]] * 3, np.float64)
    frames = viz.render_skeleton(poses, parents=[-1, 0], size=64, azimuth=0, elevation=0, left=[1], right=[])
    assert len(frames) == 3 and all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[0], frames[2])  # a still sequence renders the same every frame
    blue = colour_pixels(frames[0], viz.COLORS[0])
    # the bone is vertical, centred, and spans 0.9 of the image (45 % each side of the centre)
    assert set(np.unique(blue[:, 1])) <= {31, 32, 33}
    assert blue[:, 0].min() <= 32 - 12 and blue[:, 0].max() >= 32 + 12
    black = colour_pixels(frames[0], viz.BLACK)  # joint markers: 5 x 5 squares centred on the joints
    assert black[:, 0].min() == round(32 - 0.45 * 64) - 2 and black[:, 0].max() == round(32 + 0.45 * 64) + 2
    assert len(black) == 2 * 25


def test_render_skeleton_keeps_axis_limits_fixed_over_the_sequence():
    rest = np.zeros((17, 3))
    for j, p in enumerate(H36M_PARENTS):
        if p >= 0:
            rest[j] = rest[p] + np.array([0.1 * (j % 3 - 1), -0.15, 0.0])
    moving = np.stack([rest + np.array([dx, 0, 0]) for dx in (0.0, 0.5, 1.0)])
    frames = viz.render_skeleton(moving, H36M_PARENTS, size=128, azimuth=0, elevation=0)

    def centroid(frame):
        return np.argwhere((frame != 250).any(axis=-1))[:, 1].mean()

    shifts = np.diff([centroid(f) for f in frames])
    # the skeleton moves right in the image by equal steps (a per-frame fit would keep it in place)
    assert shifts[0] > 10 and abs(shifts[0] - shifts[1]) < 1.5


def test_render_skeleton_skips_missing_joints_and_checks_input():
    poses = np.array([[[0, 0, 3], [0, -1, 3], [np.nan, 0, 0]]])
    frames = viz.render_skeleton(poses, parents=[-1, 0, 1], size=32, labels=["7"])
    assert frames[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="parents"):
        viz.render_skeleton(poses, parents=[-1, 0])
    with pytest.raises(ValueError, match=r"\(T, J, 3\)"):
        viz.render_skeleton(poses[..., :2], parents=[-1, 0, 1])
    with pytest.raises(ValueError, match="no finite"):
        viz.render_skeleton(np.full((2, 3, 3), np.nan), parents=[-1, 0, 1])


def test_tile_frames_side_by_side():
    a, b = np.zeros((4, 5, 3), np.uint8), np.full((4, 5, 3), 7, np.uint8)
    tiled = viz.tile_frames([a, b], gap=2)
    assert tiled.shape == (4, 12, 3)
    assert (tiled[:, :5] == 0).all() and (tiled[:, 5:7] == 255).all() and (tiled[:, 7:] == 7).all()


def test_gif_frame_rate_must_fit_the_format():
    """A GIF frame's delay is 16-bit centiseconds: rates below 100 / 65535 frames/s cannot be written."""
    frame = np.zeros((4, 4, 3), np.uint8)
    assert viz.encode_gif([frame], fps=viz.GIF_MIN_FPS * 1.001)[:6] == b"GIF89a"
    for fps in (viz.GIF_MIN_FPS / 2, 1e-300, 5e-324):
        with pytest.raises(ValueError, match="fps must be at least 0.00153 frames/s"):
            viz.encode_gif([frame], fps=fps)
