"""Integer and bit-packed compute kernels for TVM, each paired with its numpy reference.

Kernel families (see :mod:`kernels.registry`): fused int8 convolution and dense layers
(:mod:`.int8_conv2d`, :mod:`.int8_dense`: uint8/int8 x int8, int32 accumulation, fused max
pooling and requantization / ReLU / residual add / threshold / dequantization epilogues,
:mod:`.epilogue`), bit-packed XNOR-popcount convolution and dense layers (:mod:`.binary`), and
the input quantizer and global average pool (:mod:`.edges`). Each is a TE compute plus a
hand-written TensorIR schedule whose inner product is tensorized to the CPU's dot-product
instruction (:mod:`.intrin`: ``vpdpbusd`` on x86 AVX512-VNNI, ``sdot`` on AArch64, a vector
fallback elsewhere) and whose accumulator tile stays in registers (:mod:`.schedule`).

Two ways in:

* whole networks: :func:`kernels.twin.from_twin` turns a quantized PyTorch twin into a
  :class:`kernels.network.Network` of fused kernels, compiled into one Relax module by
  :func:`kernels.network.compile_network` (what ``bench/latency.py`` measures);
* per op, inside ``robustq compile`` (by default for x86 and AArch64 targets):
  :mod:`kernels.compile_hook` registers the kernels with the compile stage's kernel hook as
  a kernel library, and :mod:`kernels.generic_schedule` schedules the functions between them.

:mod:`.reference` holds the numpy definitions every kernel is tested against bit for bit;
:mod:`.layout` the storage layouts and compile-time packing; :mod:`.records` the shipped
register-tile choices; :mod:`.disasm` the checks that the built code uses the intended
instructions. To add a kernel: a spec dataclass, a TE compute, a schedule, a ``pack`` and a
``reference`` function, then ``@register_kernel`` it in :mod:`.registry`.
"""
