"""gpconv: grouped pointwise convolutions with channel interleaving (kEffNet), reference + backends."""

__version__ = "0.1.0"
