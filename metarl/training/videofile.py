"""Video files of metarl/training/video.py: clips (mp4 through imageio-ffmpeg, else GIF), GIF previews, the
before | after montage, and TensorBoard's video summary."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def add_gif_summary(tb: Any, tag: str, gif: Path, step: int) -> None:
    """The summary `SummaryWriter.add_video` writes (an image summary holding an animated GIF),
    written from our own GIF: torch's add_video encodes through moviepy.editor, gone in moviepy 2."""
    import importlib

    from PIL import Image

    Summary = importlib.import_module("tensorboard.compat.proto.summary_pb2").Summary  # ships no types

    with Image.open(gif) as im:
        w, h = im.size
    img = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif.read_bytes())
    tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(frame)
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, im.width, 14], fill=(0, 0, 0))
    d.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def montage(left: list[np.ndarray], right: list[np.ndarray], texts: tuple[str, str]) -> list[np.ndarray]:
    """Side by side, the shorter clip held on its last frame."""
    n = max(len(left), len(right))
    pad = [c + [c[-1]] * (n - len(c)) for c in (left, right)]
    return [np.concatenate([_label(a, texts[0]), np.full((a.shape[0], 4, 3), 255, np.uint8), _label(b, texts[1])],
                           axis=1) for a, b in zip(*pad)]


PREVIEW_FRAMES, PREVIEW_HEIGHT = 120, 160  # GIF previews (report, TensorBoard): at most this many frames, px high


def write(path: Path, frames: list[Any], fps: int, preview: bool = False) -> None:
    """mp4 (ffmpeg), GIF (one palette, no dithering: ~4x smaller than per-frame palettes; a
    `preview` keeps <= PREVIEW_FRAMES frames, <= PREVIEW_HEIGHT px, same duration) or PNG (the
    last frame), through a temporary name so a crash leaves no half-written file."""
    import imageio.v2 as imageio
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if path.suffix == ".png":
        imageio.imwrite(tmp, frames[-1])
    elif path.suffix == ".mp4":
        imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
    else:
        step = -(-len(frames) // PREVIEW_FRAMES) if preview else 1
        keep = frames[::step] + ([frames[-1]] if (len(frames) - 1) % step else [])
        h, w = frames[0].shape[:2]
        size = (round(w * PREVIEW_HEIGHT / h), PREVIEW_HEIGHT) if preview and h > PREVIEW_HEIGHT else (w, h)
        ims = [Image.fromarray(f).resize(size, Image.Resampling.BILINEAR) for f in keep]
        pal = ims[len(ims) // 2].quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        gif = [im.quantize(palette=pal, dither=Image.Dither.NONE) for im in ims]
        gif[0].save(tmp, format="GIF", save_all=True, append_images=gif[1:], duration=round(1000 * step / fps), loop=0)
    os.replace(tmp, path)
