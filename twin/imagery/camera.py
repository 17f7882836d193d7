"""Frame cameras: interior orientation with Brown distortion, exterior orientation, projection.

Conventions (those of OpenCV, so that its stereo functions take our cameras as they are):
- Camera axes: x to the right of the image, y down, z forward along the viewing direction.
- `rotation` turns world vectors into camera vectors: `p_cam = rotation @ (p_world - center)`.
- Pixel coordinates (u, v): u to the right, v down, the centre of the top-left pixel at
  (0, 0), so the image covers [-0.5, width - 0.5] x [-0.5, height - 0.5].
- Distortion is Brown's (OpenCV order k1, k2, p1, p2, k3) on normalised coordinates
  x = X/Z, y = Y/Z: radial (1 + k1 r^2 + k2 r^4 + k3 r^6) and tangential p1, p2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyproj

# Newton's method on the distortion converges quadratically: a handful of steps reach 1e-12
# inside the field of view; the rest are for points near the fold.
_NEWTON_STEPS = 20


@dataclass(frozen=True)
class Intrinsics:
    """Interior orientation in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    def __post_init__(self) -> None:
        numbers = {name: getattr(self, name) for name in ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "p1", "p2")}
        not_finite = [name for name, value in numbers.items() if not np.isfinite(value)]
        if not_finite:
            raise ValueError(f"interior parameters must be finite numbers, got {', '.join(f'{n}={numbers[n]}' for n in not_finite)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width} x {self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distortion(self) -> np.ndarray:
        """Distortion coefficients in OpenCV's order (k1, k2, p1, p2, k3)."""
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.distortion != 0.0))

    @property
    def monotonic_radius(self) -> float:
        """The ideal normalised radius up to which radial distortion keeps growing with the radius.

        Beyond it the polynomial folds back, and points far outside the field of view would
        land inside the image: `FrameCamera.project` gives them NaN (inf without distortion).
        """
        # d/dr [r (1 + k1 r^2 + k2 r^4 + k3 r^6)] = 1 + 3 k1 s + 5 k2 s^2 + 7 k3 s^3 with s = r^2.
        roots = np.roots([7.0 * self.k3, 5.0 * self.k2, 3.0 * self.k1, 1.0])
        squared = roots.real[(np.abs(roots.imag) < 1e-12) & (roots.real > 0)]
        return float(np.sqrt(squared.min())) if squared.size else float("inf")

    def distort(self, normalised: np.ndarray) -> np.ndarray:
        """Ideal normalised coordinates (n, 2) to distorted normalised coordinates."""
        x, y = normalised[:, 0], normalised[:, 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
        xd = x * radial + 2.0 * self.p1 * x * y + self.p2 * (r2 + 2.0 * x * x)
        yd = y * radial + self.p1 * (r2 + 2.0 * y * y) + 2.0 * self.p2 * x * y
        return np.column_stack([xd, yd])

    def undistort(self, distorted: np.ndarray) -> np.ndarray:
        """Distorted normalised coordinates (n, 2) back to ideal ones; NaN rows where there are none.

        Newton's method on the forward model with its analytic Jacobian: it converges in a
        few steps even for strong wide-angle distortion, where OpenCV's fixed-point
        iteration in `undistortPoints` leaves errors of a tenth of a pixel at the corners.
        Beyond the fold of the distortion polynomial (see `monotonic_radius`) no ideal point
        maps to a distorted one, or only one on the folded-back branch: those rows are NaN,
        as are the rows Newton's method does not bring within 1e-9 of their target.
        """
        distorted = np.asarray(distorted, dtype=float)
        estimate = distorted.copy()
        if not self.has_distortion:
            return estimate
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for _ in range(_NEWTON_STEPS):
                residual = self.distort(estimate) - distorted
                if np.max(np.abs(residual), initial=0.0) < 1e-12:
                    break
                x, y = estimate[:, 0], estimate[:, 1]
                r2 = x * x + y * y
                radial = 1.0 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
                radial_dr2 = self.k1 + r2 * (2.0 * self.k2 + 3.0 * r2 * self.k3)
                dxd_dx = radial + 2.0 * x * x * radial_dr2 + 2.0 * self.p1 * y + 6.0 * self.p2 * x
                dxd_dy = 2.0 * x * y * radial_dr2 + 2.0 * self.p1 * x + 2.0 * self.p2 * y
                dyd_dx = 2.0 * x * y * radial_dr2 + 2.0 * self.p1 * x + 2.0 * self.p2 * y
                dyd_dy = radial + 2.0 * y * y * radial_dr2 + 6.0 * self.p1 * y + 2.0 * self.p2 * x
                determinant = dxd_dx * dyd_dy - dxd_dy * dyd_dx
                estimate[:, 0] -= (dyd_dy * residual[:, 0] - dxd_dy * residual[:, 1]) / determinant
                estimate[:, 1] -= (dxd_dx * residual[:, 1] - dyd_dx * residual[:, 0]) / determinant
            error = np.max(np.abs(self.distort(estimate) - distorted), axis=1, initial=0.0)
            folded = np.einsum("ij,ij->i", estimate, estimate) > self.monotonic_radius**2
            unresolved = ~(error <= 1e-9) | folded
        estimate[unresolved] = np.nan
        return estimate

    def pixels_to_normalised(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates (n, 2) to ideal (undistorted) normalised coordinates."""
        distorted = np.column_stack([(pixels[:, 0] - self.cx) / self.fx, (pixels[:, 1] - self.cy) / self.fy])
        return self.undistort(distorted)

    def normalised_to_pixels(self, normalised: np.ndarray) -> np.ndarray:
        distorted = self.distort(normalised)
        return np.column_stack([self.fx * distorted[:, 0] + self.cx, self.fy * distorted[:, 1] + self.cy])


@dataclass(frozen=True, eq=False)
class FrameCamera:
    """One oriented image: its intrinsics, projection centre and attitude in a world CRS.

    `image` is the image file's path as the orientation source gave it (resolved against
    the orientation file's folder by the readers), or None for a camera without an image.
    """

    name: str
    intrinsics: Intrinsics
    center: np.ndarray
    rotation: np.ndarray
    crs: pyproj.CRS | None = None
    image: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        center = np.asarray(self.center, dtype=float).reshape(3)
        rotation = np.asarray(self.rotation, dtype=float).reshape(3, 3)
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
            raise ValueError(f"camera {self.name!r}: the rotation is not a proper rotation matrix")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "rotation", rotation)

    @property
    def viewing_direction(self) -> np.ndarray:
        """The optical axis (camera +z) in world coordinates."""
        return self.rotation[2].copy()

    def to_camera(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, dtype=float) - self.center) @ self.rotation.T

    def project(self, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (n, 3) to pixel coordinates (n, 2) and depths along the optical axis (n,).

        Points behind the camera get NaN pixel coordinates and a depth <= 0; so do points so
        far off-axis that the distortion polynomial would fold them back into the image.
        """
        local = self.to_camera(world)
        depth = local[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = local[:, :2] / depth[:, None]
            beyond = np.einsum("ij,ij->i", normalised, normalised) > self.intrinsics.monotonic_radius**2
        normalised[(depth <= 0) | beyond] = np.nan
        return self.intrinsics.normalised_to_pixels(normalised), depth

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """Unit world directions (n, 3) of the rays through pixel coordinates (n, 2); NaN rows for
        pixels that no ray reaches (beyond the fold of the distortion, see `Intrinsics.undistort`)."""
        normalised = self.intrinsics.pixels_to_normalised(np.asarray(pixels, dtype=float))
        local = np.column_stack([normalised, np.ones(len(normalised))])
        directions = local @ self.rotation
        return directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def inside(self, pixels: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which pixel coordinates fall on the image (with `margin` pixels kept clear of its edges)."""
        width, height = self.intrinsics.width, self.intrinsics.height
        u, v = pixels[:, 0], pixels[:, 1]
        with np.errstate(invalid="ignore"):
            return (u >= margin - 0.5) & (u <= width - 0.5 - margin) & (v >= margin - 0.5) & (v <= height - 0.5 - margin)


def _axis_rotations(x_deg: float, y_deg: float, z_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The active rotations Rx, Ry, Rz by angles in degrees about the x, y and z axes."""
    a, b, c = np.radians([x_deg, y_deg, z_deg])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0.0], [np.sin(c), np.cos(c), 0.0], [0.0, 0.0, 1.0]])
    return rx, ry, rz


def rotation_from_opk(omega_deg: float, phi_deg: float, kappa_deg: float) -> np.ndarray:
    """World-to-camera rotation (our OpenCV axes) from photogrammetric omega, phi, kappa.

    Omega, phi, kappa are the angles of the classical aerial convention (PATB, Match-AT,
    orthority's "opk"): successive rotations about the world x, y and z axes of a camera
    whose axes are x right, y up and z backwards (looking down at omega = phi = kappa = 0).
    """
    rx, ry, rz = _axis_rotations(omega_deg, phi_deg, kappa_deg)
    camera_to_world_photogrammetric = rx @ ry @ rz
    # Photogrammetric camera axes (x right, y up, z back) to OpenCV's (x right, y down, z forward).
    flip = np.diag([1.0, -1.0, -1.0])
    return flip @ camera_to_world_photogrammetric.T


def opk_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """Omega, phi, kappa in degrees of a world-to-camera rotation (inverse of `rotation_from_opk`)."""
    flip = np.diag([1.0, -1.0, -1.0])
    m = (flip @ rotation).T  # camera-to-world, photogrammetric axes: Rx(omega) Ry(phi) Rz(kappa)
    phi = np.arcsin(np.clip(m[0, 2], -1.0, 1.0))
    omega = np.arctan2(-m[1, 2], m[2, 2])
    kappa = np.arctan2(-m[0, 1], m[0, 0])
    return tuple(float(a) for a in np.degrees([omega, phi, kappa]))


# Camera axes (x right, y down, z forward) in the body frame of a drone or aircraft (x forward,
# y right, z down) when roll = pitch = yaw = 0: looking straight down, image top forward.
_CAMERA_TO_BODY = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
_NED_TO_ENU = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def rotation_from_rpy(roll_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """World-to-camera rotation (OpenCV axes) in a local east-north-up frame from roll, pitch, yaw.

    The convention of Pix4D, OpenSfM's EXIF reader and orthority: the body frame (x forward,
    y right, z down) turns into north-east-down by Rz(yaw) Ry(pitch) Rx(roll); the camera
    looks down the body's z axis with the image top towards the body's front. So yaw is the
    heading of the image top, clockwise from north; a positive pitch tilts the view forwards
    from the nadir (pitch 30 = 30 degrees off nadir, a DJI gimbal pitch of -60); a positive
    roll (right side down) swings the view to the left of the heading.
    """
    rx, ry, rz = _axis_rotations(roll_deg, pitch_deg, yaw_deg)
    camera_to_enu = _NED_TO_ENU @ rz @ ry @ rx @ _CAMERA_TO_BODY
    return camera_to_enu.T


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World-to-camera rotation of a camera at `center` looking at `target`, image top towards `up`."""
    forward = np.asarray(target, float) - np.asarray(center, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: put the image top towards +y
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.vstack([right, down, forward])
