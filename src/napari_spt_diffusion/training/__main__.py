"""``python -m napari_spt_diffusion.training``: train, bundle a run, or re-export checkpoints.

* ``... --model aniso [options]`` trains (the options of ``spt-diffusion train``, built
  from :class:`~.config.TrainConfig`) and prints progress lines and the exported path;
* ``... --bundle RUN_DIR [--name NAME] [--dest DIR] [--lineage FILE]`` copies a finished
  run's checkpoint into the package's ``checkpoints/`` (:func:`~.card.bundle_run`);
* ``... --reexport NAME_OR_PT ... [--reason TEXT]`` re-scripts checkpoints with the current
  model code (:func:`~.card.reexport_checkpoint`);
* ``... --pin`` pins the sha256 of the bundled checkpoints in package code
  (:func:`~.card.pin_bundled_checksums`; bundling and re-exporting into ``checkpoints/`` do it).

Errors a user can fix print one ``error: ...`` line and return 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..errors import SptDiffusionError
from .config import add_train_arguments, config_from_args

__all__ = ["main", "COMMAND"]

#: How the module is run; the card records it before the arguments.
COMMAND = "python -m napari_spt_diffusion.training"


def _reexport(argv: list[str]) -> int:
    from .card import reexport_checkpoint

    parser = argparse.ArgumentParser(prog=COMMAND,
                                     description="Re-export a checkpoint's weights with the current model code.")
    parser.add_argument("--reexport", required=True, nargs="+", help="bundled model names or .pt paths")
    parser.add_argument("--reason", default="re-exported with the current model code")
    args = parser.parse_args(argv)
    for item in args.reexport:
        print(f"re-exported {reexport_checkpoint(item, reason=args.reason)}")
    return 0


def _bundle(argv: list[str]) -> int:
    from .card import bundle_run

    parser = argparse.ArgumentParser(prog=COMMAND, description="Bundle a finished training run into checkpoints/.")
    parser.add_argument("--bundle", required=True, help="run folder of train_model")
    parser.add_argument("--name", default=None)
    parser.add_argument("--dest", default=None)
    parser.add_argument("--lineage", default=None,
                        help="JSON file: list of training stages (oldest first) to record in the card")
    args = parser.parse_args(argv)
    lineage = None
    if args.lineage is not None:
        try:
            lineage = json.loads(Path(args.lineage).read_text())
        except (OSError, ValueError) as exc:
            raise SptDiffusionError(f"cannot read lineage file {args.lineage}: {exc}") from None
    print(f"bundled {bundle_run(args.bundle, args.name, args.dest, lineage)}")
    return 0


def _pin(argv: list[str]) -> int:
    from .card import pin_bundled_checksums

    parser = argparse.ArgumentParser(prog=COMMAND, description="Pin the sha256 of the bundled checkpoints in package "
                                     "code (estimation/checkpoint_pins.py), each checked against its card first.")
    parser.add_argument("--pin", action="store_true", required=True)
    parser.parse_args(argv)
    for name, digest in pin_bundled_checksums().items():
        print(f"pinned {name}: {digest}")
    return 0


def _train(argv: list[str]) -> int:
    from .loop import train_model

    parser = argparse.ArgumentParser(prog=COMMAND, description="Train a cross-transformer model on simulated tracks.")
    config = config_from_args(add_train_arguments(parser).parse_args(argv))
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.time()
        if now - last[0] > 20 or fraction >= 1.0 or "val" in message:
            print(f"[{time.strftime('%H:%M:%S')}] {fraction:6.1%} {message}", flush=True)
            last[0] = now

    path = train_model(config, progress, command=f"{COMMAND} {shlex.join(argv)}".rstrip())
    print(f"exported {path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the module with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    commands = {"--reexport": _reexport, "--bundle": _bundle, "--pin": _pin}
    command = commands.get(args[0], _train) if args else _train
    try:
        return command(args)
    except SptDiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
