"""``nn.Module`` wrappers that call :mod:`.primitives`: the fake-quant PyTorch twin.

A quantized layer owns the quantizer of its *input* (as QDQ graphs place a QuantizeLinear /
DequantizeLinear pair on each quantized op's input) and of its weight, so it knows every scale
it needs: the int32 bias is quantized with ``input_scale * weight_scale`` exactly as the integer
graph stores it. Float layers use the same classes with 32-bit specs (identity quantizers), so a
float model and its quantized twin share architecture code and checkpoints.

Training options (all off by default, so a plain model behaves as the min-max quantizer):
``WeightQuantizer(clip=c)`` narrows integer weights to ``c * max|W|``; ``learned=True`` on either
quantizer makes the step an LSQ parameter (:func:`.primitives.lsq_fake_quantize`);
``WeightQuantizer.relax_eta`` (set by BinaryRelax training, never saved) blends the quantized and
the float weight. Under torch.distributed, observers and LSQ initialisation reduce their batch
statistic over all processes, so data-parallel training sees the statistics of the global batch.

Deployed semantics that the twin reproduces (and the exporters emit):
``acc = sum(q_x * q_w) + q_b`` in int32, then requantization to the next layer's input scale
(ReLU folds into the clamp at zero point 0); max pooling commutes with that monotone requantization.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import primitives as P
from .spec import FLOAT_BITS, LayerSpec


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class WeightQuantizer(nn.Module):
    """Per-channel (axis 0) or per-tensor weight quantizer: int (narrow symmetric), ternary, binary.

    ``clip`` (integer widths): keep ``clip * max|W|`` as the range. ``learned`` (integer widths):
    the step is the LSQ parameter ``step`` (shape ``[channels]`` or ``[]``), initialised by
    :meth:`init_step`. ``relax_eta`` (any width, a training-time attribute, not in the state
    dict): forward returns ``(eta * Q(W) + W) / (1 + eta)`` instead of ``Q(W)``.
    """

    def __init__(self, bits=8, per_channel: bool = True, clip: float | None = None,
                 learned: bool = False, channels: int = 1):
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.clip = clip
        self.learned = learned and isinstance(bits, int) and bits != FLOAT_BITS
        self.relax_eta: float | None = None
        if self.learned:
            self.step = nn.Parameter(torch.ones(channels if per_channel else (), dtype=torch.float32))

    @property
    def enabled(self) -> bool:
        return self.bits != FLOAT_BITS

    @torch.no_grad()
    def init_step(self, w: torch.Tensor) -> None:
        """Set the LSQ step to ``2 * mean|W| / sqrt(qmax)`` (the LSQ paper's initialisation)."""
        _, qmax = P.qrange(self.bits, signed=True, narrow=True)
        self.step.copy_(P.lsq_init_scale(w, qmax, self.per_channel))

    def learned_scale(self) -> torch.Tensor:
        return self.step.abs().clamp(min=1e-8)

    def levels_and_scale(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer levels (float tensor) and scale of ``w``; the exporters' single source."""
        if self.bits == "binary":
            return P.binary_levels(w), P.binary_scale(w, self.per_channel)
        if self.bits == "ternary":
            delta, alpha = P.ternary_params(w, self.per_channel)
            return P.ternary_levels(w, delta), alpha
        if self.learned:
            scale = self.learned_scale().detach()
        else:
            scale = P.symmetric_scale(w, self.bits, self.per_channel, self.clip)
        qmin, qmax = P.qrange(self.bits, signed=True, narrow=True)
        return P.quantize(w.detach(), P.channel_view(scale, w.ndim), 0, qmin, qmax), scale

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fake-quantized weight (straight-through gradient) and its scale (None when float)."""
        if not self.enabled:
            return w, None
        if self.learned:
            qmin, qmax = P.qrange(self.bits, signed=True, narrow=True)
            s = self.learned_scale()
            grad_scale = P.lsq_grad_scale(w[0].numel() if self.per_channel else w.numel(), qmax)
            wq, scale = P.lsq_fake_quantize(w, P.channel_view(s, w.ndim), qmin, qmax, grad_scale), s.detach()
        elif isinstance(self.bits, int):
            scale = P.symmetric_scale(w, self.bits, self.per_channel, self.clip)
            qmin, qmax = P.qrange(self.bits, signed=True, narrow=True)
            wq = P.fake_quantize(w, P.channel_view(scale, w.ndim), 0, qmin, qmax)
        else:
            levels, scale = self.levels_and_scale(w)
            wq = P.ste_levels(w, levels, scale)
        if self.relax_eta is not None:
            wq = P.relax(w, wq, self.relax_eta)
        return wq, scale

    def extra_repr(self) -> str:
        extra = (f", clip={self.clip}" if self.clip is not None else "") + (", learned" if self.learned else "")
        return f"bits={self.bits}, per_channel={self.per_channel}{extra}"


class ActQuantizer(nn.Module):
    """Per-tensor activation quantizer, zero point 0.

    Unsigned (``0..2**bits-1``, for inputs after ReLU or pixels) or signed narrow-range.
    The scale is fixed (``fixed_scale``, the input pixel grid 1/255) or observed: an exponential
    moving average of the batch maximum, updated in training mode only, so attacks run in eval
    mode never move it. ``"binary"`` gives ``sign(x)`` with scale 1. ``learned`` (integer widths,
    not fixed): ``scale`` is an LSQ parameter, initialised from the first training batch to
    ``2 * mean|x| / sqrt(qmax)``.
    """

    def __init__(self, bits=8, signed: bool = False, fixed_scale: float | None = None, momentum: float = 0.1,
                 learned: bool = False):
        super().__init__()
        self.bits = bits
        self.signed = signed
        self.momentum = momentum
        self.fixed = fixed_scale is not None
        self.learned = learned and not self.fixed and isinstance(bits, int) and bits != FLOAT_BITS
        init = torch.tensor(fixed_scale if self.fixed else 1.0, dtype=torch.float32)
        if self.learned:
            self.scale = nn.Parameter(init)
        else:
            self.register_buffer("scale", init)
        self.register_buffer("observed", torch.tensor(self.fixed))

    @property
    def enabled(self) -> bool:
        return self.bits != FLOAT_BITS

    @property
    def qmin_qmax(self) -> tuple[int, int]:
        if self.bits == "binary":
            return -1, 1
        return P.qrange(self.bits, self.signed, narrow=self.signed)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        _, qmax = self.qmin_qmax
        peak = (x.abs().max() if self.signed else x.max()).clamp(min=1e-6) / qmax
        if _distributed():  # the maximum of the global batch, as one process would see it
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        if bool(self.observed):
            self.scale.mul_(1 - self.momentum).add_(self.momentum * peak)
        else:
            self.scale.copy_(peak)
            self.observed.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.bits == "binary":
            return P.binarize_act(x)
        if self.learned:
            return self._lsq(x)
        if self.training and not self.fixed:
            self._observe(x)
        qmin, qmax = self.qmin_qmax
        return P.fake_quantize(x, self.scale, 0, qmin, qmax)

    def _lsq(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.qmin_qmax
        if self.training and not bool(self.observed):
            with torch.no_grad():
                s0 = P.lsq_init_scale(x, qmax)
                if _distributed():
                    dist.all_reduce(s0)
                    s0 /= dist.get_world_size()
                self.scale.copy_(s0)
                self.observed.fill_(True)
        grad_scale = P.lsq_grad_scale(x[0].numel(), qmax)
        return P.lsq_fake_quantize(x, self.current_scale(), qmin, qmax, grad_scale)

    def current_scale(self) -> torch.Tensor:
        """The step the forward pass uses (a learned step may drift negative or to zero)."""
        return self.scale.abs().clamp(min=1e-8) if self.learned else self.scale

    def qparams(self) -> dict:
        """Scale, zero point, range and ONNX storage type of the quantized activation."""
        qmin, qmax = self.qmin_qmax
        dtype = "int8" if (self.signed or self.bits == "binary") else "uint8"
        scale = 1.0 if self.bits == "binary" else float(self.current_scale().detach())
        return {"bits": self.bits, "scale": scale, "zero_point": 0, "qmin": qmin, "qmax": qmax, "dtype": dtype}

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, fixed={self.fixed}" + (", learned" if self.learned else "")


class _QuantLayer:
    """Shared behaviour of quantized conv and linear layers (mixin over the torch layer)."""

    in_q: ActQuantizer
    w_q: WeightQuantizer
    spec: LayerSpec

    def _init_quant(self, spec: LayerSpec, in_signed: bool, in_fixed_scale: float | None) -> None:
        self.spec = spec
        self.in_q = ActQuantizer(spec.act_bits, signed=in_signed, fixed_scale=in_fixed_scale,
                                 learned=spec.learned_step)
        self.w_q = WeightQuantizer(spec.weight_bits, spec.per_channel, clip=spec.weight_clip,
                                   learned=spec.learned_step, channels=self.weight.shape[0])
        if self.w_q.learned:
            self.w_q.init_step(self.weight)

    @property
    def quantized(self) -> bool:
        return self.in_q.enabled and self.w_q.enabled

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the layer computes with (a conv-BatchNorm pair: the folded ones)."""
        return self.weight, self.bias

    @torch.no_grad()
    def reset_steps(self) -> None:
        """Initialise learned weight steps from the current weights (after weights are loaded)."""
        if self.w_q.learned:
            self.w_q.init_step(self.weight_and_bias()[0])

    def quant_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Fake-quantized input, weight and int32-grid bias."""
        xq = self.in_q(x)
        weight, b = self.weight_and_bias()
        w, w_scale = self.w_q(weight)
        if b is not None and self.quantized:
            b = P.fake_quantize(b, self.bias_scale(w_scale), 0, P.INT32_MIN, P.INT32_MAX)
        return xq, w, b

    def bias_scale(self, w_scale: torch.Tensor) -> torch.Tensor:
        in_scale = torch.ones((), dtype=torch.float32) if self.in_q.bits == "binary" else self.in_q.scale
        return (in_scale * w_scale).to(torch.float32)

    @torch.no_grad()
    def integer_params(self) -> dict:
        """Integer weight levels, scales and int32 bias that the exporters write."""
        if not self.quantized:
            raise ValueError("integer_params of a float layer")
        weight, bias = self.weight_and_bias()
        levels, w_scale = self.w_q.levels_and_scale(weight)
        out = {
            "weight": levels.to(torch.int8).numpy(),
            "weight_scale": w_scale.numpy().astype("float32"),
            "weight_bits": self.w_q.bits,
            "input": self.in_q.qparams(),
            "bias": None,
            "bias_scale": self.bias_scale(w_scale).numpy().astype("float32"),
        }
        if bias is not None:
            bs = self.bias_scale(w_scale)
            out["bias"] = P.quantize(bias, bs, 0, P.INT32_MIN, P.INT32_MAX).to(torch.int64).numpy().astype("int32")
        return out


class _SingleChannelConv2d(torch.autograd.Function):
    """``F.conv2d`` of a one-channel input whose input gradient is one matmul and a ``fold``.

    On the CPU, PyTorch's backward-data kernel for a one-channel input (the first layer of every
    grayscale model) costs about 20 forward passes of the layer, and every adversarial training
    step and attack step asks for it. ``W^T @ grad`` followed by ``fold`` (col2im) is the same sum
    in another order (equal to float rounding) at a fifth of the cost. The weight and bias
    gradients come from PyTorch's own kernel."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w, b, stride, padding, dilation):
        return F.conv2d(x, w, b, stride, padding, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, ctx.stride, ctx.padding, ctx.dilation = inputs
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:
            n, cout = grad.shape[:2]
            cols = torch.matmul(w.reshape(cout, -1).t(), grad.reshape(n, cout, -1))
            gx = F.fold(cols, tuple(x.shape[-2:]), tuple(w.shape[-2:]), dilation=ctx.dilation, padding=ctx.padding,
                        stride=ctx.stride)
        if need_w or need_b:
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, w, [w.shape[0]] if ctx.has_bias else None, ctx.stride, ctx.padding, ctx.dilation,
                False, [0, 0], 1, [False, need_w, need_b and ctx.has_bias])
        return gx, gw, gb, None, None, None


class QConv2d(_QuantLayer, nn.Conv2d):
    """Quantized 2-D convolution: any stride, zero padding, dilation and ``groups`` (depthwise,
    grouped); the integer graph keeps the same attributes (ConvInteger ``group``, ``dilations``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, spec: LayerSpec, stride=1, padding=0,
                 bias: bool = True, in_signed: bool = False, in_fixed_scale: float | None = None,
                 dilation=1, groups: int = 1):
        nn.Conv2d.__init__(self, in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias,
                           dilation=dilation, groups=groups)
        self._init_quant(spec, in_signed, in_fixed_scale)

    def convolve(self, xq: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.in_channels == 1 and self.groups == 1 and not isinstance(self.padding, str) and xq.requires_grad:
            return _SingleChannelConv2d.apply(xq, w, b, self.stride, self.padding, self.dilation)
        return F.conv2d(xq, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(*self.quant_inputs(x))


class QConvBn2d(QConv2d):
    """A quantized convolution followed by BatchNorm2d, trained as PyTorch's conv-bn QAT
    (``torch.ao.nn.intrinsic.qat.ConvBn2d``) and folded for good at export.

    Training mode: the weight is scaled by ``gamma / sqrt(running_var + eps)`` and fake-quantized
    (the weight that will be deployed), the convolution's output is scaled back and passes through
    the BatchNorm with batch statistics, which also updates the running statistics. Eval mode (and
    every exporter, through :meth:`weight_and_bias`): one convolution with the folded weight
    ``W * gamma / sigma`` and bias ``beta + (b - mean) * gamma / sigma`` (``sigma`` from the running
    variance), quantized like any other layer's; the BatchNorm is gone from the deployed graph."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, spec: LayerSpec, stride=1, padding=0,
                 bias: bool = True, in_signed: bool = False, in_fixed_scale: float | None = None,
                 dilation=1, groups: int = 1, bn_eps: float = 1e-5, bn_momentum: float | None = 0.1,
                 bn_affine: bool = True):
        super().__init__(in_ch, out_ch, kernel_size, spec, stride, padding, bias, in_signed, in_fixed_scale,
                         dilation, groups)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum, affine=bn_affine)
        self.reset_steps()

    def _factor(self) -> torch.Tensor:
        """``gamma / sqrt(running_var + eps)`` per output channel."""
        bn = self.bn
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        return gamma / torch.sqrt(bn.running_var + bn.eps)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        factor = self._factor()
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        bias = self.bias if self.bias is not None else torch.zeros_like(bn.running_mean)
        return self.weight * P.channel_view(factor, self.weight.ndim), beta + (bias - bn.running_mean) * factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xq = self.in_q(x)
        factor = self._factor()
        w, _ = self.w_q(self.weight * P.channel_view(factor, self.weight.ndim))
        y = self.convolve(xq, w, None) / P.channel_view(factor, 4, axis=1)
        if self.bias is not None:
            y = y + P.channel_view(self.bias, 4, axis=1)
        return self.bn(y)


class QLinear(_QuantLayer, nn.Linear):
    def __init__(self, in_features: int, out_features: int, spec: LayerSpec, bias: bool = True,
                 in_signed: bool = False, in_fixed_scale: float | None = None):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_quant(spec, in_signed, in_fixed_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, w, b = self.quant_inputs(x)
        return F.linear(xq, w, b)


class QAdd(nn.Module):
    """Residual add ``a + b`` with both inputs on one shared grid (signed unless both inputs are
    known to be non-negative), so the integer graph adds the two int tensors exactly. The shared
    quantizer observes both inputs at once."""

    def __init__(self, bits=8, signed: bool = True, learned: bool = False):
        super().__init__()
        self.in_q = ActQuantizer(bits, signed=signed, learned=learned)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.in_q.enabled:
            return a + b
        qa, qb = self.in_q(torch.cat([a, b])).split([a.shape[0], b.shape[0]])
        return qa + qb


class QConcat(nn.Module):
    """``torch.cat(xs, dim)`` with every input on one shared grid: the integer graph concatenates
    the int tensors, and the consumer requantizes the result like any other value."""

    def __init__(self, bits=8, signed: bool = True, dim: int = 1, learned: bool = False):
        super().__init__()
        self.dim = dim
        self.in_q = ActQuantizer(bits, signed=signed, learned=learned)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.in_q(torch.cat(xs, self.dim))  # one quantizer: cat then quantize = quantize then cat

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class QAvgPool2d(nn.Module):
    """Average pooling of quantized values: the input is put on its own grid (``in_q``), the
    integer graph sums each window exactly in int32 and the consumer's requantization divides
    (the window size joins its multiplier). ``kernel_size`` None: global average pooling
    (``keepdim`` keeps the 1x1 spatial dims). Windows count their zero padding
    (``count_include_pad``)."""

    def __init__(self, bits=8, signed: bool = False, kernel_size=None, stride=None, padding=0,
                 keepdim: bool = True, learned: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.keepdim = keepdim
        self.in_q = ActQuantizer(bits, signed=signed, learned=learned)

    @property
    def is_global(self) -> bool:
        return self.kernel_size is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.in_q(x)
        if self.is_global:
            return xq.mean((2, 3), keepdim=self.keepdim)
        return F.avg_pool2d(xq, self.kernel_size, self.stride, self.padding, count_include_pad=True)

    def extra_repr(self) -> str:
        if self.is_global:
            return f"global, keepdim={self.keepdim}"
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


QUANT_LAYERS = (QConv2d, QLinear)


def quant_layers(model: nn.Module) -> list[tuple[str, _QuantLayer]]:
    """Quantized conv/linear layers of ``model`` in definition order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
