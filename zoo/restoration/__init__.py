"""Restoration (denoising, CARE, Noise2Void): what is specific to it outside the architectures."""
