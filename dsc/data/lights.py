"""Yale Face Database B capture geometry: the 64 strobe directions and the 9 poses."""

from __future__ import annotations

import numpy as np

# (azimuth, elevation) in degrees, in capture order (Georghiades et al. 2001).
YALE_LIGHTS: tuple[tuple[int, int], ...] = (
    (0, 0),
    (10, -20),
    (20, -10),
    (25, 0),
    (20, 10),
    (15, 20),
    (0, 20),
    (-15, 20),
    (-20, 10),
    (-25, 0),
    (-20, -10),
    (-10, -20),
    (0, -20),
    (50, -40),
    (60, -20),
    (70, 0),
    (60, 20),
    (70, 45),
    (35, 65),
    (-35, 65),
    (-70, 45),
    (-60, 20),
    (-70, 0),
    (-60, -20),
    (-50, -40),
    (-130, 20),
    (-110, 15),
    (-120, 0),
    (-110, -20),
    (130, 20),
    (110, 15),
    (120, 0),
    (110, -20),
    (-70, -35),
    (-85, -20),
    (-95, 0),
    (-85, 20),
    (-110, 40),
    (-110, 65),
    (0, 90),
    (110, 65),
    (110, 40),
    (85, 20),
    (95, 0),
    (85, -20),
    (70, -35),
    (-20, -40),
    (-35, -20),
    (-50, 0),
    (-35, 15),
    (-35, 40),
    (0, 45),
    (35, 40),
    (35, 15),
    (50, 0),
    (35, -20),
    (20, -40),
    (0, -35),
    (-5, -10),
    (-10, 0),
    (-5, 10),
    (5, 10),
    (10, 0),
    (5, -10),
)

# Pose -> (yaw, pitch) of the head in degrees: P00 frontal, P01-P05 about 12 deg off the
# camera axis, P06-P08 about 24 deg (the Yale B geometry; the directions are our choice).
YALE_POSES: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.0, 12.0),
    (12.0, 0.0),
    (0.0, -12.0),
    (-12.0, 0.0),
    (8.5, 8.5),
    (24.0, 0.0),
    (-17.0, 17.0),
    (17.0, -17.0),
)


def light_vector(azimuth: float, elevation: float) -> np.ndarray:
    """Unit light direction (x right, y up, z towards the camera), shape (3,)."""
    a, e = np.radians(azimuth), np.radians(elevation)
    return np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
