"""The fault-injection suite's artifact folder: a digits model trained for one epoch (the shared
zoo's ``digits-cnn-qat``, :mod:`tests.zoo`), exported as QDQ ONNX, compiled for this x86 CPU and
verified on a few points, all with the CLI's own stage functions; each test works on a copy
(:func:`fresh`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, ExportConfig, RunConfig, VerifyConfig, from_dict
from robustq_deploy.export import export_stage
from robustq_deploy.manifest import resolve_input
from robustq_deploy.verify import verify_stage

from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)
from tests.zoo import zoo_config

REPO = Path(__file__).resolve().parents[2]

VERIFY = {"attacks": ["pgd"], "steps": 2, "limit": 16, "batch_size": 16, "threads": 1, "float_model": False,
          "amplification": False, "validity": {"points": 8}}


def run_config() -> RunConfig:
    return zoo_config("digits-cnn-qat")


@pytest.fixture(scope="session")
def artifacts(zoo, tmp_path_factory) -> Path:
    """checkpoint, model.qdq.onnx, model.x86.so and a report, with their manifest."""
    out = tmp_path_factory.mktemp("faults")
    ckpt = resolve_input(zoo.copy("digits-cnn-qat", out), kind="checkpoint")
    onnx_art = export_stage(ckpt.file, ExportConfig(format="qdq"), out)
    compile_stage(onnx_art.file, CompileConfig(target="x86"), out)
    verify_stage(out / "model.x86.so", from_dict(VerifyConfig, VERIFY), out, progress=False)
    return out


@pytest.fixture
def fresh(artifacts, tmp_path) -> Path:
    """A private copy of the artifact folder."""
    dest = tmp_path / "art"
    shutil.copytree(artifacts, dest)
    return dest


def robustq(*args, env: dict | None = None, timeout: float = 600, prelude: str = "") -> subprocess.CompletedProcess:
    """``robustq ARGS`` in a fresh Python process (``prelude`` runs first: a fault to inject)."""
    code = f"{prelude}\nfrom robustq_deploy.cli import main\nmain({[str(a) for a in args]!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The refusal's message, after checking it is one ``error:`` line with exit code 2 and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def listed_and_intact(folder: Path) -> list[str]:
    """Problems of ``folder``: a visible file no manifest entry covers, or a listed file whose bytes
    differ from its entry (temp files of a killed process are hidden and cleaned later)."""
    from robustq_deploy.manifest import Manifest, sha256_file

    arts = Manifest.load(folder).artifacts
    listed = {a.path for a in arts}
    covered = set(listed)
    for a in arts:  # files an entry lists besides its own (report views, accelerator files)
        covered |= {v["path"] for v in a.meta.get("files", {}).values()} if isinstance(a.meta.get("files"), dict) else set()
    problems = [f"unlisted {p.name}" for p in sorted(folder.iterdir())
                if not p.name.startswith(".") and p.name != "manifest.json" and p.is_file()
                and p.name not in covered and not p.name.endswith(".state.safetensors")
                and not p.name.endswith(".train-state.safetensors")]
    problems += [f"modified {a.path}" for a in arts if (folder / a.path).is_file() and sha256_file(folder / a.path) != a.sha256]
    return problems


def refused(capsys, *args) -> str:
    """Run ``robustq ARGS`` in-process and return its one-line error (exit 2, no exception escapes)."""
    from tests.helpers import run_cli

    code, out, err = run_cli(list(args), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    return lines[0]
