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

__all__ = ["load_state", "zero_new_blocks"]


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
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    new_prefixes = tuple(f"core.joint.{i}." for i in range(old_joint, cfg.n_joint))
    if unexpected or any(not key.startswith(new_prefixes) for key in missing):
        raise TrainingError(f"{source}: its weights do not match a model with fewer joint blocks")
    zero_new_blocks(net, old_joint)
    return {"n_joint": [old_joint, cfg.n_joint]}


def zero_new_blocks(net: NormalizedModel, first: int) -> None:
    """Make the joint blocks from index ``first`` on the identity: zero their attention and MLP output projections
    (weights and biases); their other weights keep the random initialisation, so that gradients reach them."""
    with torch.no_grad():
        for block in list(net.core.joint)[first:]:
            for layer in (block.attn.out, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
