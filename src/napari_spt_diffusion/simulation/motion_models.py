"""The registry of motion models: every list of models in the package derives from it.

A motion model is a physical kind of particle motion (``aniso``, ``binding``,
``twostate``) together with what the rest of the package needs to know about it: the
output kind of the network trained on it, its trajectory function (training and test
samples), its particle-state function (full-field movies), the seed of its benchmark
test set, and the words that describe it in menus and model cards. The command line
(``simulate --model``, ``train --model``), the training defaults, the movie simulator and
the napari menus read :data:`MOTION_MODELS` when they run.

Adding a motion model: write its ``simulate_*`` and ``particle_states_*`` functions in
:mod:`.trajectories` and add one :class:`MotionModel` to :data:`MOTION_MODELS` below.

The movie simulator also knows one mixture, :data:`MIXED` (``"mixed"``): a share
``binding_fraction`` of the particles of :data:`MIXED_PARTS` ``[0]``, the rest of
``[1]``. It is a movie option, not a motion model (no network is trained on it).

No torch and no tracking code here: this module is imported by the command line's
argument parser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .trajectories import (
    ParticleStates,
    SimulationError,
    Trajectories,
    particle_states_anisotropic,
    particle_states_binding,
    particle_states_two_state,
    simulate_anisotropic,
    simulate_binding,
    simulate_two_state,
)

__all__ = [
    "MotionModel",
    "MOTION_MODELS",
    "OUTPUT_KINDS",
    "MIXED",
    "MIXED_PARTS",
    "MIXED_LABEL",
    "get_motion_model",
    "motion_model_names",
    "movie_model_names",
    "movie_model_choices",
    "benchmark_seeds",
]

#: Output kinds of the networks: one answer per track, or one per frame.
OUTPUT_KINDS = ("sequence", "pointwise")


@dataclass(frozen=True)
class MotionModel:
    """One motion model and everything the package needs to know about it.

    Attributes
    ----------
    name
        Short name used on the command line, in files and in model cards (``"aniso"``).
    kind
        Output kind of the network trained on it: ``"sequence"`` (one tensor per track)
        or ``"pointwise"`` (one tensor per frame).
    label
        A few words for menus (``"single-state anisotropic"``).
    description
        One sentence for model cards: the physics and what the network answers.
    simulate
        Trajectory function of the protocol (training and test samples):
        ``simulate(n_tracks, n_frames, acquisition, rng, *, start_px=None) -> Trajectories``
        with ``start_px`` ``(N, 2)`` px.
    test_seed
        Generator seed of the model's benchmark test set (``docs/protocols.md``);
        training refuses it.
    particle_states
        Particle-state function of full-field movies, ``particle_states(n, lengths,
        acquisition, rng, options) -> ParticleStates`` (``lengths`` ``(N,)`` sub-steps per
        particle, ``options`` the movie's parameter ranges); ``None``: the model cannot
        appear in movies.
    movie_D_options
        Keys of the movie options that hold ``(low, high)`` ranges of this model's D
        (um^2/s); the largest ``high`` sets how far particles may come from outside the
        field (the movie's margin).
    """

    name: str
    kind: str
    label: str
    description: str
    simulate: Callable[..., Trajectories]
    test_seed: int
    particle_states: Callable[..., ParticleStates] | None = None
    movie_D_options: tuple[str, ...] = ("D1_range_um2_s",)

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise SimulationError(f"motion model {self.name!r}: kind must be one of {', '.join(OUTPUT_KINDS)}, "
                                  f"got {self.kind!r}")


#: Every motion model, by name, in menu order.
MOTION_MODELS: dict[str, MotionModel] = {
    m.name: m
    for m in (
        MotionModel(
            name="aniso",
            kind="sequence",
            label="single-state anisotropic",
            description="Single-state anisotropic diffusion: one 2-D tensor (D1 >= D2, theta) per track "
                        "(seed-aniso physics).",
            simulate=simulate_anisotropic,
            test_seed=2025,
            particle_states=particle_states_anisotropic,
        ),
        MotionModel(
            name="binding",
            kind="pointwise",
            label="binding / unbinding",
            description="Binding/unbinding (bound isotropic slow <-> free anisotropic fast): per-frame tensor "
                        "(seed-binding physics).",
            simulate=simulate_binding,
            test_seed=2026,
            particle_states=particle_states_binding,
            movie_D_options=("unbound_D1_range_um2_s", "bound_D_range_um2_s"),
        ),
        MotionModel(
            name="twostate",
            kind="pointwise",
            label="two-state isotropic",
            description="Two isotropic states with one switch: per-frame D (D1 ~ D2; theta meaningless) "
                        "(seed-twostate physics).",
            simulate=simulate_two_state,
            test_seed=2027,
            particle_states=particle_states_two_state,
        ),
    )
}

#: Name of the movie mixture and its two parts (``binding_fraction`` of ``[0]``, the rest ``[1]``).
MIXED = "mixed"
MIXED_PARTS: tuple[str, str] = ("binding", "aniso")
MIXED_LABEL = "mixed (anisotropic + binding)"


def get_motion_model(name: str) -> MotionModel:
    """The registered motion model ``name``; :class:`SimulationError` naming the known ones otherwise."""
    try:
        return MOTION_MODELS[name]
    except (KeyError, TypeError):
        raise SimulationError(f"model must be one of {', '.join(MOTION_MODELS)}, got {name!r}") from None


def motion_model_names() -> tuple[str, ...]:
    """Names of every registered motion model, in registry order."""
    return tuple(MOTION_MODELS)


def movie_model_names() -> tuple[str, ...]:
    """Values of ``simulate_movie(model=...)``: the models that can appear in movies, then ``"mixed"``."""
    names = tuple(name for name, m in MOTION_MODELS.items() if m.particle_states is not None)
    return names + ((MIXED,) if all(part in names for part in MIXED_PARTS) else ())


def movie_model_choices() -> tuple[tuple[str, str], ...]:
    """``(label, name)`` pairs of :func:`movie_model_names` for menus."""
    return tuple((MOTION_MODELS[n].label if n in MOTION_MODELS else MIXED_LABEL, n) for n in movie_model_names())


def benchmark_seeds() -> dict[str, int]:
    """Seed of each motion model's benchmark test set (training never uses these)."""
    return {name: m.test_seed for name, m in MOTION_MODELS.items()}
