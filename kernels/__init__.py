"""Integer and bit-packed compute kernels for TVM, each paired with its numpy reference.

Kernel families (see :mod:`.registry`): fused int8 convolution and dense layers
(:mod:`.int8_conv2d`, :mod:`.int8_dense`: uint8/int8 x int8, int32 accumulation, fused max
pooling and requantization / ReLU / residual add / threshold / dequantization epilogues,
:mod:`.epilogue`), bit-packed XNOR-popcount convolution and dense layers (:mod:`.binary`), and
the input quantizer and global average pool (:mod:`.edges`). Each is a TE compute plus a
hand-written TensorIR schedule whose inner product is tensorized to the CPU's dot-product
instruction (:mod:`.intrin`: ``vpdpbusd`` on x86 AVX512-VNNI, ``sdot`` on AArch64, a vector
fallback elsewhere) and whose accumulator tile stays in registers (:mod:`.schedule`).

The library is a leaf: it imports nothing of the compiler (only the project's errors,
registries and fixed-point arithmetic). The compiler plugs the kernels in, two ways:

* whole networks: :mod:`robustq_deploy.compile.fused` turns a prepared integer ONNX graph (what
  ``robustq compile`` builds) or a quantized PyTorch twin into a network of these kernels,
  compiled into one Relax module;
* per op: :mod:`robustq_deploy.compile.tiled` registers them as implementations of the compile
  stage's per-op hook, and :mod:`.generic_schedule` schedules the functions between them.

:mod:`.reference` holds the numpy definitions every kernel is tested against bit for bit;
:mod:`.layout` the storage layouts and compile-time packing; :mod:`.records` the register-tile
records; :mod:`.disasm` the checks that the built code uses the intended
instructions. To add a kernel: a spec dataclass, a TE compute, a schedule, a ``pack`` and a
``reference`` function, then ``@register_kernel`` it in :mod:`.registry`.
"""
