"""The LightningModule every architecture's training module derives from."""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from zoo import architectures
from zoo.spec import Spec


def lr_factor(step: int, total: int, warmup: int = 0, floor: float = 0.05) -> float:
    """The learning-rate multiplier at ``step`` of ``total``: linear warm-up over ``warmup`` steps,
    then a cosine decay to ``floor``."""
    warmup = min(warmup, total - 1)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class ZooModule(pl.LightningModule):
    """Builds the spec's network; subclasses define ``loss(batch, generator=None)``.

    Adam with a cosine decay of the learning rate over ``trainer.max_steps`` (after a warm-up
    when fine-tuning).
    """

    def __init__(self, spec: Spec, lr: float = 4e-4):
        super().__init__()
        self.spec = spec
        self.lr = lr
        self.network = architectures.get(spec.architecture_id).build_network(spec.architecture_params)

    def hparams_for_record(self) -> dict:
        """Training hyper-parameters, recorded in the package's training config."""
        return {"lr": self.lr}

    def on_fit_start(self) -> None:
        """Channels-last on 2D/3D convolutions (oneDNN and cuDNN are faster in that layout) and,
        on CPU, an allocator that keeps freed memory (the page faults otherwise cost a third)."""
        from zoo.runtime.runners import keep_freed_memory

        if self.device.type == "cpu":
            keep_freed_memory()
        self._layout = {4: torch.channels_last, 5: torch.channels_last_3d}
        self.network.to(memory_format=self._layout[len(self.spec.inputs[0].axes)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = getattr(self, "_layout", {}).get(x.ndim)
        return self.network(x.contiguous(memory_format=layout) if layout else x)

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)  # same masks every time
        self.log("val_loss", self.loss(batch, generator), prog_bar=True, on_epoch=True)

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups with their learning rates (fine-tuning sets ``layer_decay``)."""
        from .transfer import layerwise_groups

        return layerwise_groups(self.network, self.lr, getattr(self, "layer_decay", None))

    def configure_optimizers(self):
        """Adam; over ``trainer.max_steps``, a linear warm-up of ``warmup_steps`` (0 unless
        fine-tuning) then a cosine decay to 5% of each group's learning rate."""
        optimizer = torch.optim.Adam(self.optimizer_groups(), lr=self.lr)
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None
        if not total:
            return optimizer
        warmup = int(getattr(self, "warmup_steps", 0))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
