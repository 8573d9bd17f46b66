"""Tiny Hugging Face models built locally, for the tests of ``hf:`` specs: a WordPiece tokenizer
trained on the test corpus (:mod:`text_corpus`), a 2-layer BERT classifier fine-tuned briefly on it
so that its outputs are decisive and differ from input to input, and a 1-layer ViT classifier.
Everything is written with ``save_pretrained`` into a folder, exactly as a user's folder would be;
nothing is downloaded.

Usage from any test module (the ``tests`` folder is on ``sys.path``)::

    from hf_fixtures import bert_folder, vit_folder

    @pytest.fixture(scope="session")
    def teacher_dir(tmp_path_factory):
        return bert_folder(tmp_path_factory)  # built once per session, then reused

``bert_folder`` / ``vit_folder`` cache their folder per session and per arguments, so several test
modules share one build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from text_corpus import reviews

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 48
"""The tokenizer's ``model_max_length`` and the BERT config's ``max_position_embeddings``."""

_BUILT: dict[tuple[Any, ...], Path] = {}


def corpus(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """The generated reviews (text, "pos" / "neg") the tokenizer and the teacher are trained on."""
    return reviews(n, seed=seed)


def train_tokenizer(texts: Sequence[str], *, vocab_size: int = 120, max_length: int = MAX_LENGTH) -> Any:
    """A lower-casing WordPiece tokenizer trained on ``texts``: ``[CLS] … [SEP]``, ``[PAD]`` = id 0."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def make_bert(
    path: Path,
    *,
    labels: Sequence[str] = ("neg", "pos"),
    generic_labels: bool = False,
    num_hidden_layers: int = 2,
    fine_tune_steps: int = 60,
    seed: int = 0,
) -> Path:
    """Write a tiny BERT sequence classifier and its tokenizer into ``path`` (``save_pretrained``).

    ``labels`` are its ``id2label`` (output i is ``labels[i]``; the fine-tune uses that order);
    ``generic_labels`` writes ``LABEL_0 …`` instead (the model is still trained with ``labels``' order).
    ``initializer_range=0.2`` and a short fine-tune on the corpus (60 Adam steps, ~94 % train accuracy)
    make the outputs decisive and input-dependent.
    """
    from transformers import BertConfig, BertForSequenceClassification

    rows = corpus()
    tokenizer = train_tokenizer([t for t, _ in rows])
    names = [f"LABEL_{i}" for i in range(len(labels))] if generic_labels else list(labels)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if fine_tune_steps:
        index = {name: i for i, name in enumerate(labels)}
        enc = tokenizer([t for t, _ in rows], padding="max_length", truncation=True, return_tensors="pt")
        y = torch.tensor([index[label] for _, label in rows])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(fine_tune_steps):
            idx = torch.randint(0, len(rows), (32,), generator=gen)
            out = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=y[idx])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_vit(
    path: Path,
    *,
    labels: Sequence[str] = tuple(str(i) for i in range(10)),
    image_size: int = 16,
    channels: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    seed: int = 0,
) -> Path:
    """Write a 1-layer ViT image classifier (patch 8) and its image processor into ``path``."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        num_channels=channels,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor = ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=list(mean), image_std=list(std)
    )
    processor.save_pretrained(path)
    return path


def _cached(factory: pytest.TempPathFactory, name: str, build: Any, **kwargs: Any) -> Path:
    key = (str(factory.getbasetemp()), name, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _BUILT:
        _BUILT[key] = build(factory.mktemp(name), **kwargs)
    return _BUILT[key]


def bert_folder(factory: pytest.TempPathFactory, **kwargs: Any) -> Path:
    """:func:`make_bert` with these arguments, built once per test session (treat it as read-only)."""
    return _cached(factory, "hf-bert", make_bert, **kwargs)


def vit_folder(factory: pytest.TempPathFactory, **kwargs: Any) -> Path:
    """:func:`make_vit` with these arguments, built once per test session (treat it as read-only)."""
    return _cached(factory, "hf-vit", make_vit, **kwargs)


def hf_logits(folder: Path, texts: Sequence[str], *, max_length: int = MAX_LENGTH) -> torch.Tensor:
    """The folder's own logits on its own tokenization: ``model(**tokenizer(texts)).logits`` (the
    reference kdlab's teacher must reproduce)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits
