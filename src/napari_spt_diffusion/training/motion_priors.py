"""Priors of the training tracks' diffusion tensors beyond a motion model's own.

The ``aniso`` motion model draws ``D1`` uniformly from 0.05-6.00 um^2/s and ``D2 / D1``
uniformly from 0.1-1 (``simulation.trajectories``). A model trained on it alone has seen
few slow tracks, none slower than 0.05 um^2/s, and almost no isotropic one (``D2 = D1`` is
the edge of its prior), yet free, isotropic diffusion is what most users' movies hold, and
in PSF units (``estimation/psf_units.py``) a wide PSF makes every D smaller. On the NA 0.8
foreign-optics movie (``benchmarks/reports/foreign.md``) such a model read isotropic
tracks with ``D2 / D1`` of about 0.7 and particles slower than 0.15 um^2/s high.

A :class:`MotionPrior` replaces, for a share of the tracks, the model's draw by ``D1``
log-uniform over a wider range, with a share of those exactly isotropic. The rest are drawn
as the motion model draws them, so what a model knew is kept in its training set.

:data:`PRIORS` names the priors a ``TrainConfig`` can ask for (``motion_prior``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..simulation.trajectories import D1_GRID_UM2_S, D2_OVER_D1_RANGE

__all__ = ["MotionPrior", "PRIORS", "get_prior"]


@dataclass(frozen=True)
class MotionPrior:
    """Per-track ``D1`` and ``D2 / D1`` of ``aniso`` training tracks.

    Attributes
    ----------
    name
        Name in :data:`PRIORS`.
    broad_share
        Share of the tracks drawn from the broad prior (each track with this probability);
        the others as the ``aniso`` motion model draws them.
    d1_range_um2_s
        ``(low, high)`` um^2/s: the broad tracks' ``D1``, log-uniform.
    isotropic_share
        Share of the broad tracks with ``D2 = D1`` exactly; the others' ``D2 / D1`` uniform
        over the motion model's range (0.1-1).
    """

    name: str
    broad_share: float
    d1_range_um2_s: tuple[float, float]
    isotropic_share: float

    def draw(self, n: int, gen: np.random.Generator) -> dict[str, np.ndarray]:
        """``{"D1_um2_s": (n,), "D2_over_D1": (n,)}`` for ``simulate_anisotropic``."""
        d1 = gen.choice(D1_GRID_UM2_S, n).astype(float)
        ratio = gen.uniform(*D2_OVER_D1_RANGE, n)
        broad = gen.random(n) < self.broad_share
        low, high = (float(v) for v in self.d1_range_um2_s)
        d1_broad = np.exp(gen.uniform(np.log(low), np.log(high), n))
        isotropic = gen.random(n) < self.isotropic_share
        d1 = np.where(broad, d1_broad, d1)
        ratio = np.where(broad & isotropic, 1.0, ratio)
        return {"D1_um2_s": d1, "D2_over_D1": ratio}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for the dataset cache and the model card)."""
        out = asdict(self)
        out["d1_range_um2_s"] = list(self.d1_range_um2_s)
        return out


#: Named priors. ``broad``: half of the tracks with D1 log-uniform over 0.005-6 um^2/s
#: (a tenth of the motion model's lowest D1, and slow bound molecules), 30 % of those isotropic.
PRIORS: dict[str, MotionPrior] = {
    "broad": MotionPrior("broad", broad_share=0.5, d1_range_um2_s=(0.005, 6.0), isotropic_share=0.3),
}


def get_prior(name: str | None) -> MotionPrior | None:
    """The named prior (``None``: the motion model's own)."""
    if name is None:
        return None
    try:
        return PRIORS[name]
    except KeyError:
        raise ValueError(f"motion prior must be one of {', '.join(PRIORS)}, got {name!r}") from None
