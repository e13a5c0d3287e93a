"""fgvc: a thin library for a reproducible study of attention-based fine-grained classification.

Notebooks import this library; the library never imports notebooks.
"""
__version__ = "0.1.0"
