"""espzoo.transfer.vocab: ESPnet's token-list conventions (differential against espnet2.bin.tokenize_text), specs,
the old->new map and the overlap report, and the errors a user can cause."""

from __future__ import annotations

from pathlib import Path

import pytest
from _paths import SPEECH_ROOT

from espzoo.errors import VocabularyError
from espzoo.transfer.vocab import (
    SPACE,
    WORD_START,
    VocabSpec,
    build_vocabulary,
    parse_vocab_spec,
    pretrained_vocabulary,
    read_texts,
    spell,
    token_map,
)

SPEECH = SPEECH_ROOT
ES_TEXT = SPEECH / "es" / "train" / "text"
EN_TEXT = SPEECH / "en" / "train" / "text"


def espnet_token_list(text: Path, token_type: str, tmp_path: Path, bpemodel: Path | None = None) -> list[str]:
    """What asr.sh writes: tokenize_text --field 2- --write_vocabulary true with ESPnet's three symbols."""
    from espzoo.models.espnet_env import import_asr_task

    import_asr_task()  # the offline NLTK setup espnet2.text needs
    from espnet2.bin.tokenize_text import tokenize

    out = tmp_path / f"espnet_{token_type}.txt"
    tokenize(
        input=str(text), output=str(out), field="2-", delimiter=None, token_type=token_type, space_symbol="<space>",
        non_linguistic_symbols=None, bpemodel=str(bpemodel) if bpemodel else None, log_level="ERROR",
        write_vocabulary=True, vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
        add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None, add_nonsplit_symbol=[],
    )
    return out.read_text(encoding="utf-8").splitlines()


def test_char_token_list_is_espnets(tmp_path: Path) -> None:
    vocab = build_vocabulary(f"char:{ES_TEXT}")
    assert vocab.tokens == espnet_token_list(ES_TEXT, "char", tmp_path)
    assert vocab.tokens[0] == "<blank>" and vocab.tokens[1] == "<unk>" and vocab.tokens[-1] == "<sos/eos>"
    assert "á" in vocab.tokens and SPACE in vocab.tokens and vocab.token_type == "char"


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_sentencepiece_token_list_is_espnets(kind: str, tmp_path: Path) -> None:
    vocab = build_vocabulary(f"{kind}:40:{ES_TEXT}", workdir=tmp_path / "spm")
    assert vocab.bpemodel == tmp_path / "spm" / "bpe.model" and vocab.bpemodel.is_file()
    assert vocab.token_type == "bpe"
    assert vocab.tokens == espnet_token_list(ES_TEXT, "bpe", tmp_path, vocab.bpemodel)
    assert any(t.startswith(WORD_START) for t in vocab.tokens)
    assert len(vocab.tokens) <= 40 + 0  # sentencepiece's <unk>/<s>/</s> are replaced by ESPnet's three symbols
    assert [p.name for p in (tmp_path / "spm").iterdir()] == ["bpe.model"]  # no training leftovers


def test_spec_strings() -> None:
    assert parse_vocab_spec("keep") == VocabSpec("keep")
    assert parse_vocab_spec("char:data/train") == VocabSpec("char", path=Path("data/train"))
    assert parse_vocab_spec("char") == VocabSpec("char")
    assert parse_vocab_spec("bpe:500:a:b/text") == VocabSpec("bpe", 500, Path("a:b/text"))  # ':' in the path
    assert parse_vocab_spec("unigram:30") == VocabSpec("unigram", 30)
    assert parse_vocab_spec(str(ES_TEXT)).kind == "tokens"
    for bad in ("bpe:x:text", "bpe:0", "unigram:-3:t", "wordpiece:10:t", "no/such/file.txt"):
        with pytest.raises(VocabularyError, match="--vocab"):
            parse_vocab_spec(bad)


def test_texts_from_kaldi_dir_kaldi_file_and_plain_lines(tmp_path: Path) -> None:
    kaldi = read_texts(ES_TEXT.parent)
    assert kaldi == read_texts(ES_TEXT) and kaldi[0] == "el árbol duerme mucho a las ocho"
    plain = tmp_path / "lines.txt"
    plain.write_text("uno dos\n\ntres  cuatro\n")
    assert read_texts(plain) == ["uno dos", "tres  cuatro"]


def test_texts_given_by_the_caller_when_the_spec_names_no_file(tmp_path: Path) -> None:
    vocab = build_vocabulary("bpe:20", ["hola mundo", "hola amigo"] * 5, workdir=tmp_path)
    assert vocab.bpemodel and vocab.bpemodel.is_file()
    with pytest.raises(VocabularyError, match="needs text"):
        build_vocabulary("char", None)


def test_user_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "text"
    empty.write_text("utt1\nutt2   \n")
    with pytest.raises(VocabularyError, match="has no transcripts"):
        build_vocabulary(f"char:{empty}")
    with pytest.raises(VocabularyError, match="does not exist"):
        build_vocabulary(f"char:{tmp_path / 'missing' / 'text'}")
    with pytest.raises(VocabularyError, match=r"supports at most \d+ bpe units; use a smaller N"):
        build_vocabulary(f"bpe:5000:{ES_TEXT}", workdir=tmp_path / "w")
    with pytest.raises(VocabularyError, match=r"33 distinct characters, more than 10 units; use a larger N"):
        build_vocabulary(f"unigram:10:{ES_TEXT}", workdir=tmp_path / "w")
    assert not (tmp_path / "w" / "bpe.model").exists()  # nothing half-written


def test_token_list_files(tmp_path: Path) -> None:
    good = tmp_path / "tokens.txt"
    good.write_text("<blank>\n<unk>\na\nb\n<space>\n<sos/eos>\n")
    vocab = build_vocabulary(str(good))
    assert vocab.tokens == ["<blank>", "<unk>", "a", "b", SPACE, "<sos/eos>"] and vocab.token_type == "char"
    words = tmp_path / "words.txt"
    words.write_text("<blank>\n<unk>\nhola\nmundo\n<sos/eos>\n")
    assert build_vocabulary(str(words)).token_type == "word"
    cases = {
        "<blank>\n<unk>\nhello world\n<sos/eos>\n": "looks like a transcript file",
        "a\n<unk>\nb\n<sos/eos>\n": "must start with <blank>",
        "<blank>\n<unk>\na\na\n<sos/eos>\n": "repeats",
        "": "is empty",
        f"<blank>\n<unk>\n{WORD_START}a\n<sos/eos>\n": "no bpe.model lies beside it",
    }
    for i, (content, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}" / "tokens.txt"
        bad.parent.mkdir()
        bad.write_text(content)
        with pytest.raises(VocabularyError, match=message):
            build_vocabulary(str(bad))


def test_bpe_token_list_beside_its_model_and_the_model_alone(tmp_path: Path) -> None:
    trained = build_vocabulary(f"unigram:40:{ES_TEXT}", workdir=tmp_path)
    (tmp_path / "tokens.txt").write_text("\n".join(trained.tokens) + "\n")
    from_list = build_vocabulary(str(tmp_path / "tokens.txt"))
    assert from_list.tokens == trained.tokens and from_list.bpemodel == tmp_path / "bpe.model"
    from_model = build_vocabulary(str(tmp_path / "bpe.model"))
    # Every piece of the model, in the model's order: a superset of the pieces the text uses.
    assert set(trained.tokens) <= set(from_model.tokens) and len(from_model.tokens) == 40
    assert from_model.tokens[0] == "<blank>" and from_model.tokens[-1] == "<sos/eos>"


def test_map_and_overlap_report_by_hand() -> None:
    old = pretrained_vocabulary(["<blank>", "<unk>", "a", "b", SPACE, "<sos/eos>"], "char", None)
    new = build_vocabulary("char", ["ab c", "c"], old)
    assert new.tokens == ["<blank>", "<unk>", "c", "a", "b", SPACE, "<sos/eos>"]
    # old index -> new index: specials and a, b, <space>
    assert new.old_to_new == {0: 0, 1: 1, 2: 3, 3: 4, 4: 5, 5: 6}
    assert new.new_in_old == 3 / 4  # a, b, <space> of a, b, c, <space> (special symbols aside)
    assert new.text_coverage == 3 / 5  # a b <space> c c: 3 of 5 occurrences are shared tokens
    assert new.overlap()["shared_tokens"] == 6
    kept = build_vocabulary("keep", ["ab"], old)
    assert kept.tokens == old.tokens and kept.old_to_new == {i: i for i in range(6)} and kept.text_coverage == 1.0


def test_sentencepiece_word_start_is_the_char_space() -> None:
    assert token_map(["<blank>", SPACE, "a"], ["<blank>", "a", WORD_START]) == {0: 0, 2: 1, 1: 2}
    # an exact match wins over the alias
    assert token_map([SPACE, WORD_START], [WORD_START, SPACE]) == {1: 0, 0: 1}


def test_overlap_from_english_chars_to_spanish_bpe(tmp_path: Path) -> None:
    old = build_vocabulary(f"char:{EN_TEXT}")
    new = build_vocabulary(f"bpe:50:{ES_TEXT}", old=old, workdir=tmp_path)
    shared = {new.tokens[j] for j in new.old_to_new.values()}
    assert {"e", "a", WORD_START, "<blank>"} <= shared and "á" not in shared
    assert 0 < new.new_in_old < 1 and 0 < new.text_coverage < 1


def test_odd_unit_counts_encodings_and_broken_models_are_one_sentence(tmp_path: Path) -> None:
    from espzoo.errors import VocabularyError
    from espzoo.transfer.vocab import build_vocabulary, parse_vocab_spec, tokenize

    for spec in ("bpe:\u00b2", "bpe:3000000000", "unigram:0"):
        with pytest.raises(VocabularyError, match="must be a positive integer up to 1000000"):
            parse_vocab_spec(spec)
    latin1 = tmp_path / "text.txt"
    latin1.write_bytes("canción\n".encode("latin-1"))
    with pytest.raises(VocabularyError, match=r"text.txt is not UTF-8 text \(byte 0xf3 on line 1\)"):
        build_vocabulary(f"char:{latin1}")
    garbage = tmp_path / "bpe.model"
    garbage.write_bytes(b"this is not a sentencepiece model\n" * 10)
    with pytest.raises(VocabularyError, match=r"bpe.model is not a sentencepiece model"):
        tokenize(["hola"], "bpe", garbage)


def test_spell_a_new_token_with_the_old_char_vocabulary() -> None:
    old = pretrained_vocabulary(["<blank>", "<unk>", SPACE, "a", "l", "n", "o", "<sos/eos>"], "char", None)
    assert spell(f"{WORD_START}la", old) == (2, 4, 3)  # <space>, l, a
    assert spell("año", old) == (3, 5, 6)  # ñ: no row of its own, its base letter's
    assert spell("lx", old) is None  # x: nothing spells it, the caller falls back to the mean row
    assert spell("<mask>", old) is None and spell("<unk>", old) is None  # symbols are not text


def test_spell_with_the_old_sentencepiece_model_keeps_word_starts(tmp_path: Path) -> None:
    """A BPE old vocabulary spells a piece with the pieces its sentencepiece model gives the piece's text, where
    only a word-start piece (`▁...`) may use word-start pieces: the spelling concatenates back to the piece."""
    old = build_vocabulary(f"bpe:60:{EN_TEXT}", workdir=tmp_path / "en")
    new = build_vocabulary(f"bpe:60:{ES_TEXT}", old=old, workdir=tmp_path / "es")
    shared = set(new.old_to_new.values())
    spelled = {t: spell(t, old) for j, t in enumerate(new.tokens) if j not in shared}
    composed = {t: [old.tokens[i] for i in s] for t, s in spelled.items() if s is not None}
    assert len(composed) > 10 and any(len(parts) > 1 for parts in composed.values())
    for token, parts in composed.items():
        assert "".join(parts) in (token, token.replace("ñ", "n").replace("á", "a").replace("é", "e")
                                  .replace("í", "i").replace("ó", "o").replace("ú", "u")), (token, parts)
        assert token.startswith(WORD_START) or not any(p.startswith(WORD_START) for p in parts), (token, parts)
