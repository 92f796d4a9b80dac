"""Window horizons: a window length and the bucket width it is built from.

The processors' setting ``FLEETPULSE_PROCESSORS_HORIZONS`` (``"60/5,300/5"``) is parsed here, so
the settings reject a bad value at start and the windows (``processors/windows/buckets.py``)
build from the same parse.
"""

from __future__ import annotations

from dataclasses import dataclass

US = 1_000_000


@dataclass(frozen=True)
class Horizon:
    """One window length and the bucket width it is built from (both in seconds)."""

    seconds: int
    bucket_s: int

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.bucket_s <= 0:
            raise ValueError(f"horizon {self.seconds}s/{self.bucket_s}s: both must be positive")
        if self.seconds % self.bucket_s:
            raise ValueError(
                f"horizon {self.seconds}s is not a whole number of {self.bucket_s}s buckets"
            )

    def bounds(self, now_us: int) -> tuple[int, int]:
        """[start, end) of this horizon's window at ``now_us``, in epoch microseconds."""
        w = self.bucket_s * US
        end = (now_us // w + 1) * w
        return end - self.seconds * US, end


def parse_horizons(spec: str) -> tuple[Horizon, ...]:
    """``"60/5,300/5"`` -> horizons of 60 s and 300 s on 5 s buckets.

    Raises:
        ValueError: naming the entry and the expected form.
    """
    out = []
    for part in spec.split(","):
        try:
            seconds, bucket = (int(x) for x in part.strip().split("/"))
        except ValueError:
            raise ValueError(
                f"{part.strip()!r} is not <window seconds>/<bucket seconds>, e.g. 300/5"
            ) from None
        out.append(Horizon(seconds, bucket))
    if not out:
        raise ValueError("at least one horizon is needed")
    return tuple(out)
