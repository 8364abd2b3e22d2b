"""llmref.encoder against independent references: Hugging Face ``tokenizers`` reading the
checkpoint's tokenizer.json (ids), ``transformers``' BertModel on the same weights (hidden
states) and sentence-transformers' SentenceTransformer loading the folder offline (sentence
embeddings). Plus the loader's refusals and the properties the course relies on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from autograder.checks.encoder import LONG_TEXT, MORE_SENTENCES, SENTENCES
from llmref import corpus
from llmref.encoder import (BERT_NAMES, Encoder, EncoderConfig, WordPieceTokenizer, bert_name,
                            embed_texts, load_encoder, minilm_folder)

FOLDER = minilm_folder()
ALL_SENTENCES = SENTENCES + MORE_SENTENCES

# sentence-transformers runs the same float32 operations in another order (and through
# transformers' attention kernels): measured worst difference 1.9e-7 (40 texts) to 2.4e-7 per component of
# unit-length embeddings. The course promises 1e-4.
ST_TOL = 1e-4
# Hidden states up to ~6 in size; float32 sums in another order differ by ~4e-6.
HIDDEN_TOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.from_folder(FOLDER)


@pytest.fixture(scope="module")
def model():
    return load_encoder(FOLDER)


@pytest.fixture(scope="module")
def hf_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def paragraphs(n: int) -> list[str]:
    """n paragraphs of the Part III corpus: real English prose, code and punctuation."""
    parts = [p.strip() for p in corpus.text().split("\n\n") if p.strip()]
    step = max(1, len(parts) // n)
    return parts[::step][:n]


# --------------------------------------------------------------------------- tokenizer

def test_ids_equal_hugging_face_tokenizers(tokenizer, hf_tokenizer):
    texts = ALL_SENTENCES + paragraphs(150)
    hf_tokenizer.enable_truncation(512)
    try:
        expected = [e.ids for e in hf_tokenizer.encode_batch(texts)]
    finally:
        hf_tokenizer.no_truncation()
    for text, ids in zip(texts, expected):
        got = tokenizer.encode(text)["input_ids"][0].tolist()
        assert got == ids, text


def test_truncation_keeps_cls_and_sep(tokenizer, hf_tokenizer):
    hf_tokenizer.enable_truncation(10)
    try:
        expected = hf_tokenizer.encode(LONG_TEXT).ids
    finally:
        hf_tokenizer.no_truncation()
    batch = tokenizer.encode([LONG_TEXT, "x"], max_length=10)
    assert batch["input_ids"][0].tolist() == expected
    assert batch["attention_mask"].sum(1).tolist() == [10, 3]


def test_default_truncation_is_the_models_positions(tokenizer):
    assert tokenizer.max_length == json.loads((FOLDER / "config.json").read_text())["max_position_embeddings"]
    batch = tokenizer.encode(" ".join(["word"] * 2000))
    assert batch["input_ids"].shape == (1, 512)


def test_padding_mask_and_segments(tokenizer):
    batch = tokenizer.encode(["a", "a b c"])
    assert batch["input_ids"].tolist()[0][3:] == [0, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert not batch["token_type_ids"].any()
    assert all(v.dtype == torch.long for v in batch.values())


def test_words_the_vocabulary_cannot_split_are_unknown(tokenizer):
    assert tokenizer.wordpiece("x" * 101) == ["[UNK]"]
    assert tokenizer.wordpiece("hello🙂") == ["[UNK]"]
    assert tokenizer.wordpiece("unaffable") == ["una", "##ffa", "##ble"]


@pytest.mark.parametrize("call, match", [
    (lambda t: t.encode([]), "at least one text"),
    (lambda t: t.encode("a", max_length=1), "between 2"),
    (lambda t: t.encode("a", max_length=513), "512"),
])
def test_bad_encode_arguments_are_refused(tokenizer, call, match):
    with pytest.raises(ValueError, match=match):
        call(tokenizer)


def test_from_folder_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_folder(tmp_path)
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        WordPieceTokenizer({"[PAD]": 0, "[UNK]": 1, "[SEP]": 2})


# ----------------------------------------------------------------------------- encoder

@pytest.mark.slow
def test_hidden_states_equal_transformers_bert(model, tokenizer):
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(FOLDER)).eval()
    batch = tokenizer.encode(ALL_SENTENCES)
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state
        got = model(**batch)
    real = batch["attention_mask"].bool()
    assert (got - expected)[real].abs().max() < HIDDEN_TOL * expected[real].abs().max()


@pytest.mark.slow
def test_sentence_embeddings_equal_sentence_transformers(model, tokenizer, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")       # a local folder: nothing to download
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(FOLDER), device="cpu")
    texts = ALL_SENTENCES + paragraphs(16)          # 40 texts, in padded batches
    assert len(texts) >= 20
    expected = st.encode(texts, batch_size=8, convert_to_numpy=True)
    ours = np.concatenate([model.embed(**tokenizer.encode(texts[i:i + 8], max_length=256)).detach().numpy()
                           for i in range(0, len(texts), 8)])
    worst = float(np.abs(ours - expected).max())
    with capsys.disabled():
        print(f"\nworst difference from sentence-transformers over {len(texts)} texts: {worst:.2e}")
    assert worst < ST_TOL
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_padding_changes_nothing(model, tokenizer):
    short = "A man is playing a guitar."
    with torch.no_grad():
        alone = model.embed(**tokenizer.encode([short]))
        batched = model.embed(**tokenizer.encode([LONG_TEXT, short, "Hi."]))
    assert torch.allclose(batched[1], alone[0], atol=1e-6)


def test_embed_texts_keeps_the_order(model, tokenizer):
    texts = ["Hi.", LONG_TEXT, "A man is playing a guitar."]
    with torch.no_grad():
        together = embed_texts(model, tokenizer, texts, batch_size=2)
        one_by_one = torch.cat([model.embed(**tokenizer.encode([t])) for t in texts])
    assert torch.allclose(together, one_by_one, atol=1e-6)


def test_too_many_tokens_are_refused(model):
    with pytest.raises(ValueError, match="truncate"):
        model(torch.zeros(1, 513, dtype=torch.long))


# ------------------------------------------------------------------------------ loader

TINY = dict(vocab_size=50, max_position_embeddings=16, type_vocab_size=2, hidden_size=8,
            num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
            layer_norm_eps=1e-12, hidden_act="gelu", model_type="bert")


def tiny_checkpoint(folder, prefix="", drop=None, reshape=None):
    """A random BERT-style checkpoint with BERT's tensor names, as transformers would save it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY))
    torch.manual_seed(0)
    tensors = {prefix + bert_name(k): torch.randn(v.shape)
               for k, v in Encoder(EncoderConfig.from_dict(TINY)).state_dict().items()}
    tensors[prefix + "pooler.dense.weight"] = torch.randn(8, 8)   # present in BERT, unused here
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = torch.randn(3, 3)
    save_file(tensors, folder / "model.safetensors")
    return tensors


def test_any_bert_style_folder_loads_by_name(tmp_path):
    tensors = tiny_checkpoint(tmp_path / "plain")
    model = load_encoder(tmp_path / "plain")
    assert not model.training
    for ours, value in model.state_dict().items():
        assert torch.equal(value, tensors[bert_name(ours)])
    tiny_checkpoint(tmp_path / "prefixed", prefix="bert.")
    assert torch.equal(load_encoder(tmp_path / "prefixed").tok_emb.weight, model.tok_emb.weight)


@pytest.mark.slow
def test_a_tiny_checkpoint_equals_transformers_bert(tmp_path):
    from transformers import BertConfig, BertModel

    tensors = tiny_checkpoint(tmp_path)
    bert = BertModel(BertConfig(**TINY), add_pooling_layer=False).eval()
    bert.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("pooler")}, strict=False)
    ids = torch.randint(0, 50, (3, 7))
    mask = (torch.arange(7)[None] < torch.tensor([7, 4, 1])[:, None]).long()
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        got = load_encoder(tmp_path)(ids, mask)
    real = mask.bool()
    assert (got - expected)[real].abs().max() < 1e-5


def test_a_missing_tensor_is_named(tmp_path):
    tiny_checkpoint(tmp_path, drop="encoder.layer.1.output.dense.weight")
    with pytest.raises(KeyError, match=r"encoder\.layer\.1\.output\.dense\.weight.*blocks\.1\.ffn_out\.weight.*\(8, 12\)"):
        load_encoder(tmp_path)


def test_a_shape_mismatch_names_both_shapes(tmp_path):
    tiny_checkpoint(tmp_path, reshape="embeddings.LayerNorm.weight")
    with pytest.raises(ValueError, match=r"embeddings\.LayerNorm\.weight.*\(3, 3\).*\(8,\)"):
        load_encoder(tmp_path)


def test_missing_files_and_unsupported_configs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder(tmp_path)
    with pytest.raises(ValueError, match="exact"):
        EncoderConfig.from_dict({**TINY, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="absolute"):
        EncoderConfig.from_dict({**TINY, "position_embedding_type": "relative_key"})


def test_every_bert_tensor_but_the_pooler_and_position_ids_is_used(model):
    theirs = set(load_file(FOLDER / "model.safetensors"))
    used = {bert_name(k) for k in model.state_dict()}
    assert theirs - used == {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
    assert len(BERT_NAMES) == 12
