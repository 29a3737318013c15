"""Floors of the foreign-optics scores: the classical estimate with perfect linking (bench_foreign).

How much of a case's per-frame error is the linking's (cuts, swaps, short pieces) and how much is
left with perfect tracks? Two references, both scored exactly as the tool's output
(``bench_foreign.score``) and both with the CVE tensor (``estimation.classical.cve_tensor_batch``,
the pipeline's classical estimator; (D1 + D2) / 2 per track):

* **oracle-linked**: the tool's own localizations (positions as reported), matched to the truth per
  frame (``match_frames``, 1.5 px) and linked by the true identity, one track per particle, with
  gaps where a particle was not matched; the CVE uses the acquisition the tool used (its blur
  coefficient). What the classical estimate could give with the tool's detection and localization
  and a linker that never swaps or cuts.
* **true positions**: the renderer's true positions, one track per particle (no localization error;
  they are the positions averaged over each exposure, so the motion blur's averaging is in them: the
  mean squared step of these tables is 1 - 2R = 0.67 x the unblurred one): the CVE's own sampling spread
  for these track lengths. It is the floor of the CVE, not of every estimator: one that knew the positions
  free of noise (the mean squared step alone) would spread less.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from _common import match_frames
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.classical import cve_tensor_batch


def cve_per_track(rows: pd.DataFrame, acquisition: Acquisition) -> pd.Series:
    """CVE (D1 + D2) / 2 (um^2/s) per ``track_id`` of ``rows`` (``frame``, ``x_px``, ``y_px``), gaps as NaN."""
    ids = np.sort(rows["track_id"].unique())
    if not len(ids):
        return pd.Series(dtype=float)
    first = rows.groupby("track_id")["frame"].min()
    span = int((rows.groupby("track_id")["frame"].max() - first).max()) + 1
    pos = np.full((len(ids), span, 2), np.nan)
    row = np.searchsorted(ids, rows["track_id"].to_numpy())
    col = (rows["frame"].to_numpy() - first.reindex(rows["track_id"]).to_numpy()).astype(int)
    pos[row, col, 0] = rows["y_px"].to_numpy(float)
    pos[row, col, 1] = rows["x_px"].to_numpy(float)
    with np.errstate(all="ignore"):
        cve = cve_tensor_batch(pos, acquisition)
    return pd.Series(0.5 * (np.asarray(cve["D1_um2_s"], float) + np.asarray(cve["D2_um2_s"], float)), index=ids)


def oracle_scores(tracks: pd.DataFrame, truth: pd.DataFrame, acquisition: Acquisition,
                  score: Callable[..., dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"oracle_linked": scores, "true_positions": scores}`` (``score``: bench_foreign's scorer)."""
    m = match_frames(tracks, truth)
    linked = pd.DataFrame({"track_id": truth.loc[m["truth_index"], "track_id"].to_numpy(),
                           "frame": tracks.loc[m["out_index"], "frame"].to_numpy(),
                           "x_px": tracks.loc[m["out_index"], "x_px"].to_numpy(float),
                           "y_px": tracks.loc[m["out_index"], "y_px"].to_numpy(float)})
    out: dict[str, dict[str, Any]] = {}
    # (the blur coefficient enters the CVE's localization variance only, not its D: the same
    # acquisition serves the true positions)
    for key, rows in (("oracle_linked", linked), ("true_positions", truth[["track_id", "frame", "x_px", "y_px"]])):
        d = cve_per_track(rows, acquisition)
        rows = rows.copy()
        rows["D_cve"] = rows["track_id"].map(d).to_numpy(float)
        values = pd.DataFrame({"D": d})
        out[key] = score(rows, truth, values, None, "D_cve")
    return out



def _tail_llr(steps: dict[int, pd.DataFrame], a: int, b: int, frame: int, var_a: float, var_b: float,
              tail_links: int) -> float:
    """Log-likelihood ratio of the two particles' next ``tail_links`` steps after ``frame`` (linked against
    exchanged): each under its own per-axis step variance against the other's (isotropic Gaussian)."""
    total = 0.0
    for own, v_own, v_other in ((a, var_a, var_b), (b, var_b, var_a)):
        g = steps[own]
        d2 = g.loc[(g.index > frame) & (g.index <= frame + tail_links), "d2"].to_numpy(float)
        total += float(np.sum(-d2 / (2.0 * v_own) - np.log(v_own) + d2 / (2.0 * v_other) + np.log(v_other)))
    return total


def oracle_cuts(truth: pd.DataFrame, frame_interval_s: float, pixel_size_um: float, llr_threshold: float = 5.0,
                max_expected_bias: float = 0.02, blur: float = 1.0 / 6.0, tail_links: int = 0) -> dict[str, Any]:
    """The cuts the encounter rule would make with perfect knowledge (a floor of the share of tracks cut).

    The rule of ``tracking/encounters.py`` with its default thresholds, applied to the true tracks
    with the true positions (no localization error) and each particle's true step variance per axis
    ``2 D dt (1 - 2 blur) / px^2`` (``D = (D1 + D2) / 2`` at the frame; the renderer's positions are
    the means over the frame's exposure): a frame boundary is cut for both particles of a pair when
    ``LLR = log L(linked) - log L(swapped) < llr_threshold`` and the expected bias
    ``p |v_A - v_B| / (v_A + v_B)`` with ``p = 1 / (1 + exp(LLR))`` is at least ``max_expected_bias``.
    With noisy positions and estimated variances a rule can only be less sure, so a tracker that keeps
    each track to one particle by this rule cuts at least these. ``tail_links``: the LLR also weighs each
    particle's next steps under its own variance against the other's where that favours the linked
    assignment (``EncounterRules.tail_links`` with perfect knowledge: clipped at 0, it may spare a cut,
    never make one). The variances are isotropic (``(D1 + D2) / 2``): for anisotropic particles the rule,
    which compares step covariances, differs (an approximation there).

    Returns ``particles_cut``, ``boundaries_cut``, ``pieces``, ``pieces_touching_cut`` (share of
    the pieces that begin or end at a cut), ``long_tracks`` (true tracks of >= 20 frames) and
    ``long_recovered`` (of those, the ones whose longest piece holds >= 80 % of their frames).
    """
    t = truth.sort_values(["track_id", "frame"])
    d = 0.5 * (t["D1_um2_s"].to_numpy(float) + t["D2_um2_s"].to_numpy(float))
    var = 2.0 * d * frame_interval_s * (1.0 - 2.0 * blur) / pixel_size_um**2
    t = t.assign(var=var)
    by_frame = {f: g for f, g in t.groupby("frame")}
    steps: dict[int, pd.DataFrame] = {}
    if tail_links > 0:  # each particle's step (squared length, px^2) into each frame, consecutive frames only
        for tid, g in t.groupby("track_id"):
            d2 = np.diff(g["x_px"].to_numpy(float)) ** 2 + np.diff(g["y_px"].to_numpy(float)) ** 2
            ok = np.diff(g["frame"].to_numpy()) == 1
            steps[int(tid)] = pd.DataFrame({"d2": d2[ok]}, index=g["frame"].to_numpy()[1:][ok] - 1)
    cut: set[tuple[int, int]] = set()  # (track_id, frame f): the link f -> f + 1 is cut
    for f, g0 in by_frame.items():
        g1 = by_frame.get(f + 1)
        if g1 is None:
            continue
        both = g0.merge(g1[["track_id", "x_px", "y_px"]], on="track_id", suffixes=("_0", "_1"))
        if len(both) < 2:
            continue
        p0 = both[["x_px_0", "y_px_0"]].to_numpy(float)
        p1 = both[["x_px_1", "y_px_1"]].to_numpy(float)
        v = both["var"].to_numpy(float)
        own = np.sum((p1 - p0) ** 2, axis=1) / (2.0 * v)  # -log L of each particle's own step (constants cancel)
        cross = np.sum((p1[None, :, :] - p0[:, None, :]) ** 2, axis=2) / (2.0 * v[:, None])  # a0 -> b1 with v_A
        llr = cross + cross.T - own[:, None] - own[None, :]
        ids = both["track_id"].to_numpy()
        if tail_links > 0:
            for a, b in zip(*np.nonzero(np.triu(llr < llr_threshold, k=1))):
                extra = max(_tail_llr(steps, int(ids[a]), int(ids[b]), int(f), float(v[a]), float(v[b]), tail_links),
                            0.0)  # as EncounterRules.tail_links: the tails may spare a cut, never make one
                llr[a, b] += extra
                llr[b, a] += extra
        with np.errstate(over="ignore"):
            p_swap = 1.0 / (1.0 + np.exp(np.clip(llr, -50, 50)))
        bias = p_swap * np.abs(v[:, None] - v[None, :]) / (v[:, None] + v[None, :])
        i, j = np.nonzero(np.triu((llr < llr_threshold) & (bias >= max_expected_bias), k=1))
        cut.update((int(ids[k]), int(f)) for k in np.concatenate([i, j]))
    pieces = touching = long_tracks = recovered = 0
    for tid, g in t.groupby("track_id"):
        frames = g["frame"].to_numpy()
        breaks = np.array([(int(tid), int(fr)) in cut for fr in frames[:-1]], dtype=bool)
        lengths = np.diff(np.concatenate([[0], np.nonzero(breaks)[0] + 1, [len(frames)]]))
        pieces += len(lengths)
        touching += len(lengths) if breaks.any() else 0
        if len(frames) >= 20:
            long_tracks += 1
            recovered += int(lengths.max() >= 0.8 * len(frames))
    return {"particles_cut": len({tid for tid, _ in cut}), "boundaries_cut": len(cut), "pieces": pieces,
            "pieces_touching_cut": touching / max(pieces, 1), "long_tracks": long_tracks,
            "long_recovered": recovered}
