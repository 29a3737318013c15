"""Cross-transformer models for diffusion-tensor estimation (one readable file).

Two kinds share one backbone:

- ``sequence`` (single-state anisotropic tracks): one answer per track,
  ``(D1, D2, sin 2theta, cos 2theta)``.
- ``pointwise`` (binding/unbinding, two isotropic states): one answer per frame.

Data flow of :class:`CrossTransformer` for a batch of ``N`` tracks of ``T`` frames::

    patches (N, T, P, P) --ResidualCNN-->  image tokens (N, T, E)  + modality embedding A
    displ.  (N, T, 2)    --2-layer MLP-->  displ. tokens (N, T, E)  + modality embedding B
    level 1: A attends to B, B attends to A (cross-attention blocks),
             then self-attention blocks within each modality
             (sequence kind: a class token per modality; pointwise kind: RoPE positions)
    level 2: self-attention over the concatenation [A; B]
             (sequence kind: class token alpha*zA + (1-alpha)*zB, alpha = sigmoid(param))
    head:    sequence -> MLP(class token); pointwise -> MLP(concat(A_t, B_t)) per frame

Ablations (``ModelConfig.modalities = "image"`` or ``"displacement"``): one token stream,
the other encoder absent and its input ignored; the stream passes ``n_cross + n_self +
n_joint`` self-attention blocks (the same depth) before the same head.

Raw outputs are ``(log D1, log D2, sin 2theta, cos 2theta)`` with D in px^2/frame and
``D1 >= D2`` by construction (``log D2 = log D1 - softplus(.)``); the angle pair is
normalised to the unit circle by the exported wrapper.

:class:`NormalizedModel` is what is exported: it takes raw photo-electron patches and
pixel displacements, normalises them so that camera gain/offset and the photon count do
not change the answer, and returns D in **px^2/frame** (convert to um^2/s with
``Acquisition.diffusion_to_um2_s``). Every module here compiles with ``torch.jit.script``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MODALITIES

__all__ = [
    "ModelConfig",
    "CrossTransformer",
    "NormalizedModel",
    "build_model",
    "count_parameters",
    "MODALITIES",
]


@dataclass
class ModelConfig:
    """Hyper-parameters of a :class:`CrossTransformer` (defaults: the size of the bundled models).

    Why this size (measured on the 2-core CPU machine): the published model (E 64, hidden
    128, 6 layers, ~900k parameters) would train ~3x slower than this one; here E = 64, 4
    heads, MLP 128, 1 cross + 1 self block per modality and 2 joint blocks (6 blocks, as
    published) but a lighter CNN (8 then 16 channels), ~266k parameters. The CNN dominates
    the cost: (16, 32) channels trained at 169 samples/s, (12, 24) at 220 and (8, 16) at 311
    (2 threads, batch 64, same load), so (8, 16) was taken; the bundled models trained at
    250-290 samples/s on one thread each. On the seed-aniso/-binding/-twostate test sets they
    beat the published cross-transformer MAE figures (benchmarks/reports/accuracy.md), so
    the smaller size costs no D accuracy measured against those figures. The output kind of
    each motion model is in :data:`~napari_spt_diffusion.simulation.motion_models.MOTION_MODELS`.

    Attributes
    ----------
    kind
        ``"sequence"`` (one answer per track) or ``"pointwise"`` (one per frame).
    patch_size
        Side of the square image patch (px), odd.
    embed_dim
        Token width ``E``.
    n_heads
        Attention heads (``embed_dim`` must be divisible by it; the head width must be even
        for RoPE).
    mlp_hidden
        Hidden width of the feed-forward part of each transformer block.
    n_cross, n_self, n_joint
        Cross-attention blocks and self-attention blocks per modality in level 1, and
        self-attention blocks over the concatenation in level 2.
    cnn_channels
        Channels of the two stages of the residual CNN (11x11 then 6x6).
    head_hidden
        Hidden width of the 2-layer output MLP.
    use_rope
        Rotary position embeddings in every attention (always for pointwise models).
    dropout
        Dropout in attention outputs and MLPs (0 disables it).
    max_frames, min_frames
        Longest track the model was trained on and the shortest it accepts.
    displacement_scale_px
        Displacements are divided by this before the MLP (fixed, not learned).
    patch_scale
        Normalised patches are ``(patch - median) / photons * patch_scale``.
    modalities
        ``"both"`` (the cross-transformer), or ``"image"`` / ``"displacement"``: an
        ablation with one token stream only, the absent encoder not built and its input
        ignored; the stream goes through ``n_cross + n_self + n_joint`` self-attention
        blocks (the depth of the two-modality model) before the head.
    """

    kind: str = "sequence"
    patch_size: int = 11
    embed_dim: int = 64
    n_heads: int = 4
    mlp_hidden: int = 128
    n_cross: int = 1
    n_self: int = 1
    n_joint: int = 2
    cnn_channels: tuple[int, int] = (8, 16)
    head_hidden: int = 128
    use_rope: bool = True
    dropout: float = 0.0
    max_frames: int = 30
    min_frames: int = 5
    displacement_scale_px: float = 2.0
    patch_scale: float = 10.0
    modalities: str = "both"

    def __post_init__(self) -> None:
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")
        if self.kind not in ("sequence", "pointwise"):
            raise ValueError(f"kind must be 'sequence' or 'pointwise', got {self.kind!r}")
        if self.embed_dim % self.n_heads or (self.embed_dim // self.n_heads) % 2:
            raise ValueError("embed_dim / n_heads must be an even integer")
        if self.patch_size % 2 != 1 or self.patch_size < 5:
            raise ValueError(f"patch_size must be odd and >= 5, got {self.patch_size}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError("need 1 <= min_frames <= max_frames")
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields."""
        d = asdict(self)
        d["cnn_channels"] = list(self.cnn_channels)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; fields missing from ``values`` (older cards) take their defaults."""
        values = dict(values)
        if "cnn_channels" in values:
            values["cnn_channels"] = tuple(values["cnn_channels"])
        return cls(**values)


# ----------------------------------------------------------------------------- encoders
class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch-free (group) normalisation and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(1, channels)
        self.norm2 = nn.GroupNorm(1, channels)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(x + h)


class PatchEncoder(nn.Module):
    """Small residual CNN: ``(B, 1, P, P)`` patch -> ``(B, E)`` image token.

    Stem conv at full resolution (keeps the 1-px scale of the PSF and of motion blur),
    a stride-2 conv to ``ceil(P/2)`` pixels, one residual block there, then a linear
    map of the flattened feature map (keeps where the light is, unlike global pooling),
    plus a linear map of the raw pixels (moments of the spot are linear in the image).
    """

    def __init__(self, patch_size: int, channels: tuple[int, int], embed_dim: int) -> None:
        super().__init__()
        c1, c2 = channels
        self.stem = nn.Conv2d(1, c1, 3, padding=1)
        self.stem_norm = nn.GroupNorm(1, c1)
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.down_norm = nn.GroupNorm(1, c2)
        self.block = ResidualBlock(c2)
        side = (patch_size + 1) // 2
        self.proj = nn.Linear(c2 * side * side, embed_dim)
        # linear path from the raw normalised pixels: intensity moments (centroid, spread,
        # orientation of the blur) are linear in the image, so they reach the token directly
        self.skip = nn.Linear(patch_size * patch_size, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(x.flatten(1))
        x = F.relu(self.stem_norm(self.stem(x)))
        x = F.relu(self.down_norm(self.down(x)))
        x = self.block(x)
        return self.proj(x.flatten(1)) + skip


class DisplacementEncoder(nn.Module):
    """2-layer MLP of one normalised displacement ``(..., 2)`` -> ``(..., E)`` token.

    The MLP sees ``(dy, dx, dy^2, dx^2, dy dx)``: the quadratic terms are the per-frame
    contributions to the displacement covariance, whose average *is* the classical
    tensor estimate, so attention can pool them directly instead of having to learn
    products of two inputs first (measured: it speeds up learning of the angle).
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, embed_dim)
        self.fc2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, d: Tensor) -> Tensor:
        dy = d[..., 0:1]
        dx = d[..., 1:2]
        features = torch.cat([dy, dx, dy * dy, dx * dx, dy * dx], dim=-1)
        return self.fc2(F.gelu(self.fc1(features)))


# ---------------------------------------------------------------------------- attention
def rope_tables(positions: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables of rotary embeddings for ``positions`` ``(L,)`` -> ``(L, head_dim)``."""
    half = head_dim // 2
    inv_freq = torch.pow(
        torch.tensor(10000.0, device=positions.device),
        -torch.arange(half, device=positions.device, dtype=torch.float32) / half,
    )
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``(N, H, L, hd)`` by the tables ``(L, hd)`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Multi-head attention with optional RoPE and a key padding mask.

    Queries come from ``x`` ``(N, Lq, E)``, keys and values from ``context`` ``(N, Lk, E)``
    (``context is x`` for self-attention). ``key_valid`` ``(N, Lk)`` is True for real tokens.
    """

    def __init__(self, embed_dim: int, n_heads: int, use_rope: bool, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = embed_dim // n_heads
        self.use_rope = use_rope
        self.dropout = dropout
        self.q = nn.Linear(embed_dim, embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, context: Tensor, q_pos: Tensor, k_pos: Tensor, key_valid: Tensor) -> Tensor:
        n, lq, e = x.shape
        lk = context.shape[1]
        q = self.q(x).view(n, lq, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(context).split(e, dim=2)
        k = k.reshape(n, lk, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(n, lk, self.n_heads, self.head_dim).transpose(1, 2)
        if self.use_rope:
            cq, sq = rope_tables(q_pos, self.head_dim)
            ck, sk = rope_tables(k_pos, self.head_dim)
            q = apply_rope(q, cq, sq)
            k = apply_rope(k, ck, sk)
        mask = key_valid[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(n, lq, e)
        return self.out(y)


class MLP(nn.Module):
    """Feed-forward part of a transformer block."""

    def __init__(self, embed_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block; cross-attention when ``context`` differs from ``x``."""

    def __init__(self, cfg: ModelConfig, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.norm_q = nn.LayerNorm(cfg.embed_dim)
        self.norm_kv = nn.LayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg.embed_dim, cfg.n_heads, cfg.use_rope, cfg.dropout)
        self.norm_mlp = nn.LayerNorm(cfg.embed_dim)
        self.mlp = MLP(cfg.embed_dim, cfg.mlp_hidden, cfg.dropout)

    def forward(self, x: Tensor, context: Tensor, q_pos: Tensor, k_pos: Tensor, key_valid: Tensor) -> Tensor:
        h = self.norm_q(x)
        c = self.norm_kv(context) if self.cross else h
        x = x + self.attn(h, c, q_pos, k_pos, key_valid)
        return x + self.mlp(self.norm_mlp(x))


# ------------------------------------------------------------------------------- model
class CrossTransformer(nn.Module):
    """The two-level cross-transformer on normalised inputs.

    ``forward(patches, displacements, valid)`` with ``patches`` ``(N, T, P, P)`` (normalised),
    ``displacements`` ``(N, T, 2)`` (normalised), ``valid`` ``(N, T)`` bool (False = padding)
    returns ``(N, 4)`` (sequence) or ``(N, T, 4)`` (pointwise): ``log D1, log D2, sin 2theta,
    cos 2theta`` with D in px^2/frame.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        e = cfg.embed_dim
        self.is_sequence = cfg.kind == "sequence"
        self.patch_size = cfg.patch_size
        self.modalities = cfg.modalities
        self.use_image = cfg.modalities in ("both", "image")
        self.use_displacement = cfg.modalities in ("both", "displacement")
        both = cfg.modalities == "both"
        # an absent modality keeps its attribute names (TorchScript compiles every branch)
        # but has no weights: an Identity encoder and empty parameters
        self.image_encoder: nn.Module = (
            PatchEncoder(cfg.patch_size, cfg.cnn_channels, e) if self.use_image else nn.Identity()
        )
        self.displacement_encoder: nn.Module = DisplacementEncoder(e) if self.use_displacement else nn.Identity()
        self.modality_image = nn.Parameter(torch.zeros(e if self.use_image else 0))
        self.modality_displacement = nn.Parameter(torch.zeros(e if self.use_displacement else 0))
        self.cls_image = nn.Parameter(torch.zeros(e if self.use_image else 0))
        self.cls_displacement = nn.Parameter(torch.zeros(e if self.use_displacement else 0))
        self.alpha_logit = nn.Parameter(torch.zeros(1 if both else 0))
        n_cross = cfg.n_cross if both else 0
        # single modality: its stream takes the cross blocks' place as self-attention blocks
        n_first = cfg.n_self if both else cfg.n_cross + cfg.n_self
        self.cross_image = nn.ModuleList([Block(cfg, cross=True) for _ in range(n_cross)])
        self.cross_displacement = nn.ModuleList([Block(cfg, cross=True) for _ in range(n_cross)])
        self.self_image = nn.ModuleList([Block(cfg, cross=False) for _ in range(n_first if self.use_image else 0)])
        self.self_displacement = nn.ModuleList(
            [Block(cfg, cross=False) for _ in range(n_first if self.use_displacement else 0)]
        )
        self.joint = nn.ModuleList([Block(cfg, cross=False) for _ in range(cfg.n_joint)])
        self.final_norm = nn.LayerNorm(e)
        head_in = e if (self.is_sequence or not both) else 2 * e
        self.head = nn.Sequential(nn.Linear(head_in, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, 4))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.modality_image, self.modality_displacement, self.cls_image, self.cls_displacement):
            if p.numel():
                nn.init.trunc_normal_(p, std=0.02)
        last = self.head[2]
        assert isinstance(last, nn.Linear)
        # small output weights: start near D1 ~ 1 px^2/frame, D1/D2 ~ 2 (softplus(0) = 0.69)
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

    def alpha(self) -> Tensor:
        """Weight of the image class token in the level-2 class token (0..1)."""
        return torch.sigmoid(self.alpha_logit)

    def forward(self, patches: Tensor, displacements: Tensor, valid: Tensor) -> Tensor:
        if self.use_image and self.use_displacement:
            return self._forward_both(patches, displacements, valid)
        return self._forward_single(patches, displacements, valid)

    def _positions(self, t: int, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Token positions ``(L,)`` and key mask ``(N, L)``; sequence models: class token at 0, frames at 1..T."""
        n = valid.shape[0]
        pos = torch.arange(t, device=valid.device, dtype=torch.float32)
        if self.is_sequence:
            pos = torch.cat([torch.zeros(1, device=pos.device), pos + 1.0])
            key_valid = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=valid.device), valid], dim=1)
            return pos, key_valid
        return pos, valid

    def _forward_both(self, patches: Tensor, displacements: Tensor, valid: Tensor) -> Tensor:
        n, t = valid.shape
        p = self.patch_size
        img = self.image_encoder(patches.reshape(n * t, 1, p, p)).view(n, t, -1) + self.modality_image
        dsp = self.displacement_encoder(displacements) + self.modality_displacement
        pos, key_valid = self._positions(t, valid)
        if self.is_sequence:
            img = torch.cat([self.cls_image.expand(n, 1, -1), img], dim=1)
            dsp = torch.cat([self.cls_displacement.expand(n, 1, -1), dsp], dim=1)

        # level 1: cross-attention (both directions from the same inputs), then self-attention
        for blk_i, blk_d in zip(self.cross_image, self.cross_displacement):
            img, dsp = (blk_i(img, dsp, pos, pos, key_valid), blk_d(dsp, img, pos, pos, key_valid))
        for blk in self.self_image:
            img = blk(img, img, pos, pos, key_valid)
        for blk in self.self_displacement:
            dsp = blk(dsp, dsp, pos, pos, key_valid)

        # level 2: one transformer over the concatenation
        if self.is_sequence:
            a = self.alpha()
            cls = a * img[:, :1] + (1.0 - a) * dsp[:, :1]
            x = torch.cat([cls, img[:, 1:], dsp[:, 1:]], dim=1)
            jpos = torch.cat([pos[:1], pos[1:], pos[1:]])
            jvalid = torch.cat([key_valid[:, :1], valid, valid], dim=1)
        else:
            x = torch.cat([img, dsp], dim=1)
            jpos = torch.cat([pos, pos])
            jvalid = torch.cat([valid, valid], dim=1)
        for blk in self.joint:
            x = blk(x, x, jpos, jpos, jvalid)
        x = self.final_norm(x)

        if self.is_sequence:
            raw = self.head(x[:, 0])
        else:
            raw = self.head(torch.cat([x[:, :t], x[:, t:]], dim=-1))
        return _constrain(raw)

    def _forward_single(self, patches: Tensor, displacements: Tensor, valid: Tensor) -> Tensor:
        """One token stream (ablation): encoder, ``n_cross + n_self`` then ``n_joint`` self-attention blocks, head."""
        n, t = valid.shape
        p = self.patch_size
        if self.use_image:
            x = self.image_encoder(patches.reshape(n * t, 1, p, p)).view(n, t, -1) + self.modality_image
            cls_token = self.cls_image
        else:
            x = self.displacement_encoder(displacements) + self.modality_displacement
            cls_token = self.cls_displacement
        pos, key_valid = self._positions(t, valid)
        if self.is_sequence:
            x = torch.cat([cls_token.expand(n, 1, -1), x], dim=1)
        for blk in self.self_image:  # the absent modality's list is empty
            x = blk(x, x, pos, pos, key_valid)
        for blk in self.self_displacement:
            x = blk(x, x, pos, pos, key_valid)
        for blk in self.joint:
            x = blk(x, x, pos, pos, key_valid)
        x = self.final_norm(x)
        raw = self.head(x[:, 0]) if self.is_sequence else self.head(x)
        return _constrain(raw)


def _constrain(raw: Tensor) -> Tensor:
    """``(..., 4)`` raw head output -> ``log D1 >= log D2`` and the raw angle vector.

    The angle pair is left unnormalised here: the training loss regresses it on the unit
    vector ``(sin 2theta, cos 2theta)`` (normalising first would make the gradient blow up
    where the vector is short); :meth:`NormalizedModel.forward` normalises it.
    """
    log_d1 = raw[..., 0:1]
    log_d2 = log_d1 - F.softplus(raw[..., 1:2])
    return torch.cat([log_d1, log_d2, raw[..., 2:4]], dim=-1)


def _unit_angle(ang: Tensor) -> Tensor:
    """Normalise ``(..., 2)`` angle vectors to the unit circle."""
    return ang / torch.sqrt((ang * ang).sum(-1, keepdim=True)).clamp(min=1e-12)


# ------------------------------------------------------------------- exported wrapper
class NormalizedModel(nn.Module):
    """Input normalisation + :class:`CrossTransformer` + output in px^2/frame.

    Parameters of ``forward``
    -------------------------
    patches_photons : (N, T, P, P) float
        Patches in photo-electrons (or any affine transform of them: an offset and a gain
        cancel out), centred on the localized positions.
    displacements_px : (N, T, 2) float
        Frame-to-frame displacements ``(dy, dx)`` in px; row 0 is ignored (set to 0).
    valid : (N, T) bool
        True for real frames, False for padding at the end of shorter tracks.

    Returns
    -------
    (N, 4) for sequence models, (N, T, 4) for pointwise models:
    ``D1_px2_frame, D2_px2_frame, sin 2theta, cos 2theta`` (D1 >= D2; theta of the D1 axis
    from +x towards +y). Padded frames of pointwise outputs are meaningless.

    Normalisation: per frame, the median pixel is subtracted (background and camera offset);
    the patch is divided by the track's mean background-subtracted photon sum (gain and
    brightness) and multiplied by ``patch_scale``. Displacements are divided by
    ``displacement_scale_px``. Non-finite values of padded frames are replaced by 0.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.core = CrossTransformer(cfg)
        self.patch_scale = float(cfg.patch_scale)
        self.displacement_scale_px = float(cfg.displacement_scale_px)
        self.min_frames = int(cfg.min_frames)
        self.max_frames = int(cfg.max_frames)
        self.is_sequence = cfg.kind == "sequence"

    def normalize(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised ``(patches, displacements)`` as the core network sees them."""
        n, t = valid.shape
        vf = valid.to(patches_photons.dtype)
        zero = torch.zeros_like(patches_photons)
        patches = torch.where(valid[:, :, None, None], patches_photons, zero)
        flat = patches.reshape(n, t, -1)
        med = flat.median(dim=-1).values
        flat = flat - med[:, :, None]
        photons = flat.sum(-1) * vf
        scale = photons.sum(1) / vf.sum(1).clamp(min=1.0)
        scale = scale.clamp(min=1e-3)
        flat = flat / scale[:, None, None] * self.patch_scale
        patches = (flat * vf[:, :, None]).reshape(patches_photons.shape)
        d = torch.where(valid[:, :, None], displacements_px, torch.zeros_like(displacements_px))
        d = torch.cat([torch.zeros_like(d[:, :1]), d[:, 1:]], dim=1) / self.displacement_scale_px
        return patches, d

    def forward(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        patches, d = self.normalize(patches_photons, displacements_px, valid)
        out = self.core(patches, d, valid)
        return torch.cat([out[..., :2].exp(), _unit_angle(out[..., 2:])], dim=-1)

    @torch.jit.export
    def forward_log(self, patches_photons: Tensor, displacements_px: Tensor, valid: Tensor) -> Tensor:
        """Like :meth:`forward` but with ``log D`` (px^2/frame) in the first two columns and
        the angle vector not normalised (its direction is the answer, its length < 1 says
        how sure the model is)."""
        patches, d = self.normalize(patches_photons, displacements_px, valid)
        return self.core(patches, d, valid)


def build_model(cfg: ModelConfig) -> NormalizedModel:
    """A freshly initialised exportable model for ``cfg``."""
    return NormalizedModel(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
