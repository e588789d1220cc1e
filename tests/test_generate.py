"""Sampling (temperature, top-k, top-p), the KV-cache path against the uncached one, and
`python -m minigrad_lm.generate`."""

from __future__ import annotations

from pathlib import Path

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm import generate as generate_cli
from minigrad_lm.inference.sampling import filter_probs, generate, next_window_start
from minigrad_lm.models import GPT, GPTConfig
from tests.cli_support import (
    TINY,
    assert_one_line_error,
    run_module,
    run_train,
    snapshot,
    write_corpus,
)

# --------------------------------------------------------------------------------------------
# The sampling distribution
# --------------------------------------------------------------------------------------------


def test_temperature_zero_is_greedy_and_temperature_scales():
    logits = np.array([1.0, 3.0, 3.0, -2.0])
    assert filter_probs(logits, 0.0, None, None).tolist() == [0, 1, 0, 0]  # first of a tie
    for t in (0.5, 1.0, 2.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum()
        assert np.allclose(filter_probs(logits, t, None, None), expected)


def test_top_k_and_top_p_keep_the_most_likely_tokens():
    logits = np.log(np.array([0.1, 0.5, 0.2, 0.15, 0.05]))
    assert np.allclose(filter_probs(logits, 1.0, 2, None), [0, 5 / 7, 2 / 7, 0, 0])
    # top-p keeps tokens until their mass reaches p: 0.5 + 0.2 >= 0.6
    assert np.allclose(filter_probs(logits, 1.0, None, 0.6), [0, 5 / 7, 2 / 7, 0, 0])
    assert np.allclose(filter_probs(logits, 1.0, None, 0.45), [0, 1, 0, 0, 0])
    assert np.allclose(filter_probs(logits, 1.0, None, 1.0), np.exp(logits))
    assert np.allclose(filter_probs(logits, 1.0, 3, 0.99), [0, 5 / 8.5, 2 / 8.5, 1.5 / 8.5, 0])


def test_window_restarts_from_the_last_half_when_full():
    assert next_window_start(0, 8, 8) == 0
    assert next_window_start(0, 9, 8) == 5  # keeps the last 4
    assert next_window_start(5, 12, 8) == 5
    assert next_window_start(0, 2, 1) == 1  # a context of one keeps one token


# --------------------------------------------------------------------------------------------
# Cached and uncached generation
# --------------------------------------------------------------------------------------------


def _tiny_gpt(**overrides) -> GPT:
    mg.manual_seed(0)
    config = {"vocab_size": 13, "context_length": 8, "n_layer": 2, "n_head": 2, "d_model": 16,
              "dropout": 0.1}
    return GPT(GPTConfig(**{**config, **overrides}))


SAMPLERS = [
    {"temperature": 1.0},
    {"temperature": 0.7, "top_k": 5},
    {"temperature": 1.3, "top_p": 0.8},
    {"temperature": 0.0},
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: ",".join(f"{k}={v}" for k, v in
                                                                  s.items()))
@pytest.mark.parametrize("shape", [{}, {"norm_first": False, "positional": "sinusoidal"},
                                   {"positional": "alibi"}],
                         ids=["pre-learned", "post-sinusoidal", "pre-alibi"])
def test_cached_and_uncached_generation_agree(device, sampler, shape):
    model = _tiny_gpt(**shape).to(device)
    prompt = np.array([3, 1, 4])
    # 40 new tokens on a context of 8: the window restarts several times.
    cached = generate(model, prompt, 40, seed=7, use_cache=True, **sampler)
    uncached = generate(model, prompt, 40, seed=7, use_cache=False, **sampler)
    assert cached.dtype == np.int64 and cached.shape == (40,)
    assert cached.tolist() == uncached.tolist()
    assert ((cached >= 0) & (cached < 13)).all()


def test_generation_on_gpu_gives_the_cpu_tokens(gpu):
    prompt = np.array([3, 1, 4])
    cpu = generate(_tiny_gpt(), prompt, 20, seed=3, temperature=0.8, top_k=6)
    assert generate(_tiny_gpt().to(gpu), prompt, 20, seed=3, temperature=0.8,
                    top_k=6).tolist() == cpu.tolist()


def test_cache_feeds_one_token_per_step():
    model = _tiny_gpt()
    fed = []
    real_forward = model.forward

    def forward(idx, cache=None):
        fed.append(idx.shape[1])
        return real_forward(idx, cache=cache)

    model.forward = forward
    generate(model, np.array([1, 2, 3]), 40, seed=0)
    cached_tokens = sum(fed)
    assert fed[0] == 3 and fed.count(1) >= 30  # prefill, then mostly single tokens
    fed.clear()
    generate(model, np.array([1, 2, 3]), 40, seed=0, use_cache=False)
    assert sum(fed) > 3 * cached_tokens


def test_generate_crops_the_prompt_seeds_and_restores_mode():
    model = _tiny_gpt()
    model.train()
    long_prompt = np.arange(20) % 13
    a = generate(model, long_prompt, 10, seed=1)
    assert a.tolist() == generate(model, long_prompt[-8:], 10, seed=1).tolist()
    assert model.training
    assert a.tolist() != generate(model, long_prompt, 10, seed=2).tolist()
    assert generate(model, [5], 0).shape == (0,)


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt_ids": []}, "prompt is empty"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
])
def test_generate_rejects_bad_options(kwargs, match):
    args = {"prompt_ids": [1], "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(_tiny_gpt(), **args)


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def lm_run(tiny_lm_run) -> Path:
    return tiny_lm_run


def _generate(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = generate_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_cached_and_uncached_print_the_same_text(lm_run, capsys):
    argv = ["--ckpt", lm_run, "--prompt", "The value", "--max-new-tokens", "50", "--seed", "3",
            "--temperature", "1.0", "--top-k", "10"]
    code, cached, _ = _generate(capsys, *argv)
    assert code == 0 and cached.startswith("The value") and len(cached) > len("The value") + 40
    assert _generate(capsys, *argv, "--no-cache")[1] == cached
    assert _generate(capsys, *argv[:-4], "--temperature", "0")[1] == _generate(
        capsys, *argv[:-4], "--temperature", "0", "--no-cache")[1]


def test_cli_crops_long_prompts_and_says_so(lm_run, capsys):
    code, out, err = _generate(capsys, "--ckpt", lm_run / "latest", "--prompt", "the file " * 10,
                               "--max-new-tokens", "5", "--seed", "0")
    assert code == 0
    assert "keeping its last 16" in err
    assert out.startswith(("the file " * 10)[-16:])


def test_cli_reads_a_prompt_character_the_corpus_lacked_as_unknown(lm_run, capsys):
    code, out, _ = _generate(capsys, "--ckpt", lm_run, "--prompt", "naïve", "--max-new-tokens",
                             "3", "--seed", "0")
    assert code == 0 and out.startswith("na\ufffdve")


@pytest.mark.parametrize("argv, message", [
    (["--prompt", ""], "--prompt is empty"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-p", "1.5"], "top_p must be in (0, 1]"),
])
def test_cli_bad_input(lm_run, capsys, argv, message):
    code, out, err = _generate(capsys, "--ckpt", lm_run, *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, message)


def test_cli_missing_or_foreign_checkpoint(tmp_path, capsys):
    code, _, err = _generate(capsys, "--ckpt", tmp_path / "nowhere")
    assert code == 2
    assert_one_line_error(err, "no checkpoint at")
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    code, _, err = _generate(capsys, "--ckpt", tmp_path / "model.pt")
    assert code == 2
    assert_one_line_error(err, "is a file")


def test_cli_refuses_a_damaged_checkpoint(lm_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    for which in ("best", "latest"):
        weights = run / which / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    before = snapshot(run)
    code, out, err = _generate(capsys, "--ckpt", run, "--max-new-tokens", "5")
    assert code == 2 and out == ""
    assert_one_line_error(err, "best/model.safetensors", "truncated")
    assert snapshot(run) == before


def test_byte_tokenizer_accepts_any_text(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train("--data", write_corpus(tmp_path), "--out", out, "--tokenizer", "byte",
                     "--max-steps", "2", *TINY) == 0
    code, text, _ = _generate(capsys, "--ckpt", out, "--prompt", "naïve ☃", "--max-new-tokens",
                              "8", "--seed", "0")
    assert code == 0 and text.startswith("naïve ☃")


def test_python_dash_m_entry_point(lm_run):
    result = run_module("minigrad_lm.generate", "--ckpt", lm_run, "--prompt", "If",
                        "--max-new-tokens", "10", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("If") and result.stderr == ""


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=12),
       st.floats(5e-324, 1e-300) | st.floats(1e-3, 1e300), st.none() | st.integers(1, 12),
       st.none() | st.floats(0.01, 1.0))
def test_any_positive_temperature_gives_a_distribution_without_numpy_warnings(logits, t, k, p):
    """A subnormal temperature is all but greedy: no overflow warning, no NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probs = filter_probs(np.array(logits), t, k, p)
    assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0)
    top = int(np.argmax(logits))  # the first of the largest
    assert probs[top] == probs.max()
    if t < 1e-300 and k is None and p is None:
        assert probs[top] == pytest.approx(1.0 / logits.count(logits[top]))
