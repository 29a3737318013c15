"""SHA-256 of the bundled checkpoints (``checkpoints/<name>.pt``), pinned in package code.

A bundled model must match both its card and this table, so a corrupted or replaced
``.pt`` whose card was recomputed over it is still refused. Written by
:func:`napari_spt_diffusion.training.card.pin_bundled_checksums`, which ``bundle_run`` and
``reexport_checkpoint`` call when they write into the package's ``checkpoints/``; to re-pin
by hand after copying a model in: ``python -m napari_spt_diffusion.training --pin``.
Do not edit by hand.
"""

PINNED_SHA256: dict[str, str] = {
    "aniso": "3a37e621fe3a408af5fa5bbb1eb66995eca62d7212b317c2308a84d61c42e8c3",
    "aniso_any": "9c55bbce06abf9877bd710c27e1dbe96e86fb54bd96bdae6ba0c966afca31e4b",
    "aniso_wide": "84a103d6c6c5567af6c64d8193a655c388d8d84f9e8c4812ba0d4a382d221c6f",
    "binding": "f762a2eb392f1b97b14cc7915562313ad58ead4f20e4ac7ce1dd152954c8824c",
    "binding_any": "f6509cc5fe3b0a32347fdb00e5bcc789bf07cc88bf6227cb660dabee623abdb6",
    "twostate": "9db49b86b52b17963814ecf7a4a6df132be6fd43d46a7a314f0f6903b46850d9",
    "twostate_any": "1d394a239204355f22a46635fbd2a863771ee664c329d1ebb4cd30969e515c1f",
}
