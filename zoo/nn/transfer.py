"""Moving pretrained weights into a network whose inputs or outputs differ from its parent's.

Every tensor whose name and shape match is copied. The first convolution is adapted when only
its number of input channels changed; the output head is re-initialised when the number of
outputs changed (classes, rays, channels). Any other mismatch means the body differs, and
nothing could be transferred honestly: that is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError


@dataclass
class TransferReport:
    """What happened to each tensor of the child network."""

    copied: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)      # first convolution, new input channels
    new: list[str] = field(default_factory=list)          # output head, freshly initialised

    def to_dict(self) -> dict:
        return {"copied": len(self.copied), "adapted": self.adapted, "new": self.new}


def adapt_input_weight(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first-convolution weight (``out, in, *kernel``) for ``channels`` input channels.

    To one channel: the sum over the parent's channels. To more: the parent's channels repeated
    cyclically and scaled by ``parent / channels`` (timm's rule), then shifted so that their sum
    is the parent's. Either way a grey image in every channel gives exactly the parent's
    response to it."""
    parent = weight.shape[1]
    if channels == parent:
        return weight.clone()
    total = weight.sum(dim=1, keepdim=True)
    if channels == 1:
        return total
    repeats = -(-channels // parent)
    adapted = weight.repeat(1, repeats, *[1] * (weight.ndim - 2))[:, :channels] * (parent / channels)
    return adapted + (total - adapted.sum(dim=1, keepdim=True)) / channels


def convolutions(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's convolutions and linear layers in definition order (input side first): the
    first is its input layer, the last its output head."""
    return [(name, m) for name, m in network.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def load_transferable(network: nn.Module, parent_state: dict[str, torch.Tensor]) -> TransferReport:
    """Load ``parent_state`` into ``network`` (the child), adapting the first convolution and
    re-initialising the output head where their shapes changed; report what was done."""
    convs = convolutions(network)
    if not convs:
        raise InputError("the network has no convolution: cannot tell its input layer from its head")
    first, last = convs[0][0], convs[-1][0]
    child_state = network.state_dict()
    report, state, unmatched = TransferReport(), {}, []
    for name, tensor in child_state.items():
        source = parent_state.get(name)
        if source is not None and source.shape == tensor.shape:
            state[name] = source
            report.copied.append(name)
        elif source is not None and name == f"{first}.weight" and source.shape[0] == tensor.shape[0] \
                and source.shape[2:] == tensor.shape[2:]:
            state[name] = adapt_input_weight(source, tensor.shape[1])
            report.adapted.append(name)
        elif name.startswith(f"{last}."):
            state[name] = tensor                               # the child's fresh initialisation
            report.new.append(name)
        else:
            unmatched.append(f"{name} {tuple(tensor.shape)} (parent: "
                             f"{tuple(source.shape) if source is not None else 'absent'})")
    if unmatched:
        raise InputError("the parent's weights do not fit this network beyond its input channels and output head: "
                         + "; ".join(unmatched[:4]) + ("; ..." if len(unmatched) > 4 else "")
                         + ". Fine-tuning keeps the body of the parent (depth, widths); change only the number of "
                           "input channels or of outputs")
    network.load_state_dict(state)
    return report


def stages(network: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The network's trainable stages from input to output, for freezing and layer-wise
    learning rates: the network's own ``stages()`` when it defines one, else its top-level
    children that hold parameters."""
    if hasattr(network, "stages"):
        return network.stages()
    return [(name, [child]) for name, child in network.named_children() if any(True for _ in child.parameters())]
