"""gpconv: grouped pointwise convolutions with channel interleaving (kEffNet): the reference and
its backends."""

__version__ = "0.1.0"
