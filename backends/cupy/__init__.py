"""CuPy backend: the array-API reference on a CUDA device (see ``adapter``)."""
