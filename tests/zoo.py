"""The test zoo: the trained example models every test folder shares, trained once per session.

Each entry is a run config (seeded, one torch thread); :meth:`Zoo.checkpoint` trains it with the
train stage on first use into its own artifact folder (checkpoint and manifest) and returns the
checkpoint; later calls, from any folder's fixtures, get the same file. Folders that need a
model for their own purpose (export forms, compiled libraries, reports) build on these instead
of training their own, in a copy of the entry's folder (:meth:`Zoo.copy`).

=======================  ===========================================================  ===================
entry                    model                                                        used by
=======================  ===========================================================  ===================
``digits-int8``          mnist-cnn w8/a8, QAT 2 epochs on the 8x8 digits              compile, export, twin
``digits-int4``          mnist-cnn w4/a4, QAT 2 epochs                                compile
``digits-bnn``           mnist-bnn binary (8-bit first layer), QAT 3 epochs           compile, export
``digits-cnn-qat``       digits-cnn int8, QAT 1 epoch                                 faults
``digits-cnn-pgd-at``    digits-cnn int8, PGD-AT 4 epochs (eps 0.1)                   verify
``digits-cnn-ibp``       digits-cnn int8, IBP 6 epochs (eps 0.1)                      certify
``mnist-<kind>-tiny``    int8 / ternary / bnn on 256 MNIST images, QAT 1 epoch        accel
``mnist-float-pgd-at``   float mnist-cnn, PGD-AT 2 epochs on 3000 MNIST images        attacks
=======================  ===========================================================  ===================
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robustq_deploy.config import RunConfig, from_dict, to_dict
from robustq_deploy.models.examples import EXAMPLE_MODELS

QAT = {"method": "qat", "batch_size": 64, "lr": 3e-3, "seed": 0, "threads": 1}


def _example(key: str, dataset: dict[str, Any], epochs: int) -> dict[str, Any]:
    arch, quant = EXAMPLE_MODELS[key]
    return {"data": dataset, "model": {"arch": arch}, "quant": to_dict(quant), "train": {**QAT, "epochs": epochs}}


DIGITS = {"dataset": "digits"}
MNIST_TINY = {"dataset": "mnist", "train_limit": 256, "test_limit": 64}

ZOO: dict[str, dict[str, Any]] = {
    "digits-int8": _example("int8", DIGITS, 2),
    "digits-int4": _example("int4", DIGITS, 2),
    "digits-bnn": _example("bnn", DIGITS, 3),
    "digits-cnn-qat": {"data": DIGITS, "model": {"arch": "digits-cnn"}, "train": {**QAT, "epochs": 1}},
    "digits-cnn-pgd-at": {"data": DIGITS, "model": {"arch": "digits-cnn"},
                          "train": {**QAT, "method": "pgd-at", "epochs": 4, "params": {"clean_weight": 0.5},
                                    "attack": {"eps": 0.1, "steps": 3}}},
    "digits-cnn-ibp": {"data": DIGITS, "model": {"arch": "digits-cnn"},
                       "train": {**QAT, "method": "ibp", "epochs": 6, "params": {"warmup_epochs": 1, "ramp_epochs": 3},
                                 "attack": {"eps": 0.1}}},
    "mnist-int8-tiny": _example("int8", MNIST_TINY, 1),
    "mnist-ternary-tiny": _example("ternary", MNIST_TINY, 1),
    "mnist-bnn-tiny": _example("bnn", MNIST_TINY, 1),
    "mnist-float-pgd-at": {"data": {"dataset": "mnist", "train_limit": 3000, "test_limit": 100},
                           "model": {"arch": "mnist-cnn"}, "quant": {"weight_bits": 32, "act_bits": 32},
                           "train": {**QAT, "method": "pgd-at", "epochs": 2, "lr": 2e-3,
                                     "attack": {"eps": 0.3, "steps": 1, "step_size": 0.375, "random_start": True}}},
}


def zoo_config(name: str) -> RunConfig:
    return from_dict(RunConfig, {"name": f"zoo-{name}", **ZOO[name]})


class Zoo:
    """The session's trained models, each trained on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._done: dict[str, Path] = {}

    def checkpoint(self, name: str) -> Path:
        """The checkpoint of entry ``name`` (its folder holds the manifest)."""
        if name not in self._done:
            from robustq_deploy.train import train_stage

            self._done[name] = train_stage(zoo_config(name), self.root / name, progress=False).file
        return self._done[name]

    def copy(self, name: str, dest: Path) -> Path:
        """A copy of entry ``name``'s artifact folder at ``dest`` (to add exports, libraries and
        reports to without touching the shared one); returns the copied checkpoint."""
        import shutil

        src = self.checkpoint(name)
        shutil.copytree(src.parent, dest, dirs_exist_ok=True)
        return dest / src.name


__all__ = ["ZOO", "Zoo", "zoo_config"]
