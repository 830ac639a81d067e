"""dmax: an experiment platform for DMax diffusion language models (OPUT training, SPD decoding)."""

__version__ = "0.1.0"
