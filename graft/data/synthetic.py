"""The built-in default data: seeded, deterministic images of textured shapes.

A class is a (shape, texture) pair, e.g. `circle_checker`. Every image draws its position,
size, rotation, colours and noise at random, so a class is only recognisable by the
combination of outline and fill. The source classes and the target classes are disjoint pairs
that share the same shapes and textures: a backbone pretrained on the source has already learnt
the features the target needs, which is exactly what transfer learning exploits. With a few
labels per target class a from-scratch model has to learn them from almost nothing.

That makes the standard set the one case where a frozen backbone must win. `style="shifted"` draws
the same classes the way the standard source never shows them: a cluttered background of random
waves, smaller and more varied shapes, finer or coarser textures, low contrast and heavy noise. A
target in that style tests whether a recipe adapts the backbone rather than only reusing it.

Importing this module does not import torch (config validation uses `default_classes`).
"""

from __future__ import annotations

import hashlib
import math

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TEXTURES = ("solid", "stripes", "checker", "dots")

# Target classes: two textures per shape for three shapes, so neither outline nor fill alone
# separates them. Source classes: every other pair (18), covering all shapes and textures.
TARGET_CLASSES = ("circle_checker", "circle_dots", "square_stripes", "square_dots",
                  "triangle_solid", "triangle_checker")
ALL_CLASSES = tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)
SOURCE_CLASSES = tuple(c for c in ALL_CLASSES if c not in TARGET_CLASSES)


def default_classes(domain: str) -> list[str]:
    return list(SOURCE_CLASSES if domain == "source" else TARGET_CLASSES)


def _class_seed(seed: int, name: str) -> int:
    # Per-class seeding: selecting other classes never changes the images of this one.
    digest = hashlib.sha256(f"synthetic:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _shape_mask(shape: str, u, v, r):
    import torch

    if shape == "circle":
        return u**2 + v**2 < r**2
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) < 0.8 * r
    if shape == "triangle":
        return (v < 0.5 * r) & (v > -r + 1.73 * u.abs())
    if shape == "cross":
        arm = 0.32 * r
        return ((u.abs() < arm) & (v.abs() < r)) | ((v.abs() < arm) & (u.abs() < r))
    if shape == "ring":
        d2 = u**2 + v**2
        return (d2 < r**2) & (d2 > (0.55 * r) ** 2)
    if shape == "diamond":
        return u.abs() + v.abs() < r
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _texture(texture: str, u, v, period):
    import torch

    if texture == "solid":
        return torch.ones_like(u, dtype=torch.bool)
    if texture == "stripes":
        return torch.sin(2 * math.pi * u / period) > 0
    if texture == "checker":
        return ((torch.floor(u / period) + torch.floor(v / period)) % 2) == 0
    if texture == "dots":
        du = torch.remainder(u, period) - period / 2
        dv = torch.remainder(v, period) - period / 2
        return du**2 + dv**2 < (period / 3.2) ** 2
    raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")


STYLES = ("standard", "shifted")


def _clutter(n: int, s: int, xs, ys, uniform, g):
    """A background of two random plane waves per image, in colours of its own: edges everywhere that
    belong to no class, which the standard set never shows."""
    import torch

    field = torch.zeros(n, 1, s, s)
    for _ in range(2):
        theta = uniform(0, math.pi, n, 1, 1)
        freq = uniform(0.15, 0.6, n, 1, 1) * (32.0 / s)
        phase = uniform(0, 2 * math.pi, n, 1, 1)
        field += torch.sin(freq * (xs * torch.cos(theta) + ys * torch.sin(theta)) + phase).unsqueeze(1)
    weight = (field / 4 + 0.5).clamp(0, 1)
    low = uniform(0.0, 1.0, n, 3, 1, 1)
    high = (low + uniform(-0.4, 0.4, n, 3, 1, 1)).clamp(0, 1)  # faint enough that the shape stays visible
    return low + (high - low) * weight


def generate_class(name: str, count: int, image_size: int, channels: int, seed: int, style: str = "standard"):
    """`count` uint8 images (count×channels×size×size) of one class, deterministic in (seed, name, style)."""
    import torch

    shape, _, texture = name.partition("_")
    if shape not in SHAPES or texture not in TEXTURES:
        raise ValueError(f"unknown synthetic class {name!r}; known: {', '.join(ALL_CLASSES)}")
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; known: {', '.join(STYLES)}")
    shifted = style == "shifted"
    g = torch.Generator().manual_seed(_class_seed(seed, name if not shifted else f"{name}:shifted"))
    n, s = count, image_size

    def uniform(lo, hi, *shape_):
        return lo + (hi - lo) * torch.rand(*shape_, generator=g)

    # Geometry in units of the image size, so every image_size shows the same scene.
    scale = s / 32.0
    if shifted:  # smaller, more varied, anywhere that keeps most of the shape inside; textures finer or coarser
        radius = uniform(6.0, 10.0, n, 1, 1) * scale
        cx = (uniform(0, 1, n, 1, 1) * (32 - 2 * radius / scale) + radius / scale) * scale
        cy = (uniform(0, 1, n, 1, 1) * (32 - 2 * radius / scale) + radius / scale) * scale
        angle = uniform(-1.0, 1.0, n, 1, 1)
        period = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, uniform(2.8, 3.2, n, 1, 1),
                             uniform(5.0, 6.0, n, 1, 1)) * scale
    else:
        cx = uniform(11, 21, n, 1, 1) * scale
        cy = uniform(11, 21, n, 1, 1) * scale
        radius = uniform(7.5, 11.5, n, 1, 1) * scale
        angle = uniform(-0.5, 0.5, n, 1, 1)
        period = uniform(3.2, 4.6, n, 1, 1) * scale
    ys, xs = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    dx, dy = xs - cx, ys - cy
    u = dx * torch.cos(angle) + dy * torch.sin(angle)
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)

    inside = _shape_mask(shape, u, v, radius)
    fill = _texture(texture, u, v, period)

    # Colours are random per image, so colour carries no class information.
    background = uniform(0.0, 1.0, n, 3, 1, 1) if not shifted else _clutter(n, s, xs, ys, uniform, g)
    ink = uniform(0.0, 1.0, n, 3, 1, 1)
    paper = uniform(0.0, 1.0, n, 3, 1, 1)
    # Keep the fill's two colours and the background distinguishable.
    ink = torch.where((ink - paper).abs().sum(1, keepdim=True) < 0.6, 1.0 - paper, ink)
    if shifted:  # lower contrast: the fill's colours pulled a quarter of the way towards their mean
        mid = (ink + paper) / 2
        ink, paper = mid + 0.75 * (ink - mid), mid + 0.75 * (paper - mid)
    shape_colour = torch.where(fill.unsqueeze(1), ink, paper)
    img = torch.where(inside.unsqueeze(1), shape_colour, background)
    img = img + (0.08 if not shifted else 0.12) * torch.randn(n, 3, s, s, generator=g)
    img = img.clamp(0, 1)
    if channels == 1:
        img = (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
    return (img * 255).round().to(torch.uint8)


def generate(classes: list[str], per_class: int, image_size: int, channels: int, seed: int, style: str = "standard"):
    """An ImageDataset of `per_class` images for each named class."""
    import torch

    from graft.data.dataset import ImageDataset

    images = [generate_class(c, per_class, image_size, channels, seed, style) for c in classes]
    labels = [torch.full((per_class,), i, dtype=torch.int64) for i in range(len(classes))]
    return ImageDataset(torch.cat(images), torch.cat(labels), list(classes))
