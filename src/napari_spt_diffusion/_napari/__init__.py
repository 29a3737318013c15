"""napari side of napari-spt-diffusion (the npe2 manifest's target); no science here.

- ``layers``: Results -> napari layer data tuples (pure, testable without a viewer)
- ``display``: the layers of one Results in a viewer (colour by, ellipses, selection)
- ``plots``, ``results_widget``: themed matplotlib timeline/histogram/colour bar, results dock
- ``track_widget``: the Track & Estimate dock widget; ``simulator_widget``: the Simulator
- ``sample_data``, ``writer``, ``reader``: npe2 sample data, the tracks-layer CSV writer and the
  reader of a results prefix (``_tracks.csv`` / ``_summary.csv`` / ``_meta.json``)
- ``_inputs``, ``_dialogs``, ``_persist``, ``_layout``: layer validation, dialogs/notifications,
  remembered parameters, scroll areas and folding groups of the docks
"""
