"""Pictures drawn for the negative set (benchmarks/negatives.py): the drawn negatives, each generator mapping a
seeded numpy Generator to one 64x64 RGB image, and the training side's scenes, a cut-out photo laid on a drawn
background."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from heritage_cnn.data.decode import IMAGE_SIZE
from heritage_cnn.data.resize import fit_square

CANVAS = 256  # pages, plans and lens caps are drawn larger, then resized like a photo


def uniform_noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))


def gaussian_noise(rng: np.random.Generator) -> Image.Image:
    mean, sigma = rng.uniform(40, 215, 3), rng.uniform(8, 60)
    pixels = rng.normal(mean, sigma, (IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def flat_colour(rng: np.random.Generator) -> Image.Image:
    """One colour with a little sensor noise: a photo of a wall-less nothing, a blank frame."""
    pixels = rng.uniform(0, 255, 3) + rng.normal(0, rng.uniform(0, 3), (IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def gradient(rng: np.random.Generator) -> Image.Image:
    """A linear blend of two colours at a random angle."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1) - 0.5
    t = (xs * np.cos(angle) + ys * np.sin(angle)) / np.sqrt(0.5) + 0.5
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = a + np.clip(t, 0, 1)[..., None] * (b - a)
    return Image.fromarray(np.rint(pixels).astype(np.uint8))


def document(rng: np.random.Generator) -> Image.Image:
    """A printed page: lines of random words in Pillow's default font on off-white paper, seen at a slant."""
    paper = tuple(int(v) for v in rng.integers(225, 256, 3))
    page = Image.new("RGB", (CANVAS, CANVAS), paper)
    draw, font = ImageDraw.Draw(page), ImageFont.load_default()
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    y, margin = int(rng.integers(4, 30)), int(rng.integers(6, 30))
    while y < CANVAS - 12:
        words = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, rng.integers(1, 10))) for _ in range(12)]
        draw.text((margin, y), " ".join(words), fill=ink, font=font)
        y += int(rng.integers(12, 20)) + (int(rng.integers(10, 30)) if rng.random() < 0.15 else 0)
    page = page.rotate(float(rng.uniform(-8, 8)), Image.Resampling.BICUBIC, fillcolor=paper)
    return fit_square(page, IMAGE_SIZE)


def plan(rng: np.random.Generator) -> Image.Image:
    """A line drawing of rooms: random rectangles, wall lines and door arcs, black on white or white on blue."""
    blueprint = rng.random() < 0.3
    ground, ink = ((20, 60, 140), (235, 240, 255)) if blueprint else ((250, 250, 246), (20, 20, 20))
    page = Image.new("RGB", (CANVAS, CANVAS), ground)
    draw = ImageDraw.Draw(page)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = (int(v) for v in rng.integers(8, CANVAS - 60, 2))
        x1, y1 = x0 + int(rng.integers(30, 140)), y0 + int(rng.integers(30, 140))
        draw.rectangle((x0, y0, min(x1, CANVAS - 8), min(y1, CANVAS - 8)), outline=ink, width=int(rng.integers(1, 4)))
        if rng.random() < 0.6:
            r = int(rng.integers(8, 20))
            draw.arc((x0 - r, y0 - r, x0 + r, y0 + r), 0, 90, fill=ink)
    for _ in range(int(rng.integers(0, 6))):
        (x0, y0), (x1, y1) = rng.integers(0, CANVAS, (2, 2)).tolist()
        draw.line((x0, y0, x1, y0) if rng.random() < 0.5 else (x0, y0, x0, y1), fill=ink, width=1)
    return fit_square(page, IMAGE_SIZE)


def lens_cap(rng: np.random.Generator) -> Image.Image:
    """A photo taken with the cap on: near black, a faint vignette and a little noise."""
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] / (CANVAS - 1) - 0.5
    centre = rng.uniform(-0.2, 0.2, 2)
    glow = np.clip(1 - np.hypot(xs - centre[0], ys - centre[1]) * rng.uniform(1.2, 2.5), 0, 1)
    base = rng.uniform(2, 18) * glow[..., None] * rng.uniform(0.7, 1.0, 3)
    pixels = base + rng.normal(0, rng.uniform(0.5, 3), (CANVAS, CANVAS, 3))
    return fit_square(Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), IMAGE_SIZE)


GENERATORS: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "uniform-noise": uniform_noise,
    "gaussian-noise": gaussian_noise,
    "flat-colour": flat_colour,
    "gradient": gradient,
    "document": document,
    "plan": plan,
    "lens-cap": lens_cap,
}


# --------------------------------------------------------------------------------------------
# Scenes: a cut-out photo laid on a drawn background, for the training side
# --------------------------------------------------------------------------------------------

SCENE_CANVAS = 128  # drawn at twice the data set's size, then fitted to it as a photo is
SCENE_GROUNDS = ("flat-colour", "gradient", "smooth")
SCENE_SCALE = (0.5, 1.1)  # the cut-out's longer side against the frame's: an object seen whole, or close up
SCENE_CENTRE = (0.3, 0.7)  # where its centre falls, as a share of the frame
SCENE_MUTED = (0.4, 0.9)  # how far the background's colours are blended towards their grey


def scene_ground(name: str, rng: np.random.Generator) -> Image.Image:
    """A background: one of the drawn generators, or a smooth field of colours (a 3x3 grid of random colours,
    interpolated: the blurred ground of a close-up), its colours muted towards grey by SCENE_MUTED, since
    drawn colours are far more saturated than a photo's ground."""
    size = (SCENE_CANVAS, SCENE_CANVAS)
    if name == "smooth":
        grid = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        ground = Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)
    else:
        ground = GENERATORS[name](rng).resize(size, Image.Resampling.BILINEAR)
    return Image.blend(ground, ground.convert("L").convert("RGB"), float(rng.uniform(*SCENE_MUTED)))


def stamp_scene(image: Image.Image, rng: random.Random) -> tuple[Image.Image, dict]:
    """The 64x64 RGB scene of one cut-out (transparent margins trimmed) and where it was put: a background from
    SCENE_GROUNDS, the cut-out scaled to SCENE_SCALE of the frame and centred within SCENE_CENTRE."""
    stamp = image.convert("RGBA")
    stamp = stamp.crop(stamp.getbbox() or (0, 0, *stamp.size))
    ground_name = rng.choice(SCENE_GROUNDS)
    frame = scene_ground(ground_name, np.random.default_rng(rng.getrandbits(64))).convert("RGBA")
    scale = rng.uniform(*SCENE_SCALE)
    factor = scale * SCENE_CANVAS / max(stamp.size)
    size = (max(1, round(stamp.width * factor)), max(1, round(stamp.height * factor)))
    stamp = stamp.resize(size, Image.Resampling.LANCZOS)
    centre = [round(rng.uniform(*SCENE_CENTRE) * SCENE_CANVAS) for _ in range(2)]
    layer = Image.new("RGBA", frame.size, (0, 0, 0, 0))
    layer.paste(stamp, (centre[0] - size[0] // 2, centre[1] - size[1] // 2))
    scene = fit_square(Image.alpha_composite(frame, layer).convert("RGB"), IMAGE_SIZE)
    return scene, {"crop_box": None, "scene": {"ground": ground_name, "scale": round(scale, 3), "centre": centre}}
