"""Fine-tuning policies: which stages of a network train, and at what learning rate.

Freeze policies (``FREEZE``):

- ``none``: everything trains;
- ``encoder``: the encoder and bottleneck keep the parent's weights; decoder and head train;
- ``all-but-head``: only the output head trains;
- ``gradual``: the head first, then one more stage from the output end every
  ``unfreeze_every`` steps (ULMFiT's gradual unfreezing, Howard & Ruder 2018).

A frozen stage keeps its weights *and* its batch-norm statistics (its norm layers stay in eval
mode). Layer-wise learning-rate decay gives stage ``d`` steps from the head ``lr * decay**d``.
"""
from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from zoo.errors import InputError
from zoo.nn.transfer import stages

FREEZE = ("none", "encoder", "all-but-head", "gradual")


def check_policy(freeze: str, layer_decay: float | None) -> None:
    if freeze not in FREEZE:
        raise InputError(f"unknown freeze policy '{freeze}': choose one of {', '.join(FREEZE)}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise InputError(f"layer-wise learning-rate decay must be in (0, 1], got {layer_decay}")


def trainable_stages(network: nn.Module, freeze: str, step: int = 0, unfreeze_every: int = 0) -> int:
    """How many stages, counted from the output end, train at ``step`` under ``freeze``."""
    named = stages(network)
    n = len(named)
    if freeze == "none":
        return n
    if freeze == "all-but-head":
        return 1
    if freeze == "encoder":
        names = [name for name, _ in named]
        body_end = names.index("bottleneck") + 1 if "bottleneck" in names else n // 2
        return n - body_end
    return min(n, 1 + (step // unfreeze_every if unfreeze_every > 0 else 0))    # gradual


def set_trainable(network: nn.Module, count: int) -> list[str]:
    """Let the last ``count`` stages train; freeze the others (weights and norm statistics).
    Returns the names of the frozen stages."""
    named = stages(network)
    frozen = []
    for i, (name, modules) in enumerate(named):
        trains = i >= len(named) - count
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(trains)
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(trains and network.training)
        if not trains:
            frozen.append(name)
    return frozen


def layerwise_groups(network: nn.Module, lr: float, decay: float | None) -> list[dict]:
    """Optimiser parameter groups: one per stage with ``lr * decay**distance_from_head``, or a
    single group when ``decay`` is None. Parameters outside every stage get ``lr``."""
    if decay is None:
        return [{"params": list(network.parameters()), "lr": lr}]
    named = stages(network)
    groups, seen = [], set()
    for i, (name, modules) in enumerate(named):
        params = [p for m in modules for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr * decay ** (len(named) - 1 - i), "name": name})
    rest = [p for p in network.parameters() if id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "other"})
    return groups


class Freezing(pl.Callback):
    """Applies a freeze policy during training: before every batch (Lightning switches modules
    to train mode at each epoch, which would update frozen norm statistics) and, for
    ``gradual``, unfreezes one more stage every ``unfreeze_every`` steps."""

    def __init__(self, freeze: str, unfreeze_every: int = 0):
        self.freeze, self.unfreeze_every = freeze, unfreeze_every
        self.history: list[tuple[int, int]] = []           # (step, trainable stages) at each change

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        count = trainable_stages(module.network, self.freeze, trainer.global_step, self.unfreeze_every)
        set_trainable(module.network, count)
        if not self.history or self.history[-1][1] != count:
            self.history.append((trainer.global_step, count))

    def state_dict(self) -> dict:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(h) for h in state.get("history", [])]
