"""Warm starts into a deeper model: a state with fewer joint blocks grows into one with more.

A model's capacity can be raised without losing what its training stages learned: the level-2 transformer
(``CrossTransformer.joint``, ``NormalizedModel.core``) is a stack of pre-norm residual blocks, so a block whose
attention output and MLP output projections are zero adds nothing to its input, and blocks appended after the
learned ones leave the model's output exactly as it was. Training then moves the new blocks away from the identity
only as far as the loss gains from it.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import TrainingError
from .models import ModelConfig, NormalizedModel

__all__ = ["load_state", "stored_joint_blocks", "zero_new_blocks"]


def load_state(net: NormalizedModel, state_dict: dict[str, torch.Tensor], stored: dict[str, Any] | None,
               cfg: ModelConfig, source: str) -> dict[str, Any] | None:
    """Load ``state_dict`` (trained with the configuration ``stored``) into ``net`` (configuration ``cfg``).

    The same configuration: loaded as it is, ``None`` returned. The same but for fewer joint blocks
    (``n_joint``): the learned blocks are loaded, the added ones start as the identity (:func:`zero_new_blocks`),
    and ``{"n_joint": [old, new]}`` is returned for the card. Anything else raises :class:`TrainingError` naming
    ``source``.
    """
    wanted = cfg.to_dict()
    if stored == wanted:
        net.load_state_dict(state_dict)
        return None
    old_joint = (stored or {}).get("n_joint")
    same_but_depth = stored is not None and {k: v for k, v in stored.items() if k != "n_joint"} == {
        k: v for k, v in wanted.items() if k != "n_joint"}
    if not same_but_depth or not isinstance(old_joint, int) or old_joint >= cfg.n_joint:
        raise TrainingError(f"{source} was trained with another model configuration; warm start needs the same size "
                            "and kind (or the same with fewer joint blocks, which then grow)")
    new_prefixes = tuple(f"core.joint.{i}." for i in range(old_joint, cfg.n_joint))
    added = {key for key in net.state_dict() if key.startswith(new_prefixes)}
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    if unexpected or set(missing) != added:  # exactly the added blocks' weights, no more and no fewer
        raise TrainingError(f"{source}: its weights do not match a model with fewer joint blocks")
    zero_new_blocks(net, old_joint)
    return {"n_joint": [old_joint, cfg.n_joint]}


def stored_joint_blocks(init_state: str | None, bundled: dict[str, Any] | None = None) -> int | None:
    """Joint blocks of the model a warm start begins from (``n_joint`` of its stored configuration), or ``None``
    where there is no warm start or it cannot be read (the loader then says why). ``bundled``: the card of a
    bundled model named ``init_state``, if it is one."""
    if init_state is None:
        return None
    if bundled is not None:
        value = (bundled.get("model_config") or {}).get("n_joint")
        return value if isinstance(value, int) else None
    try:
        ckpt = torch.load(init_state, map_location="cpu", weights_only=True)
    except Exception:  # any unreadable state: the loader reports it
        return None
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    value = stored.get("n_joint") if isinstance(stored, dict) else None
    return value if isinstance(value, int) else None


def zero_new_blocks(net: NormalizedModel, first: int) -> None:
    """Make the joint blocks from index ``first`` on the identity: zero their attention and MLP output projections
    (weights and biases). Their other weights keep the random initialisation: it gives the zeroed projections
    non-zero gradients, and once those move, the rest of the block learns too."""
    with torch.no_grad():
        for block in list(net.core.joint)[first:]:
            for layer in (block.attn.out, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
