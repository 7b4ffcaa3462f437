"""Which trainer a model takes, and which of the caller's options reach it.

``fit`` and ``finetune`` have one signature for every task. The trainer is named by the model's
:class:`zoo.architectures.Architecture` (by default its task's, in :mod:`zoo.tasks`); a
:class:`Trainer` says what its models learn from and names its two functions. Each function
takes the options that apply to it as keywords: an option it does not take is refused when the
caller gave it a value (not the default), with what the model learns from instead. No branch
on task names: a new kind of model brings its Trainer.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from zoo import architectures
from zoo.errors import InputError

LIGHTNING = ("accelerator", "devices", "precision", "strategy")


@dataclass(frozen=True)
class Trainer:
    """kind: what the model is, in words ("a classifier").
    learns_from: what it trains on, in words (for refusals).
    fit: ``module:function(spec, data, out, **options, **lightning)`` -> package path.
    finetune: ``module:function(parent, data, out, policy, options, **options)`` -> package path,
        ``parent`` as :func:`zoo.trainers.parent.load_parent` returns it."""

    kind: str
    learns_from: str
    fit: str
    finetune: str


def trainer_for(spec) -> Trainer:
    """The trainer of ``spec``'s architecture."""
    return architectures.import_target(architectures.get(spec.architecture_id).trainer)


def _given(value: Any, default: Any) -> bool:
    """Did the caller set this option (empty collections and None count as not set)?"""
    if value is None or (isinstance(value, (dict, list, tuple, set)) and not value):
        return False
    return value != default


def call(target: str, trainer: Trainer, who: str, options: dict, defaults: dict, *args, **fixed) -> Any:
    """``target(*args, **fixed, **options it takes)``. None means "the trainer's default" and is
    left out; an option it does not take is refused when set."""
    function: Callable = architectures.import_target(target)
    takes = {name for name, p in inspect.signature(function).parameters.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    passed, refused = {}, []
    for key, value in options.items():
        if key in takes:
            if value is not None:
                passed[key] = value
        elif _given(value, defaults.get(key)):
            refused.append(key)
    if refused:
        verb = "does" if len(refused) == 1 else "do"
        raise InputError(f"{who} is {trainer.kind}, which learns from {trainer.learns_from}: "
                         f"{', '.join(refused)} {verb} not apply")
    return function(*args, **fixed, **passed)


def defaults_of(function: Callable) -> dict:
    """The keyword defaults of ``function`` (the generic ``fit`` / ``finetune``)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}
