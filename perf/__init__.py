"""gpconv.perf: the measurements behind ``gpconv bench``.

* ``timing``: candidates timed round-robin (warm-up, then the median of several rounds), by wall
  or CPU clock;
* ``models``: whole-network forward throughput and train-step time per backend and model;
* ``pointwise``: the grouped 1×1 implementations each backend offers, on kEffNet's layer shapes;
* ``torch_traffic``: bytes of tensor operands per PyTorch op (the memory traffic a step implies);
* ``report``: tables, the recommendation, JSON and plots;
* ``machine``: what machine and software a result was measured on;
* ``allocator``: keep freed memory in the process (glibc malloc) for ``gpconv train``/``bench``.
"""
