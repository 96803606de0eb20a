"""The accelerator description: a small typed TOML file a user can copy and edit.

An :class:`AccelDesc` says what the FPGA-like accelerator has and what the cost model charges:

* ``[mac_array]`` ``rows x cols`` int8 multiply-accumulate lanes: ``rows`` output channels are
  computed in parallel, each reducing ``cols`` products per cycle (``rows * cols`` MACs/cycle);
* ``[xnor_array]`` (optional) the same for binary layers, ``cols`` XNOR/popcount bits per row
  per cycle (a multiple of 32: the simulation works on 32-bit words);
* ``weight_bits`` / ``act_bits``: the operand formats the datapath takes (``8``, ``4``,
  ``"ternary"``, ``"binary"``); a layer whose values fit none of them stays on the host;
* ``weight_buffer_kib`` / ``act_buffer_kib``: on-chip weight and activation memories;
* ``clock_mhz``, ``dram_gb_per_s`` (off-chip bandwidth, 10^9 bytes/s), ``dma_overlap``
  (double-buffered DMA: data movement overlaps compute);
* fixed overheads: ``layer_setup_cycles`` (per layer and image: descriptor fetch, DMA set-up)
  and ``pipeline_depth`` (fill of the MAC pipeline, once per tile pass);
* ``max_pool``: whether non-overlapping max pooling can be fused on the output path.

Presets live in ``targets/fpga/<name>.toml`` with their assumptions written next to them;
:func:`load_accel` takes a preset name or a path to a user's file. Unknown keys and wrong types
are refused with a one-line :class:`~robustq_deploy.errors.ConfigError`. To add a field, add it
here with a default (old files keep loading), use it in :mod:`.cost` / :mod:`.schedule`, and
document it in the presets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import from_dict, to_dict
from ..errors import ConfigError
from ..targets import shipped
from ..tomlfile import read_toml

PRESET_DIR = shipped() / "fpga"  # package data (importlib.resources)
DEFAULT_PRESET = "edge-small"
# Operand formats the datapath can take, narrowest first, with their storage bits.
FORMAT_BITS = {"binary": 1, "ternary": 2, "4": 4, "8": 8}
WORD_BITS = 32  # XNOR lanes work on 32-bit words


@dataclass(frozen=True)
class ArrayShape:
    rows: int  # output channels in parallel
    cols: int  # reduction lanes per row (int8 MACs, or XNOR bits)

    @property
    def lanes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class AccelDesc:
    name: str
    clock_mhz: float
    mac_array: ArrayShape
    weight_buffer_kib: float
    act_buffer_kib: float
    dram_gb_per_s: float
    description: str = ""
    xnor_array: ArrayShape | None = None
    weight_bits: tuple[str, ...] = ("8",)
    act_bits: tuple[str, ...] = ("8",)
    layer_setup_cycles: int = 0
    pipeline_depth: int = 0
    dma_overlap: bool = True
    max_pool: bool = True
    notes: str = ""

    @property
    def weight_buffer_bytes(self) -> int:
        return int(self.weight_buffer_kib * 1024)

    @property
    def act_buffer_bytes(self) -> int:
        return int(self.act_buffer_kib * 1024)

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_gb_per_s * 1e9 / (self.clock_mhz * 1e6)

    def as_dict(self) -> dict:
        return to_dict(self)


def _problems(d: AccelDesc) -> list[str]:
    out = []
    for key in ("clock_mhz", "weight_buffer_kib", "act_buffer_kib", "dram_gb_per_s"):
        if getattr(d, key) <= 0:
            out.append(f"{key} must be > 0")
    for key in ("layer_setup_cycles", "pipeline_depth"):
        if getattr(d, key) < 0:
            out.append(f"{key} must be >= 0")
    for key in ("mac_array", "xnor_array"):
        a = getattr(d, key)
        if a is not None and (a.rows < 1 or a.cols < 1):
            out.append(f"{key}: rows and cols must be >= 1")
    if d.xnor_array is not None and d.xnor_array.cols % WORD_BITS:
        out.append(f"xnor_array.cols must be a multiple of {WORD_BITS}")
    for key in ("weight_bits", "act_bits"):
        unknown = [b for b in getattr(d, key) if b not in FORMAT_BITS]
        if unknown:
            out.append(f"{key}: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMAT_BITS)}")
    if "binary" in d.weight_bits and "binary" in d.act_bits and d.xnor_array is None:
        out.append("binary weights and activations are listed but there is no [xnor_array]")
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in PRESET_DIR.iterdir() if p.name.endswith(".toml"))


def preset_path(name: str):
    """A preset name (``edge-small``, a shipped file) or a path to a description file."""
    if name.endswith(".toml") or "/" in name:
        return Path(name)
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown accelerator preset {name!r}; choose one of {', '.join(preset_names())} "
                          "or give a .toml file")
    return path


def load_accel(name: str | None = None) -> AccelDesc:
    """The accelerator description of a preset name or file (default :data:`DEFAULT_PRESET`)."""
    path = preset_path(name or DEFAULT_PRESET)
    data = read_toml(path, "accelerator file")
    for key in ("weight_bits", "act_bits"):
        if key in data and isinstance(data[key], list):
            data[key] = [str(v) for v in data[key]]
    try:
        desc = from_dict(AccelDesc, data, "accelerator")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    problems = _problems(desc)
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return desc


__all__ = ["AccelDesc", "ArrayShape", "DEFAULT_PRESET", "FORMAT_BITS", "PRESET_DIR", "WORD_BITS", "load_accel",
           "preset_names", "preset_path"]
