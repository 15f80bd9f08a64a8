"""Synthetic faces: identities, their height fields and albedo maps, and a Lambertian renderer.

Each identity is a height field z = h(x, y) (a shared mean face plus identity-specific shape
deformations) with an albedo map. An image is I = albedo * (max(0, n . l) * lit + ambient),
where ``lit`` is 0 in cast shadows (Georghiades, Belhumeur & Kriegman 2001 model Yale B the
same way); :mod:`dsc.data.synthetic` adds the pixel noise and builds the dataset.

Frames (orthographic camera): x to the image right, y up, z towards the camera; face units span
[-1, 1] across the image. The light vector is ``light_vector(azimuth, elevation)``, so a positive
azimuth lights the image's right half (the subject's left side). Positive yaw turns the nose
towards the image right, positive pitch turns it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_AMBIENT = 0.04  # fraction of the albedo seen without the strobe (lights behind stay near-dark)
_BACKGROUND = 0.03  # dark backdrop, in units of full scale
# How much identities differ: tuned so that a linear probe on the pixels tells most of them apart
# but not all, and one on PCA(50) of them a little fewer.
_IDENTITY_SCALE = 1.5
_RAY_STEPS = 48  # depth samples per pixel ray when the head is turned (~0.02 face units apart)
_REFINE_ITERS = 4  # regula falsi steps after the march: the hit to ~1e-3 face units


@dataclass(frozen=True)
class Identity:
    """Shape and albedo parameters of one synthetic person (face units, y up)."""

    width: float  # head half-width
    nose_length: float  # bridge-to-tip length
    nose_height: float  # how far the tip stands out
    brow_y: float  # height of the brow ridge
    eye_dx: float  # half the distance between the eyes
    mouth_y: float  # height of the mouth line
    skin: float  # base albedo
    hairline: float  # height of the hairline at the centre
    brow_tilt: float  # slope of the eyebrows (outer end up if positive)
    bumps: np.ndarray  # (K, 5): cx, cy, sx, sy, amplitude of smooth shape deformations
    marks: np.ndarray  # (M, 4): cx, cy, radius, albedo factor of moles and freckles


def sample_identities(rng: np.random.Generator, n: int, scale: float = _IDENTITY_SCALE) -> list[Identity]:
    """Draw ``n`` identities; ``scale`` multiplies every deviation from the mean face.

    The main face parameters are z-scores standardised over the ``n`` people (mean 0, std 1
    per parameter), so that how alike the people are, and hence how hard the task is,
    varies little from seed to seed.
    """
    z = rng.standard_normal((n, 9))
    z = (z - z.mean(0)) / z.std(0)  # (n, 9)
    people = []
    for zi in z:
        dev = dict(
            zip(
                ("width", "nose_length", "nose_height", "brow_y", "eye_dx", "mouth_y", "skin", "hairline", "brow_tilt"),
                scale * zi,
            )
        )
        k, m = 8, int(rng.integers(1, 4))
        bumps = np.column_stack(
            [
                rng.uniform(-0.45, 0.45, k),
                rng.uniform(-0.7, 0.45, k),
                rng.uniform(0.08, 0.2, k),
                rng.uniform(0.08, 0.2, k),
                scale * 0.02 * rng.standard_normal(k),
            ]
        )
        marks = np.column_stack(
            [
                rng.uniform(-0.4, 0.4, m),
                rng.uniform(-0.6, 0.3, m),
                rng.uniform(0.012, 0.025, m),
                rng.uniform(0.45, 0.75, m),
            ]
        )
        people.append(
            Identity(
                width=0.62 * (1 + 0.04 * dev["width"]),
                nose_length=0.42 * (1 + 0.1 * dev["nose_length"]),
                nose_height=0.14 * (1 + 0.15 * dev["nose_height"]),
                brow_y=0.32 + 0.025 * dev["brow_y"],
                eye_dx=0.22 + 0.015 * dev["eye_dx"],
                mouth_y=-0.45 + 0.02 * dev["mouth_y"],
                skin=0.72 + 0.04 * dev["skin"],
                hairline=0.52 + 0.05 * dev["hairline"],
                brow_tilt=0.1 * dev["brow_tilt"],
                bumps=bumps,
                marks=marks,
            )
        )
    return people


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Unit-height Gaussian bump centred at (cx, cy) with widths (sx, sy)."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def face_height(p: Identity, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height field and head mask of one identity on a grid.

    Parameters
    ----------
    p : the identity.
    x, y : arrays of the same shape (H, W), face coordinates.

    Returns
    -------
    h : float array (H, W), height towards the camera (0 at the silhouette).
    inside : float array (H, W), > 0 on the head and neck, < 0 on the backdrop; a signed
        field rather than a mask, so that its interpolated zero level (the silhouette) stays
        smooth when the head turns.
    """
    r2 = (x / p.width) ** 2 + ((y - 0.02) / 0.86) ** 2
    head = 0.55 * np.sqrt(np.clip(1 - r2, 0, None))
    # The neck: a cylinder below the jaw, set back so the chin casts a shadow on it.
    neck_r2 = (x / (0.6 * p.width)) ** 2
    neck = np.where(y < -0.4, 0.3 * np.sqrt(np.clip(1 - neck_r2, 0, None)), 0.0)
    b = _blob
    f = np.zeros_like(x)
    for s in (-1, 1):
        f += 0.05 * b(x, y, s * 0.2, p.brow_y, 0.16, 0.05)  # brow ridge
        f -= 0.10 * b(x, y, s * p.eye_dx, 0.17, 0.11, 0.07)  # eye socket
        f += 0.04 * b(x, y, s * p.eye_dx, 0.17, 0.06, 0.035)  # eyeball
        f += 0.05 * b(x, y, s * 0.3, -0.08, 0.14, 0.12)  # cheek
        f -= 0.03 * b(x, y, s * 0.47, 0.2, 0.08, 0.12)  # temple
    # Nose: a ridge rising from the bridge to the tip, widening towards the tip, then a sharp
    # underside (the main source of cast shadows under side and top lights).
    top, tip = 0.22, 0.22 - p.nose_length
    t = (top - y) / p.nose_length
    profile = np.where(t <= 1, np.clip(t, 0, 1) ** 1.5, np.exp(-0.5 * ((y - tip) / 0.04) ** 2))
    f += p.nose_height * profile * np.exp(-0.5 * (x / (0.045 + 0.05 * np.clip(t, 0, 1))) ** 2)
    f += 0.05 * b(x, y, 0, tip, 0.07, 0.05)
    for s in (-1, 1):
        f += 0.03 * b(x, y, s * 0.08, tip + 0.02, 0.04, 0.04)  # nostril wings
    f += 0.035 * b(x, y, 0, p.mouth_y + 0.03, 0.13, 0.025)  # upper lip
    f += 0.04 * b(x, y, 0, p.mouth_y - 0.035, 0.11, 0.03)  # lower lip
    f -= 0.015 * b(x, y, 0, p.mouth_y, 0.14, 0.008)  # mouth line
    f += 0.05 * b(x, y, 0, -0.68, 0.14, 0.08)  # chin
    for cx, cy, sx, sy, amp in p.bumps:
        f += amp * b(x, y, cx, cy, sx, sy)
    # Features live on the face, not on the skull's rim or the hair.
    window = np.clip(1.3 * (1 - r2), 0, 1)
    h = np.maximum(head + f * window, neck)
    inside = np.maximum(1 - r2, np.where(y < -0.4, 1 - neck_r2, -1.0))
    return h, inside


def face_albedo(p: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Albedo map of one identity in [0, 1], shape of ``x`` (H, W)."""
    a = np.full_like(x, p.skin)
    b = _blob
    for s in (-1, 1):
        # Eyebrows: a dark tilted band above each eye.
        dx = x - s * 0.21
        yb = p.brow_y + 0.01 + s * p.brow_tilt * dx
        a *= 1 - 0.6 * np.exp(-0.5 * ((dx / 0.11) ** 4 + ((y - yb) / 0.022) ** 2))
        a *= 1 + 0.25 * b(x, y, s * p.eye_dx, 0.17, 0.05, 0.022)  # white of the eye
        a *= 1 - 0.8 * b(x, y, s * p.eye_dx, 0.17, 0.022, 0.022)  # iris and pupil
    lips = b(x, y, 0, p.mouth_y + 0.03, 0.12, 0.02) + b(x, y, 0, p.mouth_y - 0.035, 0.1, 0.025)
    a *= 1 - 0.3 * np.clip(lips, 0, 1)
    for cx, cy, rad, factor in p.marks:
        a *= 1 - (1 - factor) * b(x, y, cx, cy, rad, rad)
    # Hair above a hairline that curves down at the temples; soft edge over ~0.03 face units.
    hair_y = p.hairline - 0.25 * (x / p.width) ** 2
    hair = 1 / (1 + np.exp(-(y - hair_y) / 0.03))
    return np.clip(a * (1 - hair) + 0.12 * hair, 0, 1)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Head rotation (3, 3): pitch about x (nose up), then yaw about y (nose right), degrees."""
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    return r_yaw @ r_pitch


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Face coordinates (x right, y up) of the pixel centres, each (size, size)."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(c, -c)


def _cast_shadows(depth: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Pixels whose ray towards ``light`` is blocked, by marching over the depth map.

    Parameters
    ----------
    depth : float array (H, W), camera-frame z of the visible surface (-inf on the backdrop).
    light : (3,) unit light direction in the camera frame.

    Returns
    -------
    bool array (H, W), True in cast shadow.
    """
    size = depth.shape[0]
    lxy = np.hypot(light[0], light[1])
    shadow = np.zeros(depth.shape, bool)
    rows, cols = np.nonzero(np.isfinite(depth))
    # A light along the view axis hides nothing from an orthographic camera; a light behind
    # the image plane lights only the rim, whose rays leave the head at once.
    if lxy < 1e-6 or light[2] <= 0 or rows.size == 0:
        return shadow
    # Only the head casts and receives shadows: march over its bounding box.
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    d, out = depth[box], shadow[box]
    h, w = d.shape
    drow, dcol = -light[1] / lxy, light[0] / lxy  # image rows grow downwards
    rise = light[2] / lxy * 2 / size  # the ray climbs this much (face units) per pixel marched
    # Beyond span / rise pixels the ray is above every surface point: stop there.
    finite = d[np.isfinite(d)]
    reach = min(max(h, w), int(np.ceil((finite.max() - finite.min()) / rise)))
    bias = 4 / size  # against self-shadowing ("acne") of a resampled depth map
    t = 1
    while t <= reach:
        dr, dc = round(t * drow), round(t * dcol)
        if abs(dr) >= h or abs(dc) >= w:
            break
        # Compare each pixel (dst) with the surface t pixels towards the light (src).
        dst = np.s_[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)]
        src = np.s_[max(0, dr) : h + min(0, dr), max(0, dc) : w + min(0, dc)]
        out[dst] |= d[src] > d[dst] + (t * rise + bias)
        t += 1 + t // 16  # far occluders are large and smooth: sample them more sparsely
    return shadow


def _ray_cast(height: np.ndarray, rot: np.ndarray, sample: Callable[..., np.ndarray]) -> tuple[np.ndarray, ...]:
    """Face coordinates of the surface point seen at each pixel of the rotated head.

    Marches the orthographic ray of pixel (u, v), p(s) = R^T (u, v, s), from the front to the
    back and keeps the first crossing of the height field (so the nose hides the far cheek),
    then refines it by regula falsi. ``sample(field, x, y)`` interpolates a grid field.

    Returns
    -------
    x, y : float arrays (S, S), face coordinates of the hit point.
    depth : float array (S, S), camera-frame z of the hit point.
    hit : bool array (S, S), False where the search did not settle on the surface (the
        grazing rim), which the caller treats as backdrop.
    """
    size = height.shape[0]
    u, v = grid(size)
    if np.allclose(rot, np.eye(3)):  # frontal: the ray hits (u, v) itself
        return u, v, sample(height, u, v), np.ones(u.shape, bool)
    inv = rot.T

    def gap(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y, z = (inv[i, 0] * u + inv[i, 1] * v + inv[i, 2] * s for i in range(3))
        return z - sample(height, x, y), x, y  # > 0 while the ray is in front of the surface

    levels = np.linspace(height.max() + 0.05, height.min() - 0.01, _RAY_STEPS)
    gaps = np.stack([gap(np.full_like(u, s))[0] for s in levels])  # (steps, S, S)
    below = gaps <= 0
    first = np.where(below.any(0), below.argmax(0), _RAY_STEPS - 1).clip(1)  # first step behind
    lo, hi = levels[first], levels[first - 1]  # gap(lo) <= 0 < gap(hi)
    g_lo = np.take_along_axis(gaps, first[None], 0)[0]
    g_hi = np.take_along_axis(gaps, first[None] - 1, 0)[0]
    for _ in range(_REFINE_ITERS):  # regula falsi, Illinois variant (halve the stale end)
        s = lo + (hi - lo) * g_lo / np.where(g_lo != g_hi, g_lo - g_hi, 1)
        g, x, y = gap(s)
        ahead = g > 0
        g_lo = np.where(ahead, 0.5 * g_lo, g)
        g_hi = np.where(ahead, g, 0.5 * g_hi)
        hi, lo = np.where(ahead, s, hi), np.where(ahead, lo, s)
    return x, y, s, np.abs(g) < 0.01


def render_face(
    height: np.ndarray,
    albedo: np.ndarray,
    inside: np.ndarray,
    yaw: float,
    pitch: float,
    lights: np.ndarray,
    ambient: float = _AMBIENT,
    shadows: bool = True,
) -> np.ndarray:
    """Render a height-field face under several distant lights, without noise.

    Parameters
    ----------
    height, albedo : float arrays (S, S) on the face grid of ``grid(S)`` (frontal pose).
    inside : float array (S, S), > 0 on the head, < 0 on the backdrop (a signed distance-like
        field; a bool mask works too, with a staircase silhouette when the head turns).
    yaw, pitch : head pose in degrees.
    lights : float array (L, 3), unit light directions in the camera frame.
    ambient : fraction of the albedo seen with no direct light.
    shadows : whether to compute cast shadows (attached shadows always are).

    Returns
    -------
    float32 array (L, S, S), intensities in units of full scale (backdrop = ``_BACKGROUND``).
    """
    size = height.shape[0]
    step = 2 / size
    # Outside the silhouette the surface falls steeply (and continuously) to a backdrop behind
    # the head, so that rays missing the head stop there.
    inside = np.where(inside, 1.0, -1.0) if inside.dtype == bool else inside
    height = np.where(inside > 0, height, np.maximum(2 * inside, -0.3))
    hx = np.gradient(height, step, axis=1)
    hy = -np.gradient(height, step, axis=0)  # rows run downwards, y upwards
    rot = _rotation(yaw, pitch)

    def sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        coords = np.stack([(1 - y) / step - 0.5, (x + 1) / step - 0.5])  # (row, col) indices
        return ndimage.map_coordinates(field, coords, order=1, mode="nearest")

    x, y, depth, hit = _ray_cast(height, rot, sample)
    on_head = hit & (sample(inside, x, y) > 0)
    normal = np.stack([-sample(hx, x, y), -sample(hy, x, y), np.ones_like(x)])
    normal = np.einsum("ij,jhw->ihw", rot, normal / np.linalg.norm(normal, axis=0))  # (3, S, S)
    depth = np.where(on_head, depth, -np.inf)
    alb = sample(albedo, x, y)

    shade = np.clip(np.einsum("lj,jhw->lhw", lights, normal), 0, None)  # (L, S, S), attached
    if shadows:
        for i, light in enumerate(lights):
            shade[i][_cast_shadows(depth, light)] = 0
    img = alb * (shade + ambient)
    return np.where(on_head, img, _BACKGROUND).astype(np.float32)
