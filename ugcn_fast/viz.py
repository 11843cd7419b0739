"""Pictures without a plotting library: PNG and GIF writers, line charts and 3D skeleton renders in numpy.

Everything here draws into uint8 (H, W, 3) arrays and encodes them with zlib + struct, so training curves and
lifted poses can be looked at on a machine that has only torch and numpy. Text uses a built-in 3x5 bitmap font
(upper-case letters, digits and common punctuation; lower case is drawn as upper case).
"""
from __future__ import annotations

import math
import os
import struct
import zlib
from typing import Mapping, Sequence

import numpy as np

from ._checks import is_int, is_real
from ._files import write_atomically
from .graph import H36M_LEFT, H36M_RIGHT

# A qualitative palette (matplotlib's tab10): series and bones get distinct, print-friendly colours.
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
WHITE, BLACK, GREY, LIGHT_GREY = (255, 255, 255), (0, 0, 0), (110, 110, 110), (225, 225, 225)

# ---------------------------------------------------------------------------------------------------- files


def _check_image(name: str, image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} must have shape (H, W, 3) with H, W >= 1, got {image.shape}")
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG of a uint8 (H, W, 3) image (no row filters; zlib does the work)."""
    image = _check_image("image", image)
    height, width = image.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 (H, W, 3) RGB image as a PNG file."""
    write_atomically(path, lambda f: f.write(encode_png(image)))


# ---------------------------------------------------------------------------------------------------- GIF


def _palette(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(256 x 3 palette, per-frame index images). Exact when all frames together use at most 256 colours (as the
    renders here do); otherwise every channel is rounded to 6 levels (the 216-colour web cube)."""
    packed = [(f[..., 0].astype(np.uint32) << 16) | (f[..., 1].astype(np.uint32) << 8) | f[..., 2] for f in frames]
    colours = np.unique(np.concatenate([p.ravel() for p in packed]))
    if len(colours) <= 256:
        palette = np.zeros((256, 3), np.uint8)
        palette[:len(colours)] = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
        return palette, [np.searchsorted(colours, p).astype(np.uint8) for p in packed]
    levels = np.arange(6) * 51
    palette = np.zeros((256, 3), np.uint8)
    palette[:216] = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(216, 3)
    indices = []
    for f in frames:
        q = (f.astype(np.uint16) + 25) // 51  # nearest of 0, 51, ..., 255 per channel
        indices.append((q[..., 0] * 36 + q[..., 1] * 6 + q[..., 2]).astype(np.uint8))
    return palette, indices


def lzw_encode(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF's variable-length LZW of a stream of palette indices (codes packed least significant bit first).

    The code width grows when the code just assigned needs one more bit (the decoder assigns that code one step
    later and widens at the same code); when the 12-bit table is full a clear code restarts it.
    """
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out = bytearray()
    bits = nbits = 0

    def emit(code: int, width: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 255)
            bits >>= 8
            nbits -= 8

    width, next_code, table = min_code_size + 1, end + 1, {}
    emit(clear, width)
    if not indices:
        emit(end, width)
    else:
        prefix = indices[0]
        for k in indices[1:]:
            key = (prefix << 8) | k
            code = table.get(key)
            if code is not None:
                prefix = code
                continue
            emit(prefix, width)
            table[key] = next_code
            if next_code == 1 << width and width < 12:
                width += 1
            next_code += 1
            if next_code == 4096:
                emit(clear, width)
                width, next_code, table = min_code_size + 1, end + 1, {}
            prefix = k
        emit(prefix, width)
        emit(end, width)
    if nbits:
        out.append(bits & 255)
    return bytes(out)


def _sub_blocks(data: bytes) -> bytes:
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\x00"


GIF_MIN_FPS = 100 / 65535  # a GIF frame's delay is 16-bit, in centiseconds: at most 655.35 s


def check_gif_fps(fps, name: str = "fps") -> float:
    """fps as a float, or a ValueError naming `name` unless a GIF can show frames at that rate."""
    if not is_real(fps) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{name} must be a positive number, got {fps!r}")
    if 100 / fps >= 65535.5:
        raise ValueError(f"{name} must be at least {GIF_MIN_FPS:.5f} frames/s (a GIF frame shows for at most "
                         f"655.35 s), got {fps!r}")
    return float(fps)


def encode_gif(frames: Sequence[np.ndarray], fps: float = 25) -> bytes:
    """The bytes of a looping GIF89a animation of uint8 (H, W, 3) frames of one size."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError("frames must be a non-empty list of uint8 (H, W, 3) images")
    frames = [_check_image(f"frames[{i}]", f) for i, f in enumerate(frames)]
    if any(f.shape != frames[0].shape for f in frames):
        raise ValueError(f"all frames must have the same shape, got {sorted({f.shape for f in frames})}")
    fps = check_gif_fps(fps)
    height, width = frames[0].shape[:2]
    if width > 65535 or height > 65535:
        raise ValueError(f"GIF frames are at most 65535 pixels a side, got {width} x {height}")
    # GIF delays are in centiseconds; viewers treat delays below 2 as "slow", so 2 (50 fps) is the fastest
    delay = max(2, round(100 / fps))
    palette, indices = _palette(frames)
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", width, height, 0xF7, 0, 0)  # global colour table of 256 entries
    out += palette.tobytes()
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00"  # loop forever
    for index in indices:
        out += b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"  # graphic control: keep frame
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        out += b"\x08" + _sub_blocks(lzw_encode(index.tobytes(), 8))
    out += b"\x3b"
    return bytes(out)


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 25) -> None:
    """Writes uint8 (H, W, 3) frames as a looping GIF89a animation at `fps` frames per second (GIF stores the
    delay in hundredths of a second, at least 2)."""
    write_atomically(path, lambda f: f.write(encode_gif(frames, fps)))


# ---------------------------------------------------------------------------------------------------- drawing

_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111",
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010", "P": "110101110100100",
    "Q": "010101101110011", "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111",
    " ": "000000000000000", ".": "000000000000010", ",": "000000000010100", "-": "000000111000000",
    "+": "000010111010000", "_": "000000000000111", ":": "000010000010000", "/": "001001010100100",
    "(": "010100100100010", ")": "010001001001010", "%": "101001010100101", "=": "000111000111000",
    "[": "110100100100110", "]": "011001001001011", "'": "010010000000000", "*": "000101010101000",
    "|": "010010010010010", "<": "001010100010001", ">": "100010001010100", "#": "101111101111101",
    "?": "111001010000010", "!": "010010010000010", "@": "010101111100011",
}
GLYPH_W, GLYPH_H = 3, 5


def text_size(text: str, scale: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of `text` drawn by draw_text at `scale`."""
    return max(0, len(text) * (GLYPH_W + 1) - 1) * scale, GLYPH_H * scale


def draw_text(image: np.ndarray, text: str, x: int, y: int, color=BLACK, scale: int = 2) -> None:
    """Draws `text` in place with its top-left corner at pixel (x, y); pixels outside the image are dropped.
    Characters without a glyph are drawn as '?'."""
    for i, char in enumerate(str(text).upper()):
        bitmap = np.array([int(b) for b in _GLYPHS.get(char, _GLYPHS["?"])], bool).reshape(GLYPH_H, GLYPH_W)
        ys, xs = np.nonzero(np.kron(bitmap, np.ones((scale, scale), bool)))
        _put(image, xs + x + i * (GLYPH_W + 1) * scale, ys + y, color)


def _put(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, color) -> None:
    inside = (xs >= 0) & (xs < image.shape[1]) & (ys >= 0) & (ys < image.shape[0])
    image[ys[inside], xs[inside]] = color


def draw_line(image: np.ndarray, x0: float, y0: float, x1: float, y1: float, color, width: int = 1) -> None:
    """Draws a segment in place, `width` pixels thick (a square brush stepped along the segment)."""
    steps = int(math.ceil(max(abs(x1 - x0), abs(y1 - y0)))) + 1
    xs = np.rint(np.linspace(x0, x1, steps)).astype(np.int64)
    ys = np.rint(np.linspace(y0, y1, steps)).astype(np.int64)
    lo = -((width - 1) // 2)
    for dx in range(lo, lo + width):
        for dy in range(lo, lo + width):
            _put(image, xs + dx, ys + dy, color)


def fill_rect(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, color) -> None:
    """Fills the pixels x0 <= x < x1, y0 <= y < y1 (clipped to the image)."""
    h, w = image.shape[:2]
    image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = color


# ---------------------------------------------------------------------------------------------------- charts


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def format_tick(value: float) -> str:
    """Short tick label: '0.25', '1200', '1E-3'."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}E{int(exponent)}"
    return f"{value:.6g}"


def _as_floats(name: str, values) -> np.ndarray:
    try:
        array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r:.80}") from err
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def plot_curves(path: str | os.PathLike, series: Mapping[str, Sequence[float]], x: Sequence[float] | None = None,
                title: str = "", xlabel: str = "epoch", *, ylabel: str = "", log_y: bool = False,
                width: int = 720, height: int = 420) -> None:
    """Writes a PNG line chart: one coloured line per entry of `series`, axes with tick labels, a legend.

    `x` gives the abscissa of every point (shared; a series shorter than `x` is drawn over its first values);
    without it a series' points sit at 1, 2, ..., n (epoch numbers). None, NaN and Inf values leave gaps.
    `log_y` plots a logarithmic y axis (non-positive values become gaps) for losses that span decades.
    """
    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must be a non-empty mapping {name: values}")
    curves = {str(name): _as_floats(f"series[{name!r}]", values) for name, values in series.items()}
    if x is not None:
        xs = _as_floats("x", x)
        for name, ys in curves.items():
            if len(ys) > len(xs):
                raise ValueError(f"series {name!r} has {len(ys)} values but x has only {len(xs)}")
    points = {}
    for name, ys in curves.items():
        px = xs[:len(ys)] if x is not None else np.arange(1, len(ys) + 1, dtype=np.float64)
        py = np.log10(np.where(ys > 0, ys, np.nan)) if log_y else ys
        points[name] = (px, py)
    finite_x = np.concatenate([px[np.isfinite(px) & np.isfinite(py)] for px, py in points.values()])
    finite_y = np.concatenate([py[np.isfinite(px) & np.isfinite(py)] for px, py in points.values()])
    if finite_y.size == 0:
        raise ValueError("series hold no finite value to plot" + (" (log_y needs positive values)" if log_y else ""))
    x_lo, x_hi = _padded_range(finite_x.min(), finite_x.max(), pad=0.0)
    y_lo, y_hi = _padded_range(finite_y.min(), finite_y.max(), pad=0.05)

    image = np.full((height, width, 3), 255, np.uint8)
    legend_w = max(text_size(name)[0] for name in points) + 40
    left, right, top, bottom = 80, width - legend_w - 20, 40 if title else 20, height - 50
    if right - left < 60 or bottom - top < 60:
        raise ValueError(f"a {width} x {height} image leaves no room for the plot; make it larger or the names shorter")

    def to_px(vx, vy):
        return (left + (vx - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (vy - y_lo) / (y_hi - y_lo) * (bottom - top))

    y_ticks = ([float(k) for k in range(math.ceil(y_lo), math.floor(y_hi) + 1)] if log_y else [])
    if len(y_ticks) < 2:
        y_ticks = nice_ticks(y_lo, y_hi)
    for value in y_ticks:
        _, py = to_px(x_lo, value)
        draw_line(image, left, py, right, py, LIGHT_GREY)
        label = format_tick(10.0 ** value if log_y else value)
        tw, th = text_size(label)
        draw_text(image, label, left - 8 - tw, int(round(py)) - th // 2, GREY)
    for value in nice_ticks(x_lo, x_hi, count=min(8, max(2, int(round(x_hi - x_lo))))):
        px, _ = to_px(value, y_lo)
        draw_line(image, px, bottom, px, bottom + 5, BLACK)
        label = format_tick(value)
        tw, _ = text_size(label)
        draw_text(image, label, int(round(px)) - tw // 2, bottom + 9, GREY)
    draw_line(image, left, top, left, bottom, BLACK)
    draw_line(image, left, bottom, right, bottom, BLACK)

    for k, (name, (px, py)) in enumerate(points.items()):
        color = COLORS[k % len(COLORS)]
        u, v = to_px(px, py)
        ok = np.isfinite(u) & np.isfinite(v)
        for i in range(len(u) - 1):
            if ok[i] and ok[i + 1]:
                draw_line(image, u[i], v[i], u[i + 1], v[i + 1], color, width=2)
        for i in np.nonzero(ok)[0]:  # markers: single points (and gaps' ends) stay visible
            fill_rect(image, int(round(u[i])) - 2, int(round(v[i])) - 2, int(round(u[i])) + 3, int(round(v[i])) + 3,
                      color)
        ly = top + 6 + k * 18
        fill_rect(image, right + 20, ly + 2, right + 34, ly + 8, color)
        draw_text(image, name, right + 40, ly, BLACK)

    if title:
        tw, _ = text_size(title)
        draw_text(image, title, (left + right) // 2 - tw // 2, 12, BLACK)
    if xlabel:
        tw, _ = text_size(xlabel)
        draw_text(image, xlabel, (left + right) // 2 - tw // 2, height - 20, BLACK)
    if ylabel or log_y:
        draw_text(image, (ylabel + " " if ylabel else "") + ("(LOG)" if log_y else ""), 4, 4, BLACK)
    write_png(path, image)


def _padded_range(lo: float, hi: float, pad: float) -> tuple[float, float]:
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        half = max(abs(lo) * 0.1, 0.5)
        return lo - half, hi + half
    span = hi - lo
    return lo - pad * span, hi + pad * span


# ---------------------------------------------------------------------------------------------------- skeletons


def view_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """(3, 3) rotation from the camera frame (x right, y down, z forward) to the view: turn `azimuth_deg` about
    the vertical (y) axis, then look down by `elevation_deg`."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    turn = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    tilt = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return tilt @ turn


def render_skeleton(poses: np.ndarray, parents: Sequence[int], size: int = 256, *, azimuth: float = 30.0,
                    elevation: float = 15.0, left: Sequence[int] = H36M_LEFT, right: Sequence[int] = H36M_RIGHT,
                    labels: Sequence[str] | None = None) -> list[np.ndarray]:
    """One uint8 (size, size, 3) frame per pose of a (T, J, 3) sequence (camera frame: x right, y down, z forward,
    as the lifted poses are), drawn in a fixed orthographic view turned `azimuth` degrees about the vertical and
    `elevation` degrees down. Axis limits are fixed over the whole sequence (so motion shows as motion);
    the view is centred on the sequence's extent. Bones of `left` joints are blue, of `right` joints red, others
    dark grey; nearer bones are drawn over farther ones. Non-finite joints are left out. `labels` (one string per
    frame, e.g. the frame number) are written in the top-left corner.
    """
    poses = np.asarray(poses, dtype=np.float64) if not isinstance(poses, np.ndarray) else poses.astype(np.float64)
    if poses.ndim != 3 or poses.shape[2] != 3 or poses.shape[0] < 1:
        raise ValueError(f"poses must have shape (T, J, 3) with T >= 1, got {poses.shape}")
    J = poses.shape[1]
    parents = [int(p) for p in parents]
    if len(parents) != J or any(p >= J or p < -1 for p in parents):
        raise ValueError(f"parents must give one parent index in [-1, {J}) per joint ({J}), got {parents}")
    if not is_int(size) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}")
    size = int(size)
    if labels is not None and len(labels) != len(poses):
        raise ValueError(f"labels must hold one string per frame ({len(poses)}), got {len(labels)}")
    view = poses @ view_rotation(azimuth, elevation).T
    finite = np.isfinite(view).all(axis=-1)
    if not finite.any():
        raise ValueError("poses hold no finite joint to draw")
    lo, hi = view[finite][:, :2].min(axis=0), view[finite][:, :2].max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6)
    pixels_per_unit = size * 0.45 / half
    u = size / 2 + (view[..., 0] - centre[0]) * pixels_per_unit
    v = size / 2 + (view[..., 1] - centre[1]) * pixels_per_unit
    side = {j: COLORS[0] for j in left if j < J} | {j: COLORS[3] for j in right if j < J}
    bone_width = max(1, size // 96)
    frames = []
    for t in range(len(poses)):
        image = np.full((size, size, 3), 250, np.uint8)
        bones = [(j, p) for j, p in enumerate(parents) if p >= 0 and finite[t, j] and finite[t, p]]
        for j, p in sorted(bones, key=lambda b: -(view[t, b[0], 2] + view[t, b[1], 2])):  # far to near
            draw_line(image, u[t, p], v[t, p], u[t, j], v[t, j], side.get(j, (60, 60, 60)), width=bone_width + 1)
        for j in np.nonzero(finite[t])[0]:
            r = bone_width + 1
            fill_rect(image, int(round(u[t, j])) - r, int(round(v[t, j])) - r, int(round(u[t, j])) + r + 1,
                      int(round(v[t, j])) + r + 1, BLACK)
        if labels is not None:
            draw_text(image, str(labels[t]), 4, 4, GREY, scale=max(1, size // 128))
        frames.append(image)
    return frames


def tile_frames(frames: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Frames of one shape side by side, `gap` white pixels apart: one image."""
    if not frames:
        raise ValueError("frames must not be empty")
    frames = [_check_image(f"frames[{i}]", f) for i, f in enumerate(frames)]
    h, w = frames[0].shape[:2]
    out = np.full((h, len(frames) * (w + gap) - gap, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape:
            raise ValueError(f"all frames must have the same shape, got {f.shape} and {frames[0].shape}")
        out[:, i * (w + gap):i * (w + gap) + w] = f
    return out
