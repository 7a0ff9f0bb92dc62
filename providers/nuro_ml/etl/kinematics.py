"""Synthetic vehicle motion: a smooth path with cruising, accelerating, braking and turning.

The vehicle follows a sequence of manoeuvres (cruise, accelerate, brake, hard brake, stop, curve,
lane change). Commanded acceleration and curvature pass through first-order lags so that speed,
acceleration and yaw rate are continuous, as on a real car. Hard brakes (6-8 m/s^2) happen every
20-40 s so that the ``hard_brake`` label has both classes in any drive longer than a scene or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIM_HZ = 200.0
V_MAX = 30.0
WHEELBASE_M = 2.9
STEERING_RATIO = 15.0
#: Brake line pressure per m/s^2 of deceleration; 6 m/s^2 gives 54 bar.
BRAKE_BAR_PER_MPS2 = 9.0
#: Default threshold of the ``hard_brake`` label (bar of brake pressure).
HARD_BRAKE_BAR = 45.0


@dataclass(frozen=True)
class Trajectory:
    """Vehicle state sampled at :data:`SIM_HZ`; times in seconds from the drive start."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    yaw_rate: np.ndarray
    curvature: np.ndarray

    @property
    def lateral_accel(self) -> np.ndarray:
        return self.speed * self.yaw_rate


def _lag(target: np.ndarray, tau: np.ndarray | float, dt: float) -> np.ndarray:
    """First-order lag filter (discrete), vectorised over time with a Python loop kept small."""
    out = np.empty_like(target)
    alpha = np.broadcast_to(dt / (np.asarray(tau) + dt), target.shape)
    acc = float(target[0])
    for i in range(target.shape[0]):
        acc += float(alpha[i]) * (float(target[i]) - acc)
        out[i] = acc
    return out


def simulate(duration_s: float, rng: np.random.Generator) -> Trajectory:
    """Simulate ``duration_s`` seconds of driving; deterministic for a given generator state."""
    dt = 1.0 / SIM_HZ
    n = max(2, round(duration_s * SIM_HZ))
    t = np.arange(n) * dt

    # Longitudinal plan: piecewise-constant commanded acceleration with a time constant per segment.
    a_cmd = np.zeros(n)
    tau = np.full(n, 0.5)
    speed = np.empty(n)
    v = rng.uniform(8.0, 15.0)
    i = 0
    next_hard = rng.uniform(8.0, 20.0)
    while i < n:
        now = i * dt
        if now >= next_hard and v > 10.0:
            kind, dur, acc, time_const = "hard", rng.uniform(1.2, 2.2), -rng.uniform(6.0, 8.0), 0.15
            next_hard = now + rng.uniform(20.0, 40.0)
        elif v < 0.5:
            kind, dur, acc, time_const = "launch", rng.uniform(4.0, 8.0), rng.uniform(1.5, 2.5), 0.4
        else:
            kind = rng.choice(["cruise", "accel", "brake"], p=[0.45, 0.3, 0.25])
            dur = rng.uniform(3.0, 9.0)
            acc = {
                "cruise": rng.normal(0.0, 0.15),
                "accel": rng.uniform(0.5, 2.0),
                "brake": -rng.uniform(0.8, 3.0),
            }[str(kind)]
            time_const = 0.5
        seg = min(n - i, max(1, round(dur / dt)))
        # Integrate speed inside the segment so the plan can react to standstill and the cap.
        for k in range(i, i + seg):
            a = acc
            if (v <= 0.0 and a < 0.0) or (v >= V_MAX and a > 0.0):
                a = 0.0
            a_cmd[k] = a
            tau[k] = time_const
            v = min(V_MAX, max(0.0, v + a * dt))
            speed[k] = v
        if kind == "hard" and v > 1.0:
            # A hard brake ends in slow traffic; plan a gentle recovery next.
            next_hard = max(next_hard, (i + seg) * dt + 15.0)
        i += seg

    accel = _lag(a_cmd, tau, dt)
    speed = np.maximum(0.0, np.cumsum(accel) * dt + float(speed[0]) - float(accel[0]) * dt)
    # The lag may push speed below zero near a stop; at standstill acceleration is zero.
    stopped = speed <= 0.0
    accel = np.where(stopped & (accel < 0.0), 0.0, accel)

    # Lateral plan: curvature segments (straight, curve, lane change), limited to 3.5 m/s^2 lateral.
    kappa_cmd = np.zeros(n)
    i = 0
    while i < n:
        kind = rng.choice(["straight", "curve", "lane_change"], p=[0.5, 0.35, 0.15])
        dur = rng.uniform(3.0, 10.0)
        seg = min(n - i, max(1, round(dur / dt)))
        if kind == "curve":
            kappa_cmd[i : i + seg] = rng.choice([-1.0, 1.0]) / rng.uniform(40.0, 300.0)
        elif kind == "lane_change":
            phase = np.linspace(0.0, 2.0 * np.pi, seg)
            kappa_cmd[i : i + seg] = rng.choice([-1.0, 1.0]) * 0.004 * np.sin(phase)
        i += seg
    kappa = _lag(kappa_cmd, 0.6, dt)
    limit = 3.5 / np.maximum(speed, 1.0) ** 2
    kappa = np.clip(kappa, -limit, limit)
    yaw_rate = speed * kappa
    yaw = rng.uniform(-np.pi, np.pi) + np.cumsum(yaw_rate) * dt
    x = np.cumsum(speed * np.cos(yaw)) * dt
    y = np.cumsum(speed * np.sin(yaw)) * dt
    # Gentle road grade, and the body pitching forward under braking.
    z = 2.0 * np.sin(2.0 * np.pi * np.cumsum(speed) * dt / 800.0)
    pitch = -0.004 * accel
    return Trajectory(
        t=t, x=x, y=y, z=z, yaw=yaw, pitch=pitch, speed=speed, accel=accel, yaw_rate=yaw_rate, curvature=kappa
    )


def quaternion_from_yaw_pitch(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Quaternions (x, y, z, w) for rotations yaw about Z then pitch about Y."""
    cy, sy = np.cos(yaw / 2.0), np.sin(yaw / 2.0)
    cp, sp = np.cos(pitch / 2.0), np.sin(pitch / 2.0)
    return np.stack([-sy * sp, cy * sp, sy * cp, cy * cp], axis=1)


def brake_pressure_bar(accel: np.ndarray) -> np.ndarray:
    """Brake line pressure that produces the given deceleration (zero when not braking)."""
    return np.maximum(0.0, -accel - 0.3) * BRAKE_BAR_PER_MPS2


def steering_angle_rad(curvature: np.ndarray) -> np.ndarray:
    """Steering-wheel angle for a curvature, from the bicycle model."""
    return np.arctan(curvature * WHEELBASE_M) * STEERING_RATIO
