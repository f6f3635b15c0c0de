"""What a student takes away from a run: the run itself as .npz bytes (the CLI's --out format) and
an animated GIF of x_t, x0_hat and the top training images, step by step."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from ..data.datasets import to_uint8
from ..run.sampler import Trajectory

GIF_TOP = 8  # training images per GIF frame


def run_bytes(traj: Trajectory) -> bytes:
    """The run as the bytes of an .npz file written by Trajectory.save (load with
    Trajectory.load, exactly like `python -m golddiff sample --out`)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.npz"
        traj.save(path)
        return path.read_bytes()


def _tile(img: np.ndarray, scale: int) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H*scale, W*scale, 3) uint8."""
    u8 = to_uint8(np.asarray(img, dtype=np.float32)).transpose(1, 2, 0)  # (H, W, C)
    if u8.shape[2] == 1:
        u8 = np.repeat(u8, 3, axis=2)
    return np.repeat(np.repeat(u8, scale, axis=0), scale, axis=1)


def frames(traj: Trajectory, sample: int, images, scale: int = 4, top: int = GIF_TOP) -> np.ndarray:
    """One frame per step: a band naming t, then x_t | x0_hat | the step's top training images
    (the exact posterior's heaviest), separated by white gaps.
    (S, h, w, 3) uint8."""
    out = []
    for step, rec in enumerate(traj.records):
        idx = rec.top_idx[sample][:top]
        tiles = [rec.x_t[sample], rec.x0_hat[sample]] + [np.asarray(images[int(i)]) for i in idx]
        parts = []
        for j, t in enumerate(tiles):
            parts.append(_tile(t, scale))
            gap = 3 * scale if j == 1 else scale  # a wider gap before the training images
            parts.append(np.full((parts[-1].shape[0], gap, 3), 255, np.uint8))
        row = np.concatenate(parts[:-1], axis=1)
        out.append(_label(row, f"t = {rec.t}   x_t | x0_hat | exact posterior's top"))
    return np.stack(out)


def _label(row: np.ndarray, text: str) -> np.ndarray:
    """The row under a white band that carries `text` in Pillow's built-in font."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (row.shape[1], 14), "white")
    ImageDraw.Draw(band).text((2, 1), text, fill="black")
    return np.concatenate([np.asarray(band), row], axis=0)


def run_gif(traj: Trajectory, sample: int, images, seconds: float = 0.8) -> bytes:
    """An animated GIF (loops) of `frames`, `seconds` per step."""
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(
        buf, frames(traj, sample, images), extension=".gif", duration=int(seconds * 1000), loop=0
    )
    return buf.getvalue()
