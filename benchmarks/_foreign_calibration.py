"""The calibration the tool used and measured on a foreign-optics movie, against the renderer's truth
(``bench_foreign.py``'s calibration tables)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["calibration"]


def _value(v: Any) -> tuple[float | None, float | None]:
    """``(value, uncertainty)`` of a meta entry: a number, or a dict with value/uncertainty-like keys."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v), None
    if isinstance(v, dict):
        val = next((v[k] for k in ("value", "estimate", "mean", "measured")
                    if isinstance(v.get(k), (int, float))), None)
        unc = next((v[k] for k in ("uncertainty", "sigma", "std", "sd", "stderr", "error")
                    if isinstance(v.get(k), (int, float))), None)
        return (float(val) if val is not None else None), (float(unc) if unc is not None else None)
    return None, None


def calibration(meta: dict[str, Any], tracks: pd.DataFrame, truth_acq: dict[str, Any]) -> dict[str, Any]:
    """What the tool used (and measured, when it says) against the true acquisition."""
    # under uneven light or bleaching (case free_beam) the truth is the movie's mean (the scene's value otherwise)
    signal = truth_acq.get("signal_photons_field_mean", truth_acq["signal_photons"])
    background = truth_acq.get("background_photons_field_mean", truth_acq["background_photons"])
    # an EMCCD (case free_emccd): the gain per photo-electron includes the multiplication, and its read noise in
    # photo-electrons is the register's output noise over it
    em = float(truth_acq.get("em_gain", 1.0)) if truth_acq.get("camera") == "emccd" else 1.0
    true = {"psf_sigma_nm": truth_acq["psf_sigma_equivalent_nm"], "signal_photons": signal,
            "background_photons": background, "gain_adu_per_e": truth_acq["gain_map_mean"] * em,
            "offset_adu": truth_acq["offset_map_mean"], "read_noise_e": truth_acq["read_noise_e"] / em,
            "pixel_size_nm": truth_acq["pixel_size_nm"], "frame_interval_s": truth_acq["frame_interval_s"]}
    # what the pipeline uses for an EMCCD is the Poisson camera with its noise: twice the gain, half the photons
    poisson_equivalent = {"gain_adu_per_e": 2.0, "signal_photons": 0.5, "background_photons": 0.5,
                          "read_noise_e": 0.5} if em != 1.0 else {}
    alias = {"psf_sigma_px": ("psf_sigma_nm", truth_acq["pixel_size_nm"]), "gain": ("gain_adu_per_e", 1.0),
             "offset": ("offset_adu", 1.0), "background": ("background_photons", 1.0),
             "photons": ("signal_photons", 1.0), "read_noise": ("read_noise_e", 1.0)}
    out: dict[str, Any] = {"used": {}, "measured": None, "measured_other": {}, "columns": {}}
    for key, tv in true.items():
        uv, _ = _value(meta.get("acquisition", {}).get(key))
        tv = tv * poisson_equivalent.get(key, 1.0)
        out["used"][key] = {"used": uv, "true": tv, "ratio": (uv / tv) if uv is not None and tv else None}
    measured = meta.get("acquisition_measured")
    if isinstance(measured, dict):
        out["measured"] = {}
        for key, raw in measured.items():
            val, unc = _value(raw)
            tkey, scale = (key, 1.0) if key in true else alias.get(key, (None, 1.0))
            tv = true.get(tkey) if tkey else None
            if tv is None or val is None:
                if not isinstance(raw, (dict, list)) or key == "psf_shape":
                    out["measured_other"][key] = raw
                continue
            if val is not None and tkey is not None and key.endswith("_px") and tkey.endswith("_nm"):
                tv = tv / scale
            out["measured"][key] = {"measured": val, "uncertainty": unc, "true": tv, "rel_error": (val - tv) / tv,
                                    "method": raw.get("method") if isinstance(raw, dict) else None}
    for col, tv in (("photons", signal), ("background", background)):
        if col in tracks:
            med = float(np.nanmedian(tracks[col].to_numpy(float)))
            out["columns"][col] = {"median": med, "true": tv, "ratio": med / tv}
    if "loc_precision_nm" in tracks:
        out["columns"]["loc_precision_nm"] = {"median": float(np.nanmedian(tracks["loc_precision_nm"]))}
    return out
