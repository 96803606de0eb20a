"""robustq-deploy: train robust quantized models, export integer ONNX, compile with TVM, and
verify adversarial robustness on the deployed artifact."""
__version__ = "0.1.0"


def load(path, threads=None, target=None):
    """Runner for a deployed artifact (ONNX file, compiled library, or artifact folder with
    ``target`` picking its compiled library); see :mod:`.runtime`."""
    from .runtime import load as _load

    return _load(path, threads=threads, target=target)


__all__ = ["load", "__version__"]
