"""Carvana Image Masking Challenge toolkit: data, U-Nets, inference, RLE submissions, scoring."""

__version__ = "0.1.0"

NATIVE_HEIGHT = 1280
NATIVE_WIDTH = 1918
NATIVE_SHAPE = (NATIVE_HEIGHT, NATIVE_WIDTH)
COMPETITION = "carvana-image-masking-challenge"
