"""Tests for the synthetic task, the word-level LLaDA2-style tokenizer and the exact-match scorer."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from dmax_core.tasks import Problem, build_task, load_problems, save_problems
from dmax_core.tasks.running_total import (
    DEFAULT_ADD_VERBS,
    DEFAULT_SUB_VERBS,
    count_questions,
    extract_final_answer,
    generate_problems,
    make_splits,
    vocabulary,
)
from dmax_core.tokenizer import (
    build_tokenizer,
    encode,
    load_tokenizer,
    render_conversation,
    render_prompt,
    save_tokenizer,
    special_token_ids,
)

LONG = {"min_steps": 8, "max_steps": 12}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(vocabulary())


# ---------------------------------------------------------------- independent checker of one problem


def _check_problem(p: Problem, add_verbs=DEFAULT_ADD_VERBS, sub_verbs=DEFAULT_SUB_VERBS) -> int:
    """Re-derive the answer from the question words and check the chain text; returns the step count."""
    q = p.question.split(" ")
    assert q[-4:] == ["How", "many", "now", "?"], p.question
    sentences = " ".join(q[:-4]).split(" . ")
    sentences[-1] = sentences[-1].removesuffix(" .")
    name, has, start, obj = sentences[0].split(" ")
    assert has == "has"
    total = int(start)
    expected: list[tuple[str, int, int]] = []  # (op, operand, result)
    for s in sentences[1:]:
        n, verb, k, o = s.split(" ")
        assert (n, o) == (name, obj), s
        k = int(k)
        assert 1 <= k <= 9
        if verb in add_verbs:
            op, total_new = "+", total + k
        else:
            assert verb in sub_verbs, verb
            op, total_new = "-", total - k
        assert 0 <= total_new <= 9
        expected.append((op, k, total_new))
        total = total_new

    parts = p.answer.split(" . ")
    final = parts[-1]
    m = re.fullmatch(r"#### (\d)", final)
    assert m, p.answer
    assert len(parts) - 1 == len(expected)
    running = int(start)
    for part, (op, k, res) in zip(parts[:-1], expected, strict=True):
        mm = re.fullmatch(r"(\d) ([+-]) (\d) = (\d)", part)
        assert mm, part
        a, sign, b, c = int(mm[1]), mm[2], int(mm[3]), int(mm[4])
        assert sign == op
        assert c == (a + b if sign == "+" else a - b)  # the arithmetic itself
        if sign == "+":
            assert sorted((a, b)) == sorted((running, k))  # operands are the previous result and k
        else:
            assert (a, b) == (running, k)
        assert c == res
        running = c
    assert int(m[1]) == running == total
    assert p.final_answer == str(total)
    return len(expected)


# ---------------------------------------------------------------- generator


def test_generation_is_deterministic_and_seed_dependent():
    a = generate_problems(50, seed=3)
    assert a == generate_problems(50, seed=3)
    assert a != generate_problems(50, seed=4)
    assert generate_problems(0, seed=1) == []


def test_every_chain_recomputes_and_matches_story():
    steps = Counter(_check_problem(p) for p in generate_problems(400, seed=0))
    assert set(steps) == {3, 4}
    long_steps = Counter(_check_problem(p) for p in generate_problems(200, seed=1, **LONG))
    assert set(long_steps) <= set(range(8, 13)) and len(long_steps) >= 4


def test_plus_operands_come_in_both_orders():
    orders = Counter()
    for p in generate_problems(300, seed=5):
        q = p.question.split(" . ")
        running = int(q[0].split(" ")[2])
        for part in p.answer.split(" . ")[:-1]:
            a, op, b, _, c = part.split(" ")
            if op == "+" and a != b:
                orders["prev_first" if int(a) == running else "prev_second"] += 1
            running = int(c)
    assert orders["prev_first"] > 50 and orders["prev_second"] > 50


def test_difficulty_knobs_change_lengths_and_words():
    short = generate_problems(100, seed=2, min_steps=1, max_steps=1)
    long = generate_problems(100, seed=2, **LONG)
    assert max(len(p.answer.split()) for p in short) < min(len(p.answer.split()) for p in long)
    custom = generate_problems(20, seed=2, names=["Kai"], objects=["nuts"], add_verbs=["picks"],
                               sub_verbs=["drops"])
    for p in custom:
        _check_problem(p, add_verbs=("picks",), sub_verbs=("drops",))
        assert p.question.startswith("Kai has ") and "nuts" in p.question
    with pytest.raises(ValueError, match="max_steps"):
        generate_problems(1, seed=0, min_steps=4, max_steps=3)
    with pytest.raises(ValueError, match="names"):
        generate_problems(1, seed=0, names=["two words"])
    with pytest.raises(TypeError):
        generate_problems(1, seed=0, steps=3)


def test_vocabulary_covers_everything_emitted():
    for kw in ({}, LONG):
        vocab = set(vocabulary(**kw))
        for p in generate_problems(200, seed=7, **kw):
            assert set(p.question.split()) <= vocab
            assert set(p.answer.split()) <= vocab
            # single spaces only, so word-level tokenization round-trips
            assert "  " not in p.question + p.answer and p.answer == p.answer.strip()


# ---------------------------------------------------------------- splits


def test_splits_disjoint_and_sized():
    s = make_splits(300, 50, 60, seed=11)
    assert [len(s[k]) for k in ("train", "validation", "test")] == [300, 50, 60]
    qs = {k: [p.question for p in v] for k, v in s.items()}
    for k, v in qs.items():
        assert len(set(v)) == len(v), k
    assert not set(qs["train"]) & set(qs["test"])
    assert not set(qs["train"]) & set(qs["validation"])
    assert not set(qs["validation"]) & set(qs["test"])
    # held-out sets do not depend on the training size; everything is deterministic
    s2 = make_splits(10, 50, 60, seed=11)
    assert s2["test"] == s["test"] and s2["validation"] == s["validation"]
    assert make_splits(300, 50, 60, seed=11) == s


def test_split_space_too_small_is_a_clear_error():
    tiny = {"names": ["Mia"], "objects": ["books"], "add_verbs": ["gets"], "sub_verbs": ["loses"],
            "min_steps": 1, "max_steps": 1}
    # start 1..9, then 9 possible (verb, operand) moves from every start -> 81 questions
    assert count_questions(**tiny) == 81
    seen = {p.question for p in generate_problems(3000, seed=0, **tiny)}
    assert len(seen) == 81
    full = make_splits(61, 10, 10, seed=0, **tiny)
    assert len({p.question for v in full.values() for p in v}) == 81
    with pytest.raises(ValueError, match="allow only 81"):
        make_splits(70, 10, 10, seed=0, **tiny)


# ---------------------------------------------------------------- jsonl


def test_jsonl_round_trip_and_atomic(tmp_path):
    probs = generate_problems(5, seed=0)
    path = save_problems(probs, tmp_path / "sub" / "test.jsonl")
    assert load_problems(path) == probs
    assert [f.name for f in path.parent.iterdir()] == ["test.jsonl"]  # no temp file left behind


def test_jsonl_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"question": "q", "answer": "#### 1", "final_answer": "1"})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_problems(path)
    path.write_text(good + "\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: missing field"):
        load_problems(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: expected a JSON object"):
        load_problems(path)


# ---------------------------------------------------------------- tokenizer


def test_chat_template_exact_strings(tok):
    q, a = "Mia has 8 books . How many now ?", "#### 8"
    head = "<role>SYSTEM</role>detailed thinking off<|role_end|>"
    assert render_prompt(tok, q) == head + f"<role>HUMAN</role>{q}<|role_end|><role>ASSISTANT</role>"
    assert render_conversation(tok, q, a) == (
        head + f"<role>HUMAN</role>{q}<|role_end|><role>ASSISTANT</role>{a}<|role_end|>"
    )
    with_system = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief"}, {"role": "user", "content": q}],
        add_generation_prompt=True, tokenize=False,
    )
    assert with_system == (
        "<role>SYSTEM</role>Be brief\ndetailed thinking off<|role_end|>"
        f"<role>HUMAN</role>{q}<|role_end|><role>ASSISTANT</role>"
    )


def test_special_tokens_split_without_spaces(tok):
    ids = encode(tok, "<role>SYSTEM</role>detailed thinking off<|role_end|><|mask|><|endoftext|>")
    assert tok.convert_ids_to_tokens(ids) == [
        "<role>", "SYSTEM", "</role>", "detailed", "thinking", "off", "<|role_end|>", "<|mask|>",
        "<|endoftext|>",
    ]
    assert tok.unk_token_id not in ids


def test_special_ids(tok):
    ids = special_token_ids(tok)
    assert ids["eos"] == ids["pad"] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert ids["mask"] == tok.convert_tokens_to_ids("<|mask|>")
    assert set(ids) == {"mask", "eos", "pad"}
    specials = ["<unk>", "<|endoftext|>", "<|mask|>", "<|role_end|>", "<role>", "</role>"]
    assert len({tok.convert_tokens_to_ids(t) for t in specials}) == len(specials)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>" and tok.mask_token == "<|mask|>"
    assert len(tok) < 200
    for w in ("SYSTEM", "HUMAN", "ASSISTANT", "detailed", "thinking", "off"):
        assert tok.convert_tokens_to_ids(w) != tok.unk_token_id
    assert encode(tok, "Mia") == tok("Mia")["input_ids"]  # no BOS/EOS added by default either


@pytest.mark.parametrize("kw", [{}, LONG])
def test_round_trip_prompts_and_answers(kw):
    tok_long = build_tokenizer(vocabulary(**kw))
    for p in generate_problems(100, seed=9, **kw):
        prompt = render_prompt(tok_long, p.question)
        full = render_conversation(tok_long, p.question, p.answer)
        pids, fids = encode(tok_long, prompt), encode(tok_long, full)
        assert tok_long.unk_token_id not in fids
        assert fids[: len(pids)] == pids  # prompt is a token prefix of the training string (§1.1)
        assert fids[-1] == tok_long.convert_tokens_to_ids("<|role_end|>")
        assert tok_long.decode(fids[len(pids):], skip_special_tokens=True) == p.answer
        assert tok_long.decode(encode(tok_long, p.question)) == p.question
        # generated ids followed by EOS padding still decode to the answer
        eos = tok_long.eos_token_id
        assert tok_long.decode(fids[len(pids):] + [eos] * 5, skip_special_tokens=True) == p.answer


def test_save_load_keeps_template_and_ids(tok, tmp_path):
    save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.chat_template == tok.chat_template
    assert special_token_ids(loaded) == special_token_ids(tok)
    q, a = generate_problems(1, seed=0)[0].question, generate_problems(1, seed=0)[0].answer
    assert render_conversation(loaded, q, a) == render_conversation(tok, q, a)
    assert encode(loaded, render_prompt(loaded, q)) == encode(tok, render_prompt(tok, q))
    assert loaded.decode(encode(loaded, a)) == a
    # the saved directory is also a plain HF tokenizer directory (offline AutoTokenizer works too)
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert auto.chat_template == tok.chat_template and special_token_ids(auto) == special_token_ids(tok)
    assert auto.decode(encode(auto, a)) == a
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


# ---------------------------------------------------------------- scoring


def test_scoring_hand_cases():
    p = Problem("Mia has 8 books . How many now ?", "8 - 6 = 2 . #### 5", "5")
    is_correct = build_task("running_total").is_correct
    assert extract_final_answer("8 - 6 = 2 . #### 5") == "5"
    assert is_correct("8 - 6 = 2 . 2 + 3 = 5 . #### 5", p)
    assert is_correct("####   5 <|role_end|><|endoftext|>", p)
    assert is_correct("#### <|role_end|> 5", p)
    assert is_correct("#### 05", p)
    assert not is_correct("8 - 6 = 2 . #### 4", p)
    assert not is_correct("8 - 6 = 2 . 2 + 3 = 5 .", p)  # missing ####
    assert extract_final_answer("2 + 3 = 5 .") is None
    assert extract_final_answer("#### 3 . #### 5") == "5"  # last marker wins
    assert not is_correct("#### 5 . #### 3", p)
    assert extract_final_answer("#### 5 ####") is None  # last marker has no number; no fallback
    assert extract_final_answer("#### <|mask|>") is None
    assert extract_final_answer("#### 12") == "12"
