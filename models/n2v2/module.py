"""N2V2 training: Noise2Void with median replacement of the masked pixels."""
from __future__ import annotations

from zoo.models.n2v.module import N2VModule


class N2V2Module(N2VModule):
    """N2V2: masked pixels take the median of their neighbourhood (no centre), which with the
    blueprint's blur-pool U-Net without a top skip removes N2V's checkerboard artefacts."""

    def __init__(self, spec, lr: float = 2e-3, mask_fraction: float = 0.002, radius: int = 2,
                 masking: str = "median"):
        super().__init__(spec, lr=lr, mask_fraction=mask_fraction, radius=radius, masking=masking)
