"""Shared Lightning training: data modules, ``fit`` (installed as ``zoo.trainers``)."""
