"""``FinetunePolicy``: how a child trains from its parent's weights, for every task.

- ``freeze``: which stages keep the parent's weights (``none``, ``encoder``, ``all-but-head``,
  or ``gradual``: the head first, then one more stage every ``unfreeze_every`` steps, by
  default ``max_steps / number of stages``); see :mod:`zoo.trainers.transfer`;
- ``lr``: the peak learning rate, by default ``lr_scale`` times the parent's;
- ``warmup``: steps of linear warm-up to it (default 5% of ``max_steps``, at least 10);
- ``layer_decay``: per-stage learning-rate factor counted from the head (None: one rate).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from zoo.nn.transfer import stages
from zoo.spec import Spec

from .transfer import Freezing, check_policy


def parent_config(parent: Spec) -> dict:
    """The parent's training configuration (its learning rate, patch and batch size), or {}."""
    return parent.training.config if parent.training else {}


@dataclass(frozen=True)
class FinetunePolicy:
    freeze: str = "none"
    unfreeze_every: int | None = None
    lr: float | None = None
    lr_scale: float = 0.5
    warmup: int | None = None
    layer_decay: float | None = None

    def check(self) -> None:
        """Refuse an unknown freeze policy or a layer decay outside (0, 1]."""
        check_policy(self.freeze, self.layer_decay)

    def apply(self, module, parent: Spec, max_steps: int) -> FinetunePolicy:
        """Set the training module's learning rate, warm-up and layer decay; return the policy
        with every default resolved (the values the child records)."""
        lr = self.lr if self.lr is not None else self.lr_scale * float(parent_config(parent).get("lr", module.lr))
        warmup = self.warmup if self.warmup is not None else max(10, max_steps // 20)
        module.lr, module.warmup_steps, module.layer_decay = lr, warmup, self.layer_decay
        every = self.unfreeze_every
        if self.freeze == "gradual" and not every:
            every = max(1, max_steps // len(stages(module.network)))
        return replace(self, lr=lr, warmup=warmup, unfreeze_every=every)

    def freezing(self) -> Freezing:
        """The Lightning callback that applies the freeze policy during training."""
        return Freezing(self.freeze, self.unfreeze_every or 0)

    def record(self) -> dict:
        """The policy as the child's training record states it (after :meth:`apply`)."""
        return {"freeze": self.freeze, **({"unfreeze_every": self.unfreeze_every} if self.freeze == "gradual" else {}),
                "lr": self.lr, "warmup_steps": self.warmup, "layer_decay": self.layer_decay}
