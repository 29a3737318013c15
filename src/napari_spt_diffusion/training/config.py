"""Every parameter of a training run in one dataclass, and the ``train`` arguments built from it.

:class:`TrainConfig` is what :func:`~napari_spt_diffusion.training.loop.train_model` takes;
it validates itself on construction, reads and writes JSON (each run folder keeps its
``train_config.json``), and its fields *are* the command line: :func:`add_train_arguments`
makes one option per field (name, type, choices and help from the field and its metadata)
for ``spt-diffusion train`` and ``python -m napari_spt_diffusion.training`` alike, and
:func:`config_from_args` turns the parsed options back into a :class:`TrainConfig`.

No torch here: the command line's parser imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from ..io._atomic import atomic_write_json
from ..simulation.motion_models import benchmark_seeds, motion_model_names
from .acquisition_ranges import RANGES
from .motion_priors import PRIORS, get_prior

__all__ = [
    "TrainingError",
    "TrainConfig",
    "MODALITIES",
    "CONFIG_FILE_NAME",
    "add_train_arguments",
    "config_from_args",
]

#: Token streams a model can use (``ModelConfig.modalities``): both, or one for ablations.
MODALITIES = ("both", "image", "displacement")
#: Name of the configuration file written into every run folder.
CONFIG_FILE_NAME = "train_config.json"

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class TrainingError(SptDiffusionError, ValueError):
    """Bad training arguments or an unusable dataset."""


def _option(help: str, *flags: str, cli: bool = True,
            choices: Callable[[], tuple[str, ...]] | tuple[str, ...] | None = None,
            metavar: str | None = None, required: bool = False) -> dict[str, Any]:
    """Field metadata read by :func:`add_train_arguments` (``flags`` default: ``--field-name``)."""
    return {"help": help, "flags": flags, "cli": cli, "choices": choices, "metavar": metavar, "required": required}


@dataclass
class TrainConfig:
    """All parameters of one training run (validated on construction).

    Each field is also a ``train`` option (see :func:`add_train_arguments`); its help text
    is in the field's metadata. Units: ``lr`` per step, ``max_time_s`` seconds,
    ``psf_sigma_nm`` nanometres, ``photons`` photo-electrons per frame.
    """

    model: str = field(metadata=_option("motion model to train", choices=motion_model_names, required=True))
    n_samples: int = field(default=20000, metadata=_option(
        "training tracks, generated once through the tracking path", "--samples", "--n-samples"))
    val_samples: int = field(default=1000, metadata=_option("held-out validation tracks (seed + 1)"))
    epochs: int = field(default=10, metadata=_option("passes over the training set"))
    batch_size: int = field(default=64, metadata=_option("tracks per optimiser step"))
    lr: float = field(default=2e-3, metadata=_option("peak AdamW learning rate"))
    weight_decay: float = field(default=0.05, metadata=_option("AdamW weight decay of the weight matrices"))
    warmup_fraction: float = field(default=0.03, metadata=_option(
        "share of the steps with a linear warm-up, before the cosine decay to 5 %% of lr"))
    angle_weight: float = field(default=4.0, metadata=_option("weight of the angle term of the loss"))
    trace_weight: float = field(default=0.0, metadata=_option(
        "weight of an L1 term on log (D1 + D2), so that the mean diffusivity is the posterior median "
        "(training/loop.py docstring; default 0: none)"))
    augment: bool = field(default=True, metadata=_option(
        "no random grid symmetries (flips, transposition) of the training tracks", "--no-augment"))
    n_frames: int = field(default=30, metadata=_option("frames per training track (the model's maximum length)"))
    seed: int = field(default=0, metadata=_option(
        "seeds the data (validation: seed + 1), the initialisation, the batch order and the augmentation"))
    neighbour_fraction: float = field(default=0.0, metadata=_option(
        "share of training tracks with a second particle 1.5-6 px away, so the model learns crowded scenes",
        metavar="F"))
    acquisition_range: str | None = field(default=None, metadata=_option(
        "simulate every chunk of 250 training tracks at its own acquisition drawn from this named range "
        "(PSF width, photons, background, read noise, exposure: training.acquisition_ranges; "
        "default: one acquisition)", choices=lambda: tuple(RANGES)))
    motion_prior: str | None = field(default=None, metadata=_option(
        "aniso only: draw a share of the training tracks' D1 and D2/D1 from this named prior (broad: half of them "
        "with D1 log-uniform over 0.005-6 um^2/s, 30 %% of those isotropic; training.motion_priors; "
        "default: the motion model's own)", choices=lambda: tuple(PRIORS)))
    psf_sigma_nm: float | None = field(default=None, metadata=_option(
        "PSF sigma (nm) of the simulated microscope (default: the standard acquisition's)"))
    photons: float | None = field(default=None, metadata=_option(
        "signal photons per frame of the simulated data (default: the standard acquisition's)"))
    acquisition: dict[str, Any] | None = field(default=None, metadata=_option(
        "acquisition of the simulated data (Acquisition.to_dict()) before psf_sigma_nm and photons apply; "
        "None: the standard one", cli=False))
    modalities: str | None = field(default=None, metadata=_option(
        "token streams of the model (single-modality ablations; default: both)", choices=MODALITIES))
    joint_blocks: int | None = field(default=None, metadata=_option(
        "self-attention blocks of the level-2 transformer (default: those of the --init-state model, else 2, the "
        "bundled size); with --init-state of a model with fewer, it grows, the added blocks starting as the identity "
        "(training.growth)", metavar="N"))
    model_config: dict[str, Any] | None = field(default=None, metadata=_option(
        "ModelConfig fields replacing the standard size (kind, max_frames and patch_size follow the data)",
        cli=False))
    device: str = field(default="auto", metadata=_option("auto (CUDA when present), cpu, cuda or cuda:N"))
    threads: int | None = field(default=None, metadata=_option("torch CPU threads (default: torch's choice)"))
    max_time_s: float | None = field(default=None, metadata=_option(
        "stop after the epoch that crosses this wall time (s)"))
    out_dir: str | None = field(default=None, metadata=_option(
        "run folder (default: runs/MODEL)", "--out", "--out-dir", metavar="DIR"))
    name: str | None = field(default=None, metadata=_option("checkpoint name (default: the model's)"))
    dataset_path: str | None = field(default=None, metadata=_option(
        ".npz cache of the generated training set (validation set beside it as *_val.npz)"))
    init_state: str | None = field(default=None, metadata=_option(
        "warm start from best_state.pt / last_state.pt of an earlier run of the same model and size, or from a "
        "bundled model by name (e.g. aniso)",
        metavar="STATE.pt"))

    def __post_init__(self) -> None:
        for name in ("out_dir", "dataset_path", "init_state"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        if isinstance(self.acquisition, Acquisition):
            self.acquisition = self.acquisition.to_dict()
        if self.model_config is not None and hasattr(self.model_config, "to_dict"):
            self.model_config = self.model_config.to_dict()
        self.validate()
        for f in dataclasses.fields(self):  # plain Python numbers of the field's type (numpy ones do not go to JSON)
            value = getattr(self, f.name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                setattr(self, f.name, _value_type(f)(value))

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first bad value."""
        names = motion_model_names()
        if self.model not in names:
            raise TrainingError(f"model must be one of {', '.join(names)}, got {self.model!r}")
        for name, low in (("n_samples", 1), ("val_samples", 1), ("epochs", 1), ("batch_size", 1), ("n_frames", 2),
                          ("seed", 0)):
            _check_int(name, getattr(self, name), low)
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        if self.joint_blocks is not None:
            _check_int("joint_blocks", self.joint_blocks, 1)
        forbidden = sorted(set(benchmark_seeds().values()))
        if self.seed in forbidden or self.seed + 1 in forbidden:
            raise TrainingError(f"seed {self.seed} collides with the benchmark test seeds {forbidden}")
        _check_number("lr", self.lr, 0.0, math.inf, low_open=True)
        _check_number("weight_decay", self.weight_decay, 0.0, math.inf)
        _check_number("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        _check_number("angle_weight", self.angle_weight, 0.0, math.inf)
        _check_number("trace_weight", self.trace_weight, 0.0, math.inf)
        _check_number("neighbour_fraction", self.neighbour_fraction, 0.0, 1.0)
        if self.acquisition_range is not None and self.acquisition_range not in RANGES:
            raise TrainingError(f"acquisition_range must be one of {', '.join(RANGES)}, got {self.acquisition_range!r}")
        if self.motion_prior is not None:
            try:
                get_prior(self.motion_prior)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            if self.model != "aniso":
                raise TrainingError(f"motion_prior applies to the aniso model only, not {self.model!r}")
        for name in ("psf_sigma_nm", "photons", "max_time_s"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), 0.0, math.inf, low_open=True)
        if not isinstance(self.augment, bool):
            raise TrainingError(f"augment must be true or false, got {self.augment!r}")
        if self.modalities is not None and self.modalities not in MODALITIES:
            raise TrainingError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise TrainingError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for name in ("acquisition", "model_config"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise TrainingError(f"{name} must be a dictionary of fields or None")
        if self.name is not None and (not self.name or Path(self.name).name != self.name):
            raise TrainingError(f"name must be a plain file stem, got {self.name!r}")
        self.training_acquisition()

    # ----------------------------------------------------------- derived values
    @property
    def run_folder(self) -> Path:
        """Folder of the run's outputs (``out_dir``, default ``runs/<model>``)."""
        return Path(self.out_dir if self.out_dir is not None else f"runs/{self.model}")

    @property
    def checkpoint_name(self) -> str:
        """File stem of the exported checkpoint (``name``, default the model's)."""
        return self.name or self.model

    def training_acquisition(self) -> Acquisition:
        """The acquisition the training data are simulated with."""
        changes = {name: value for name, value in (("psf_sigma_nm", self.psf_sigma_nm),
                                                    ("signal_photons", self.photons)) if value is not None}
        try:
            return Acquisition.from_dict({**Acquisition().to_dict(), **(self.acquisition or {}), **changes})
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"bad acquisition: {exc}") from None

    def to_argv(self) -> list[str]:
        """Options of ``python -m napari_spt_diffusion.training`` that make this configuration.

        Fields without an option (``acquisition``, ``model_config``) are left out: a run's
        ``train_config.json`` holds them.
        """
        argv: list[str] = []
        defaults = TrainConfig(model=self.model)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata["cli"] or (f.name != "model" and value == getattr(defaults, f.name)):
                continue
            flag = _flags(f)[0]
            argv += [flag] if f.type in (bool, "bool") else [flag, str(value)]
        return argv

    # ------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`TrainingError`."""
        if not isinstance(values, dict):
            raise TrainingError("a training configuration must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(f"unknown training setting(s): {', '.join(unknown)}")
        if "model" not in values:
            raise TrainingError("a training configuration needs a model")
        return cls(**values)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the configuration as JSON (all or nothing); returns the path."""
        out = Path(path)
        atomic_write_json(out, self.to_dict())
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a configuration written by :meth:`save`."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TrainingError(f"cannot read training configuration {path}: {exc}") from None
        return cls.from_dict(values)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise TrainingError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_number(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = f"> {low:g}" if low_open else f">= {low:g}"
        bounds += f" and <= {high:g}" if math.isfinite(high) else ""
        raise TrainingError(f"{name} must be a number {bounds}, got {value!r}")


# ---------------------------------------------------------------- arguments
def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    return f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)


def _value_type(f: dataclasses.Field) -> Callable[[str], Any]:
    text = str(f.type)
    return int if text.startswith("int") else float if text.startswith("float") else str


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per :class:`TrainConfig` field, plus ``--config FILE``, to ``parser``.

    Options that are not given stay out of the parsed namespace (so that ``--config``
    values are only replaced by what the command line sets); :func:`config_from_args`
    fills in the defaults. Choices are read from the registries when this runs.
    """
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"start from a {CONFIG_FILE_NAME} (options given here replace its values)")
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        default = None if f.default is dataclasses.MISSING else f.default
        if f.type in (bool, "bool"):
            parser.add_argument(*_flags(f), action="store_false", help=meta["help"], **kwargs)
            continue
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        if choices is not None:
            kwargs["choices"] = choices
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        text = meta["help"] + ("" if default is None else f" (default: {default})")
        if meta["required"]:
            text += " (required unless --config gives it)"
        parser.add_argument(*_flags(f), type=_value_type(f), help=text, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``train`` options (``--config`` file, then the options)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    path = getattr(args, "config", None)
    if path is not None:
        return TrainConfig.from_dict({**TrainConfig.load(path).to_dict(), **given})
    if "model" not in given:
        raise TrainingError("the following argument is required: --model")
    return TrainConfig(**given)
