"""asc-tf: ASCNet (appearance-speed consistency) video self-supervised learning in TF2 / Keras 3."""

__version__ = "0.1.0"
