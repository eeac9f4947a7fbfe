"""The embedded default corpus: seeded, procedurally drawn shape scenes with varied captions.

A scene has a *main group* of 1–4 identical objects (shape × colour × size), sometimes one small
*distractor* object of another shape and colour, and a textured background. Objects are drawn with
anti-aliased signed-distance masks, vectorised over a block of images in numpy, then colour jitter and
pixel noise are added; 10k images at 32×32 take about a second.

Determinism: scenes come in blocks of `BLOCK` drawn from ``SeedSequence([seed, split, block])``, so scene i
of a split depends only on (seed, split, i) — a smaller corpus is a prefix of a larger one, and train
(split 0), eval (split 1) never share a random stream. Caption wording is drawn from a per-scene RNG
(`caption_rng`), so item i always has the same K captions.

Captions: slot 0 is the full description (main group, position, distractor, background); slots 1… are
other templates (terse tags, partial descriptions, synonyms), distinct for K ≤ 8. Zero-shot tasks ask for
the main group's shape, colour, count, size and — on single-object scenes — position.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np

from compt.clip.data.text import caption_rng

BLOCK = 1024
CACHE_VERSION = 2  # bump when drawing changes, so stale disk caches are not reused
NOISE_BANK = 256
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon")
PLURALS = {"cross": "crosses", "box": "boxes", "plus sign": "plus signs", "round shape": "round shapes"}
GENERIC_NOUNS = ("shape", "object", "thing")
SHAPE_WORDS = {"circle": ("circle", "disk", "round shape"), "square": ("square", "box"),
               "triangle": ("triangle",), "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus sign"),
               "ring": ("ring", "hoop"), "star": ("star",), "hexagon": ("hexagon",)}
COLOURS = {"red": (215, 40, 40), "orange": (240, 135, 25), "yellow": (235, 215, 35), "green": (45, 165, 60),
           "cyan": (40, 195, 205), "blue": (40, 75, 215), "purple": (135, 55, 185), "pink": (240, 130, 185),
           "white": (245, 245, 245), "black": (20, 20, 20)}
BACKGROUNDS = {"gray": (125, 125, 125), "beige": (200, 185, 150), "slate": (80, 95, 110),
               "lavender": (180, 165, 205)}
TEXTURES = ("plain", "striped", "checkered", "speckled")
SIZES = ("small", "medium", "large")
SIZE_WORDS = {"small": ("small", "tiny", "little"), "medium": ("medium", "medium-sized", "mid-sized"),
              "large": ("large", "big", "huge")}
SIZE_RADIUS = ((0.10, 0.13), (0.15, 0.185), (0.23, 0.28))  # radius / image side
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
COUNT_WORDS = ("one", "two", "three", "four")
COUNT_PROBS = (0.4, 0.25, 0.2, 0.15)

ZEROSHOT_TEMPLATES = {
    "shape": ("a photo of a {}.", "a {} shape.", "a drawing of a {}.", "a picture with a {}.", "a {}."),
    "colour": ("a {} shape.", "a photo of a {} object.", "something {}.", "a {} thing on a background."),
    "count": ("a picture of {}.", "an image with {}.", "{} on a background.", "there are {}."),
    "size": ("a {} shape.", "a photo of a {} object.", "a {} thing.", "something {}."),
    "position": ("a shape at the {}.", "an object at the {} of the image.", "something at the {}."),
}
COUNT_CLASSNAMES = ("a single shape", "two shapes", "three shapes", "four shapes")


@dataclass(frozen=True)
class Scenes:
    """Attributes of N scenes (index arrays into the vocabularies above); slot 0…3 main, 4 distractor."""

    shape: np.ndarray          # (N,) main shape
    colour: np.ndarray         # (N,)
    count: np.ndarray          # (N,) 1..4
    size: np.ndarray           # (N,) 0..2
    cells: np.ndarray          # (N, 5) grid cell 0..8 of each object slot (main 0..count-1, distractor 4)
    has_distractor: np.ndarray  # (N,) bool
    d_shape: np.ndarray        # (N,)
    d_colour: np.ndarray       # (N,)
    background: np.ndarray     # (N,)
    texture: np.ndarray        # (N,)
    jitter: np.ndarray         # (N, 5, 3) centre/radius jitter in [0, 1)
    colour_noise: np.ndarray   # (N, 6, 3) per-object (5) and background (1) colour jitter in [-1, 1]
    noise_seed: np.ndarray     # (N,) pixel-noise seed

    def __len__(self) -> int:
        return len(self.shape)

    def select(self, idx: np.ndarray | slice) -> Scenes:
        return Scenes(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def _sample_block(seed: int, split: int, block: int, n: int) -> Scenes:
    rng = np.random.default_rng(np.random.SeedSequence([seed, split, block]))
    shape = rng.integers(len(SHAPES), size=n)
    colour = rng.integers(len(COLOURS), size=n)
    count = rng.choice(4, size=n, p=COUNT_PROBS) + 1
    size = np.where(count == 1, rng.integers(3, size=n), rng.integers(2, size=n))
    cells = np.argsort(rng.random((n, 9)), axis=1)[:, :5]   # distinct cells per scene
    has_d = rng.random(n) < 0.5
    d_shape = (shape + rng.integers(1, len(SHAPES), size=n)) % len(SHAPES)
    d_colour = (colour + rng.integers(1, len(COLOURS), size=n)) % len(COLOURS)
    return Scenes(shape=shape, colour=colour, count=count, size=size, cells=cells, has_distractor=has_d,
                  d_shape=d_shape, d_colour=d_colour, background=rng.integers(len(BACKGROUNDS), size=n),
                  texture=rng.integers(len(TEXTURES), size=n), jitter=rng.random((n, 5, 3)),
                  colour_noise=rng.uniform(-1, 1, (n, 6, 3)), noise_seed=rng.integers(2**31, size=n))


def sample_scenes(seed: int, split: int, n: int) -> Scenes:
    """Scenes 0…n-1 of a split (0 train, 1 eval); scene i depends only on (seed, split, i)."""
    blocks = [_sample_block(seed, split, b, BLOCK) for b in range((n + BLOCK - 1) // BLOCK)]
    if not blocks:
        return _sample_block(seed, split, 0, 0)
    return Scenes(**{k: np.concatenate([getattr(b, k) for b in blocks])[:n] for k in Scenes.__dataclass_fields__})


# ----------------------------------------------------------------------------------------------- drawing
def _sdf(shape: int, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of shape `shape` with radius r (B, 1, 1) at offsets (B, H, W)."""
    ax, ay = np.abs(dx), np.abs(dy)
    name = SHAPES[shape]
    if name == "circle":
        return np.hypot(dx, dy) - r
    if name == "ring":
        return np.abs(np.hypot(dx, dy) - 0.72 * r) - 0.28 * r
    if name == "square":
        return np.maximum(ax, ay) - 0.82 * r
    if name == "diamond":
        return (ax + ay - 1.15 * r) / np.sqrt(2)
    if name == "hexagon":
        return np.maximum(ax * 0.866 + ay * 0.5, ay) - 0.88 * r
    if name == "triangle":  # pointing up (image y grows downward); inradius 0.55 r
        return np.maximum(dy, np.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy)) - 0.55 * r
    if name == "cross":
        arm = 0.34 * r
        return np.minimum(np.maximum(ax - r, ay - arm), np.maximum(ax - arm, ay - r))
    # star: five points, radius alternating between 0.45 r and 1.05 r
    theta = np.arctan2(dy, dx) + np.pi / 2
    t = np.mod(theta * 5 / (2 * np.pi), 1.0)
    return np.hypot(dx, dy) - r * (0.45 + 0.6 * np.abs(2 * t - 1) ** 1.5)


def _object_slots(sc: Scenes, side: int) -> list[tuple[np.ndarray, ...]]:
    """Per slot: (active (B,), shape (B,), cx, cy, r (B,), colour id (B,)) — main slots 0..3, distractor 4."""
    cell = side / 3
    slots = []
    for j in range(5):
        is_main = j < 4
        active = (sc.count > j) if is_main else sc.has_distractor
        size = sc.size if is_main else np.zeros_like(sc.size)
        lo = np.array([s[0] for s in SIZE_RADIUS])[size]
        hi = np.array([s[1] for s in SIZE_RADIUS])[size]
        r = (lo + (hi - lo) * sc.jitter[:, j, 2]) * side
        row, col = sc.cells[:, j] // 3, sc.cells[:, j] % 3
        cx = np.clip((col + 0.5 + 0.3 * (sc.jitter[:, j, 0] - 0.5)) * cell, r, side - r)
        cy = np.clip((row + 0.5 + 0.3 * (sc.jitter[:, j, 1] - 0.5)) * cell, r, side - r)
        shape = sc.shape if is_main else sc.d_shape
        colour = sc.colour if is_main else sc.d_colour
        slots.append((active, shape, cx.astype(np.float32), cy.astype(np.float32), r.astype(np.float32), colour))
    return slots


@functools.cache
def _noise_bank(side: int) -> np.ndarray:
    """(NOISE_BANK, H, W, 4) fixed standard normal fields; a scene picks one by its noise seed."""
    return np.random.default_rng(NOISE_BANK).standard_normal((NOISE_BANK, side, side, 4), dtype=np.float32)


def _noise(sc: Scenes, side: int) -> np.ndarray:
    """(B, H, W, 4) noise of each scene — a function of the scene alone, never of its batch."""
    return _noise_bank(side)[sc.noise_seed % NOISE_BANK]


def _background(sc: Scenes, side: int, noise: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) float textured backgrounds."""
    base = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[sc.background]
    base = (base + 12 * sc.colour_noise[:, 5]).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    period = max(side / 8, 2.0)
    stripes = np.where(np.mod(xx + yy, period) < period / 2, 1.0, -1.0)
    checks = np.where((np.floor(xx / period) + np.floor(yy / period)) % 2 == 0, 1.0, -1.0)
    tex = np.zeros((len(sc), side, side), dtype=np.float32)
    tex[sc.texture == 1] = 14 * stripes
    tex[sc.texture == 2] = 14 * checks
    speckled = sc.texture == 3
    tex[speckled] = 16 * noise[speckled, :, :, 3]
    return base[:, None, None, :] + tex[..., None]


def render(sc: Scenes, side: int) -> np.ndarray:
    """Draw scenes → uint8 (N, 3, side, side)."""
    out = np.empty((len(sc), 3, side, side), dtype=np.uint8)
    chunk = max(1, 4096 * 32 * 32 // (side * side))
    for start in range(0, len(sc), chunk):
        out[start:start + chunk] = _render_chunk(sc.select(slice(start, start + chunk)), side)
    return out


def _render_chunk(sc: Scenes, side: int) -> np.ndarray:
    noise = _noise(sc, side)
    canvas = _background(sc, side, noise)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    px = np.arange(side, dtype=np.float32) + 0.5
    for j, (active, shape, cx, cy, r, colour) in enumerate(_object_slots(sc, side)):
        rgb = np.clip(palette[colour] + 22 * sc.colour_noise[:, j], 0, 255).astype(np.float32)
        rgb = rgb[:, None, None, :]  # (B, 1, 1, 3)
        cover = np.zeros((len(sc), side, side), dtype=np.float32)  # anti-aliased coverage of this slot
        for s in range(len(SHAPES)):
            rows = np.nonzero(active & (shape == s))[0]
            if rows.size:
                dx = px[None, None, :] - cx[rows, None, None]
                dy = px[None, :, None] - cy[rows, None, None]
                cover[rows] = np.clip(0.5 - _sdf(s, dx, dy, r[rows, None, None]), 0.0, 1.0)
        canvas += cover[..., None] * (rgb - canvas)
    canvas += 4 * noise[..., :3]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------- captions
def _noun(shape: str, plural: bool, rng: random.Random, synonyms: bool) -> str:
    word = rng.choice(SHAPE_WORDS[shape]) if synonyms else shape
    return PLURALS.get(word, word + "s") if plural else word


def _group(sc: Scenes, i: int, rng: random.Random, *, size: bool = True, synonyms: bool = False) -> str:
    """'two small red circles' / 'a large blue star' for the main group of scene i."""
    n = int(sc.count[i])
    count = rng.choice(("a", "one", "a single")) if n == 1 else rng.choice((COUNT_WORDS[n - 1],) * 3 + (str(n),))
    adj = SIZE_WORDS[SIZES[sc.size[i]]]
    words = [count, (rng.choice(adj) if synonyms else adj[0]) if size else "",
             list(COLOURS)[sc.colour[i]], _noun(SHAPES[sc.shape[i]], n > 1, rng, synonyms)]
    text = " ".join(w for w in words if w)
    return "an " + text[2:] if text.startswith("a ") and text[2] in "aeiou" else text


def _position(sc: Scenes, i: int, rng: random.Random) -> str:
    if sc.count[i] != 1:
        return ""
    pos = POSITIONS[sc.cells[i, 0]]
    return rng.choice((f" at the {pos}", f" in the {pos}" if pos != "center" else " in the center",
                       f" placed at the {pos}"))


def _distractor(sc: Scenes, i: int, rng: random.Random) -> str:
    if not sc.has_distractor[i]:
        return ""
    obj = f"{list(COLOURS)[sc.d_colour[i]]} {SHAPES[sc.d_shape[i]]}"
    art = "an" if obj[0] in "aeiou" else "a"
    return rng.choice((f" and a small {obj}", f" next to {art} {obj}", f" with a tiny {obj} nearby"))


def _backdrop(sc: Scenes, i: int) -> tuple[str, str]:
    return list(BACKGROUNDS)[sc.background[i]], TEXTURES[sc.texture[i]]


def caption(sc: Scenes, i: int, variant: int, rng: random.Random) -> str:
    """Caption `variant` (0 = the full description) of scene i."""
    bg, tex = _backdrop(sc, i)
    group, pos, dis = _group(sc, i, rng), _position(sc, i, rng), _distractor(sc, i, rng)
    n, shape, colour = int(sc.count[i]), SHAPES[sc.shape[i]], list(COLOURS)[sc.colour[i]]
    if variant == 0:  # no background: with it, colour + backdrop alone tell a batch apart and shape is never learned
        return f"{group}{pos}{dis}."
    if variant == 1:
        return f"a picture of {group}{dis}."
    if variant == 2:  # generic nouns ("two red shapes") tie count/colour words to the zero-shot prompts' wording
        verb = "is" if n == 1 else "are"
        noun = rng.choice((shape, *GENERIC_NOUNS))
        return f"there {verb} {COUNT_WORDS[n - 1]} {colour} {PLURALS.get(noun, noun + 's') if n > 1 else noun}{pos}."
    if variant == 3:
        return f"an image showing {_group(sc, i, rng, size=False)} over a {bg} {tex} backdrop."
    if variant == 4:
        tags = [colour, shape, SIZES[sc.size[i]], f"x{n}", bg, tex]
        rng.shuffle(tags)
        return ", ".join(tags)
    if variant == 5:
        return f"a {tex} {bg} scene with {group}{pos}."
    if variant == 6:
        return f"a sketch of {_group(sc, i, rng, synonyms=True)}{dis}."
    return f"a simple drawing of {group}{pos}{dis}."


N_VARIANTS = 8


def captions_for(sc: Scenes, k: int, *, seed: int, split: int, offset: int = 0) -> list[list[str]]:
    """K caption slots per scene: slot 0 the full description, then distinct other variants (fixed per index)."""
    out = []
    for i in range(len(sc)):
        rng = caption_rng(seed, offset + i, stream=10 + split)
        others = list(range(1, N_VARIANTS))
        rng.shuffle(others)
        variants = [0, *others]
        out.append([caption(sc, i, variants[j % N_VARIANTS], rng) for j in range(k)])
    return out


def zeroshot_labels(sc: Scenes) -> dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]]:
    """task → (class names, labels (M,), scene indices (M,)) for the synthetic zero-shot tasks."""
    every = np.arange(len(sc))
    single = np.nonzero(sc.count == 1)[0]
    return {
        "shape": (SHAPES, sc.shape, every),
        "colour": (tuple(COLOURS), sc.colour, every),
        "count": (COUNT_CLASSNAMES, sc.count - 1, every),
        "size": (SIZES, sc.size, every),
        "position": (POSITIONS, sc.cells[single, 0], single),
    }
