"""``hf:`` models: local save_pretrained folders built in the test (tiny BERT with its own WordPiece
tokenizer, tiny ViT), wrapped as kdlab models; label matching by name; declared inputs; the
DistilBERT-style init from the teacher; one-line errors for every bad spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hf_fixtures import MAX_LENGTH, bert_folder, corpus, hf_logits, vit_folder

from kdlab.errors import ConfigError
from kdlab.models import from_hf
from kdlab.models.registry import create_model

CLASSES = ["neg", "pos"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_folder(tmp_path_factory)


@pytest.fixture(scope="session")
def reversed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """id2label = the data's classes in reverse order (output 0 is "pos")."""
    return bert_folder(tmp_path_factory, labels=("pos", "neg"))


def texts(n: int = 24) -> list[str]:
    return [t for t, _ in corpus()[:n]]


def own_ids(folder: Path, batch: list[str]) -> torch.Tensor:
    """The folder's own tokenization, padded to MAX_LENGTH (what a teacher view feeds the model)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(batch, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    return enc["input_ids"]


def build(folder: Path | str, *, key: str = "teacher.model", **kw: object) -> torch.nn.Module:
    args: dict[str, object] = dict(
        num_classes=2, input_shape=(MAX_LENGTH,), classes=CLASSES, pretrained=False, config=None
    )
    args.update(kw)
    return from_hf.build_hf(str(folder), key=key, **args).eval()  # type: ignore[arg-type]


def test_wrapped_logits_equal_the_models_own_on_its_tokenization(bert_dir: Path) -> None:
    batch = texts()
    model = create_model(
        f"hf:{bert_dir}", num_classes=2, input_shape=(MAX_LENGTH,), classes=CLASSES, key="teacher.model"
    ).eval()
    assert isinstance(model, from_hf.HFClassifier) and model.kind == "text" and model.pad_token_id == 0
    ids = own_ids(bert_dir, batch)
    assert (ids == 0).any()  # padded batches: the attention mask matters
    with torch.no_grad():
        got = model(ids)
    want = hf_logits(bert_dir, batch)
    assert got.shape == (len(batch), 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # a decisive teacher whose outputs vary with the input (a near-uniform one would hide mistakes)
    margin = (want[:, 1] - want[:, 0]).abs()
    assert margin.mean() > 1.0 and want.std(0).min() > 0.5
    labels = torch.tensor([CLASSES.index(y) for _, y in corpus()[: len(batch)]])
    assert (got.argmax(1) == labels).float().mean() >= 0.8


def test_named_labels_in_another_order_are_matched_by_name(reversed_dir: Path) -> None:
    batch = texts()
    model = build(reversed_dir)
    with torch.no_grad():
        got = model(own_ids(reversed_dir, batch))
    own = hf_logits(reversed_dir, batch)  # column 0 is "pos" in the folder's own order
    torch.testing.assert_close(got, own[:, [1, 0]], atol=1e-5, rtol=0)
    assert model.data_order() == [1, 0]
    labels = torch.tensor([CLASSES.index(y) for _, y in corpus()[: len(batch)]])
    assert (got.argmax(1) == labels).float().mean() >= 0.8  # output j is the data's class j


def test_generic_labels_are_taken_in_order(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = bert_folder(tmp_path_factory, generic_labels=True, fine_tune_steps=0)
    model = build(folder, classes=["b", "a"])
    assert model.index is None and from_hf.config_labels(model.model.config) is None
    batch = texts(6)
    with torch.no_grad():
        torch.testing.assert_close(model(own_ids(folder, batch)), hf_logits(folder, batch), atol=1e-5, rtol=0)


def one_line(excinfo: pytest.ExceptionInfo[ConfigError], *parts: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


def test_bad_specs_are_one_line_naming_the_key(tmp_path: Path, bert_dir: Path, reversed_dir: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build(tmp_path / "missing", key="teacher.model")
    one_line(e, "teacher.model", "no such folder")
    with pytest.raises(ConfigError) as e:
        build(tmp_path, key="student.model")
    one_line(e, "student.model", "no config.json", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        build("someone/bert-tiny", key="teacher.model")
    one_line(e, "teacher.model", "not available offline", "teacher.model=hf:DIR")
    with pytest.raises(ConfigError) as e:
        build(bert_dir, key="student.model", config={"num_hidden_layer": 1})
    one_line(e, "student.config", "num_hidden_layer", "BertConfig")
    with pytest.raises(ConfigError) as e:
        build(bert_dir, key="student.model", config={"num_labels": 3})
    one_line(e, "student.config", "num_labels")
    with pytest.raises(ConfigError) as e:
        build(reversed_dir, classes=["negative", "positive"])
    one_line(e, "teacher.model", "(pos, neg)", "(negative, positive)")
    with pytest.raises(ConfigError) as e:
        build(bert_dir, num_classes=3, classes=["a", "b", "c"])
    one_line(e, "has 2 labels (neg, pos) but the data has 3 classes")
    with pytest.raises(ConfigError) as e:
        build(bert_dir, input_shape=(3, 16, 16))
    one_line(e, "text classifier", "images")


def test_offline_hub_id_through_the_spec_dispatch() -> None:
    with pytest.raises(ConfigError) as e:
        create_model("hf:prajjwal1/bert-tiny", num_classes=2, input_shape=(16,), key="teacher.model")
    one_line(e, "teacher.model: hf:prajjwal1/bert-tiny is a Hugging Face hub id and is not available offline")


def test_config_overrides_build_a_fresh_smaller_model(bert_dir: Path) -> None:
    torch.manual_seed(0)
    small = build(
        bert_dir, key="student.model", config={"num_hidden_layers": 1}, num_classes=3, classes=["a", "b", "c"]
    )
    assert len(small.model.base_model.encoder.layer) == 1
    assert small.model.config.num_labels == 3 and small.model.config.id2label == {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        assert small(own_ids(bert_dir, texts(4))).shape == (4, 3)
    torch.manual_seed(0)
    again = build(
        bert_dir, key="student.model", config={"num_hidden_layers": 1}, num_classes=3, classes=["a", "b", "c"]
    )
    teacher = build(bert_dir)
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(small.model.base_model.state_dict()[emb], again.model.base_model.state_dict()[emb])  # seeded
    assert not torch.equal(small.model.base_model.state_dict()[emb], teacher.model.base_model.state_dict()[emb])


def test_declared_inputs_of_a_text_folder(bert_dir: Path, tmp_path: Path) -> None:
    declared = from_hf.declared_hf(f"hf:{bert_dir}", key="teacher.model")
    assert declared.tokenizer == bert_dir and declared.max_length == MAX_LENGTH
    assert declared.labels == ("neg", "pos") and declared.image_size is None
    # a tokenizer with no real limit (transformers' 1e30) falls back to max_position_embeddings; a
    # longer tokenizer limit is capped by it
    copy = Path(shutil.copytree(bert_dir, tmp_path / "copy"))
    config_file = copy / "tokenizer_config.json"
    tok = json.loads(config_file.read_text())
    for limit in (int(1e30), 4096):
        config_file.write_text(json.dumps({**tok, "model_max_length": limit}))
        assert from_hf.declared_hf(copy, key="teacher.model").max_length == MAX_LENGTH
    config_file.write_text(json.dumps({**tok, "model_max_length": 20}))
    assert from_hf.declared_hf(copy, key="teacher.model").max_length == 20
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink()
    assert from_hf.declared_hf(copy, key="teacher.model").tokenizer is None


def test_image_folder_builds_and_declares_its_processor(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = vit_folder(tmp_path_factory)
    classes = [str(i) for i in range(10)]
    model = build(folder, num_classes=10, input_shape=(3, 16, 16), classes=classes)
    assert model.kind == "image"
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        own = model.model(pixel_values=x).logits
    assert logits.shape == (5, 10) and torch.equal(logits, own) and logits.std(0).min() > 0.01
    declared = from_hf.declared_hf(folder, key="teacher.model")
    assert (declared.image_size, declared.channels) == (16, 3)
    assert declared.mean == (0.5, 0.5, 0.5) and declared.std == (0.25, 0.25, 0.25)
    assert declared.labels is None or declared.labels == tuple(classes)
    assert declared.tokenizer is None


def test_teacher_layer_map() -> None:
    assert from_hf.teacher_layer_map(6, 12) == [0, 2, 4, 7, 9, 11]
    assert from_hf.teacher_layer_map(2, 4) == [0, 3]
    assert from_hf.teacher_layer_map(3, 5) == [0, 2, 4]
    assert from_hf.teacher_layer_map(1, 2) == [0]
    assert from_hf.teacher_layer_map(4, 4) == [0, 1, 2, 3]


def test_init_from_teacher_copies_embeddings_and_layers(bert_dir: Path) -> None:
    teacher = build(bert_dir)
    torch.manual_seed(1)
    student = build(bert_dir, key="student.model", config={"num_hidden_layers": 1})
    t_sd, s_before = teacher.model.state_dict(), {k: v.clone() for k, v in student.model.state_dict().items()}
    record = from_hf.init_from_teacher(student, teacher)
    assert record["layers"] == {"0": 0} and record["embeddings"] and record["classifier"] and record["pooler"]
    s_sd = student.model.state_dict()
    copied = [
        k for k in s_sd if k.startswith(("bert.embeddings.", "bert.encoder.layer.0.", "bert.pooler.", "classifier."))
    ]
    assert len(copied) == len(s_sd)  # every tensor of a 1-layer student comes from the teacher
    for k in copied:
        assert torch.equal(s_sd[k], t_sd[k]), k
    assert any(not torch.equal(s_before[k], s_sd[k]) for k in copied)  # it did change the fresh weights


def test_init_from_teacher_keeps_each_class_row(reversed_dir: Path) -> None:
    """A teacher whose labels are in the reverse order of the data's: the copied head still gives each
    data class the teacher's row for it, so a full-depth copy predicts exactly what the teacher does."""
    teacher = build(reversed_dir)
    torch.manual_seed(2)
    student = build(reversed_dir, key="student.model", config={"num_hidden_layers": 2})  # data order, fresh
    assert student.index is None and teacher.data_order() == [1, 0]
    from_hf.init_from_teacher(student, teacher)
    ids = own_ids(reversed_dir, texts(8))
    with torch.no_grad():
        torch.testing.assert_close(student(ids), teacher(ids), atol=1e-5, rtol=0)


def test_init_from_teacher_refuses_other_shapes_and_models(
    bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    teacher = build(bert_dir)
    wide = build(bert_dir, key="student.model", config={"hidden_size": 16, "intermediate_size": 20})
    with pytest.raises(ConfigError) as e:
        from_hf.init_from_teacher(wide, teacher)
    one_line(e, "student.init_from_teacher", "[120, 32] in the teacher but [120, 16] in the student")
    vit = build(vit_folder(tmp_path_factory), num_classes=10, input_shape=(3, 16, 16), classes=None)
    with pytest.raises(ConfigError) as e:
        from_hf.init_from_teacher(vit, teacher)
    one_line(e, "student.init_from_teacher")
    deep = build(bert_dir, key="student.model", config={"num_hidden_layers": 3})
    with pytest.raises(ConfigError) as e:
        from_hf.init_from_teacher(deep, teacher)
    one_line(e, "3 layers, more than the teacher's 2")
