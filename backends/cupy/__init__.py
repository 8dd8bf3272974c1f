"""CuPy backend: the array-API reference on a CUDA device (``adapter``), with kPointwise on fused
grouped-pointwise + interleave CUDA kernels (``kernels``: the source and launch plans; ``fused``:
the ops)."""
