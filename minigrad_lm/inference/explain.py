"""Why a model decided: token attributions and attention maps, as arrays a notebook can use.

- :func:`integrated_gradients` (Sundararajan et al., 2017): the path integral of the gradient
  from a baseline to the input, by Gauss-Legendre quadrature, so that the attributions add up
  to f(input) - f(baseline) (completeness; :attr:`Attribution.completeness_gap` says how
  nearly); :func:`gradient_x_input` is the one-backward fast option.
- :func:`explain_classifier` (the predicted class, or a chosen one), :func:`explain_next_token`
  (a causal language model's next token) and :func:`explain_translation` (the cross-attention
  of each output token over the source) return an :class:`Explanation`. Each checkpoint kind
  (:mod:`minigrad_lm.checkpoints.kinds`) says which one explains its model, given
  :class:`ExplainOptions`.

Gradients come from the engine's autograd, taken with respect to the token-embedding tensor the
model reads (``GPT.hidden_states(token_embeddings=...)``); position embeddings belong to the
model, not to the attribution. Attention maps are the probabilities the layers computed, recorded by
:class:`~minigrad_lm.nn.attention.AttentionRecorder`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .. import backend
from ..data.trained_tokenizer import MASK, PAD, UNK
from ..engine.tensor import Tensor, enable_grad, no_grad
from ..nn.attention import AttentionRecorder, MultiHeadAttention
from .decoding import DecodeOptions
from ..nn.module import Module

__all__ = ["BASELINES", "DEFAULT_STEPS", "METHODS", "Attribution", "AttentionMap",
           "ExplainOptions", "Explanation", "explain_answer", "explain_classifier",
           "explain_next_token",
           "explain_translation", "gradient_x_input", "integrated_gradients", "token_text"]

METHODS = ("integrated_gradients", "grad_x_input")
DEFAULT_STEPS = 50
MAX_STEPS = 1000
DEFAULT_BATCH = 16  # interpolation points per forward/backward pass
TOP_NEXT_TOKENS = 5
# The reference inputs of integrated gradients by name: a special token at every position, or
# zero embeddings (None). "auto": [UNK] where the vocabulary has it (the word a classifier
# trained with word dropout knows as "no word"), else zeros.
BASELINES = {"auto": UNK, "unk": UNK, "zeros": None, "pad": PAD, "mask": MASK}

# f maps embeddings (N, T, C) to N outputs, row n depending on embeddings[n] alone.
Output = Callable[[Tensor], Tensor]


@dataclass
class Attribution:
    """Per-token attributions of one output f (a logit) to the input tokens.

    ``scores`` (T,) sums each token's attribution over the embedding dimensions; ``output`` is
    f(input); for integrated gradients ``baseline_output`` is f(baseline), and the scores add
    up to output - baseline_output up to the quadrature error over ``steps`` points, from
    the reference input ``baseline`` (its description).
    """

    method: str
    scores: np.ndarray
    output: float
    baseline_output: float | None = None
    steps: int | None = None
    baseline: str | None = None

    @property
    def completeness_gap(self) -> float | None:
        """sum(scores) - (f(input) - f(baseline)); None for gradient x input."""
        if self.baseline_output is None:
            return None
        return float(self.scores.sum() - (self.output - self.baseline_output))


@dataclass
class AttentionMap:
    """The attention probabilities (H, Tq, Tk) of one layer: rows are the queries' tokens,
    columns the keys' (``queries``/``keys`` name the sequences: ``input``, ``source``,
    ``target`` for the decoder's inputs, ``output`` for the tokens it predicted: see
    :meth:`Explanation.labels`)."""

    name: str
    kind: str  # "self" or "cross"
    queries: str
    keys: str
    probs: np.ndarray


@dataclass(frozen=True)
class ExplainOptions:
    """How to explain (python -m minigrad_lm.explain's flags): the attribution ``method``
    with its ``steps``, ``baseline`` (a BASELINES name) and ``batch`` (path points per pass);
    ``target``: a class number or a next token's text to explain instead of the prediction;
    ``beam``: the beam size of a translation; ``context``: the text a question-answering
    model's questions are about."""

    method: str = "integrated_gradients"
    steps: int = DEFAULT_STEPS
    baseline: str = "auto"
    batch: int = DEFAULT_BATCH
    target: str | None = None
    beam: int = DecodeOptions.beam_size
    context: str | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"attribution method must be one of {', '.join(METHODS)}, got "
                             f"{self.method!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got "
                             f"{self.baseline!r}")
        for name, value, top in (("steps", self.steps, MAX_STEPS), ("batch", self.batch, None),
                                 ("beam", self.beam, None)):
            if value < 1 or top is not None and value > top:
                raise ValueError(f"--{name} must be in 1..{top}, got {value}" if top else
                                 f"--{name} must be >= 1, got {value}")

    def attribution(self, tokenizer) -> dict:
        """The attribution keywords of explain_classifier and explain_next_token for a model
        reading ``tokenizer``'s ids."""
        return dict(method=self.method, steps=self.steps, batch=self.batch,
                    baseline=baseline_id(tokenizer, self.baseline),
                    token_text=token_text(tokenizer))


def baseline_id(tokenizer, name: str) -> int | None:
    """The token id of the BASELINES entry ``name``; None for zero embeddings."""
    token = BASELINES[name]
    found = None if token is None else getattr(tokenizer, "token_id", lambda _: None)(token)
    if found is None and token is not None and name != "auto":
        raise ValueError(f"--baseline {name}: this checkpoint's tokenizer has no {token} "
                         "token (use --baseline zeros)")
    return found


def token_text(tokenizer) -> Callable[[int], str]:
    """The text of one token id: its decoded text, or for a special token that decodes to
    nothing (``[CLS]``) its name in the vocabulary."""
    hf = getattr(tokenizer, "hf", None)

    def text(i: int) -> str:
        piece = tokenizer.decode(np.array([i], dtype=np.int64))
        if piece.strip() or hf is None:
            return piece
        return hf.id_to_token(i) or piece
    return text


@dataclass
class Explanation:
    """What one input made the model do, and why.

    ``explains``: ``class``, ``next token``, ``translation``, ``answer span`` or ``answer
    class``. ``ids``/``tokens``: the input (a classifier's or language model's tokens, a
    translation's source, a question-answering window: question and context). ``target``: the class
    or next-token id explained (-1 for a translation), named ``target_label``, with its
    probability (a translation's: of the whole output);
    ``alternatives``: (label, probability) of every class, or of the likeliest next tokens.
    For a translation, ``output_ids``/``output_tokens`` are the tokens it produced (eos last),
    ``output_probs`` the probability of each given the ones before, and ``decoder_tokens``
    what the decoder read (bos, then the output but eos). For an answer span,
    ``answer_tokens`` are its first and last positions in ``tokens``; ``note`` says which
    window of a long context is explained.
    """

    explains: str
    ids: np.ndarray
    tokens: list[str]
    target: int
    target_label: str
    probability: float
    alternatives: list[tuple[str, float]]
    attribution: Attribution | None
    attention: list[AttentionMap]
    output_ids: np.ndarray | None = None
    output_tokens: list[str] = field(default_factory=list)
    output_probs: np.ndarray | None = None
    decoder_tokens: list[str] = field(default_factory=list)
    answer_tokens: tuple[int, int] | None = None
    note: str = ""

    def labels(self, side: str) -> list[str]:
        """The tokens of one side of an AttentionMap."""
        return {"input": self.tokens, "source": self.tokens, "output": self.output_tokens,
                "target": self.decoder_tokens}[side]

    def cross_attention(self) -> np.ndarray:
        """A translation's cross-attention, (layers, heads, output tokens, source tokens);
        ``.mean(axis=(0, 1))`` is the average over layers and heads."""
        maps = [m.probs for m in self.attention if m.kind == "cross"]
        if not maps:
            raise ValueError(f"the explanation of a {self.explains} has no cross-attention")
        return np.stack(maps)


# --------------------------------------------------------------------------------------------
# Attribution methods on any f of the embeddings


def _gradients(f: Output, points: np.ndarray, like: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(f at each point (N,), df/dpoint (N, T, C)) in float64, for points in like's dtype and
    device."""
    e = Tensor(backend.to_device(points.astype(like.dtype), like.device), requires_grad=True)
    with enable_grad():
        out = f(e)
        out.sum().backward()  # rows are independent: each row's gradient is its own
    return (backend.to_numpy(out.data).astype(np.float64),
            backend.to_numpy(e.grad.data).astype(np.float64))


def _values(f: Output, points: np.ndarray, like: Tensor) -> np.ndarray:
    with no_grad():
        out = f(Tensor(backend.to_device(points.astype(like.dtype), like.device)))
    return backend.to_numpy(out.data).astype(np.float64)


def integrated_gradients(f: Output, x: np.ndarray, baseline: np.ndarray, like: Tensor,
                         steps: int = DEFAULT_STEPS, batch: int = DEFAULT_BATCH
                         ) -> tuple[np.ndarray, float, float]:
    """(attributions of x's shape, f(x), f(baseline)): (x - baseline) times the mean gradient
    of f on the straight path between them, by ``steps``-point Gauss-Legendre quadrature.

    Args:
        f: embeddings (N, *x.shape) -> outputs (N,), each row depending on its own input only.
        x, baseline: float arrays of the same shape (the input's and the reference's
            embeddings).
        like: a tensor of the model's dtype and device (the embedding table).
        batch: points per forward/backward pass (memory grows with it).
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"integrated gradients: steps ({steps}) and batch ({batch}) must be "
                         ">= 1")
    x, baseline = np.asarray(x, np.float64), np.asarray(baseline, np.float64)
    if x.shape != baseline.shape:
        raise ValueError(f"integrated gradients: baseline of shape {baseline.shape} for an "
                         f"input of shape {x.shape}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]
    mean_grad = np.zeros_like(x)
    for lo in range(0, steps, batch):
        a = alphas[lo:lo + batch].reshape((-1,) + (1,) * x.ndim)
        _, grads = _gradients(f, baseline + a * (x - baseline), like)
        mean_grad += np.tensordot(weights[lo:lo + batch], grads, axes=1)
    ends = _values(f, np.stack([x, baseline]), like)
    return (x - baseline) * mean_grad, float(ends[0]), float(ends[1])


def gradient_x_input(f: Output, x: np.ndarray, like: Tensor) -> tuple[np.ndarray, float]:
    """(x * df/dx, f(x)): one forward and one backward pass."""
    x = np.asarray(x, np.float64)
    out, grads = _gradients(f, x[None], like)
    return x * grads[0], float(out[0])


def _attribute(f: Output, ids: np.ndarray, table: Tensor, method: str, steps: int,
               baseline: int | None, batch: int, token_text: Callable[[int], str]
               ) -> Attribution:
    """Per-token scores (summed over the embedding axis) by ``method``, for the tokens ids
    whose embeddings are rows of ``table``."""
    x = backend.to_numpy(table.data[backend.to_device(ids, table.device)]).astype(np.float64)
    if method == "integrated_gradients":
        reference = _baseline_rows(table, len(ids), baseline)
        values, out, base = integrated_gradients(f, x, reference, table, steps, batch)
        described = "zero embeddings" if baseline is None else token_text(baseline)
        return Attribution(method, values.sum(axis=-1), out, base, steps, described)
    if method == "grad_x_input":
        values, out = gradient_x_input(f, x, table)
        return Attribution(method, values.sum(axis=-1), out)
    raise ValueError(f"attribution method must be one of {', '.join(METHODS)}, got {method!r}")


# --------------------------------------------------------------------------------------------
# Models


@contextlib.contextmanager
def _inspecting(model: Module) -> Iterator[None]:
    """Eval mode with frozen parameters (only the embeddings' gradients are wanted); both
    restored afterwards."""
    params = model.parameters()
    flags, training = [p.requires_grad for p in params], model.training
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(training)


def _recorded(model: Module, recorder: AttentionRecorder, sides: dict[str, tuple[str, str]]
              ) -> list[AttentionMap]:
    """The recorder's maps (batch row 0), named as model.named_modules() names the layers;
    ``sides`` gives (queries, keys) by the last part of a layer's name."""
    names = {id(m): name for name, m in model.named_modules()}
    maps = []
    for module, probs in recorder.maps:
        name = names[id(module)]
        kind = "self" if isinstance(module, MultiHeadAttention) else "cross"
        queries, keys = sides.get(name.rsplit(".", 1)[-1], ("input", "input"))
        maps.append(AttentionMap(name, kind, queries, keys, probs[0]))
    return maps


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _ids(ids, context: int, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected a non-empty 1-D array of token ids, got shape "
                         f"{arr.shape} and dtype {arr.dtype}")
    if arr.size > context:
        raise ValueError(f"{what}: {arr.size} tokens, longer than the model's context of "
                         f"{context}")
    return arr.astype(np.int64)


def _baseline_rows(table: Tensor, n: int, baseline: int | None) -> np.ndarray:
    """(n, C) reference embeddings: zeros, or the row of token id ``baseline`` at every
    position."""
    c = table.shape[1]
    if baseline is None:
        return np.zeros((n, c))
    if not 0 <= baseline < table.shape[0]:
        raise ValueError(f"baseline token id {baseline} is outside the vocabulary of "
                         f"{table.shape[0]}")
    row = backend.to_numpy(table.data[baseline]).astype(np.float64)
    return np.broadcast_to(row, (n, c)).copy()


def _check_target(target: int, n: int, what: str) -> int:
    if not 0 <= int(target) < n:
        raise ValueError(f"target {what} {target} is out of range (0..{n - 1})")
    return int(target)


def explain_classifier(model, ids, target: int | None = None,
                       method: str = "integrated_gradients", steps: int = DEFAULT_STEPS,
                       baseline: int | None = None, batch: int = DEFAULT_BATCH,
                       token_text: Callable[[int], str] = str) -> Explanation:
    """Attributions of a SequenceClassifier's logit for ``target`` (default: the predicted
    class) to the tokens ``ids`` (T,), and every layer's attention.

    Args:
        baseline: the reference input of integrated gradients: None for zero embeddings, or
            a token id whose embedding stands at every position (e.g. [UNK] or [PAD]).
        token_text: the text of a token id, for the explanation's ``tokens``.
    """
    body = model.body
    ids = _ids(ids, body.config.context_length, "explain_classifier")
    table = body.tok_emb.weight
    with _inspecting(model):
        with no_grad(), AttentionRecorder() as recorder:
            logits = backend.to_numpy(model(ids[None]).data)[0].astype(np.float64)
        probs = _softmax(logits)
        target = int(probs.argmax()) if target is None else _check_target(
            target, len(probs), "class")

        def f(e: Tensor) -> Tensor:
            return model(np.repeat(ids[None], e.shape[0], axis=0), token_embeddings=e)[
                :, target]

        attribution = _attribute(f, ids, table, method, steps, baseline, batch, token_text)
    order = np.argsort(-probs, kind="stable")
    return Explanation("class", ids, [token_text(int(i)) for i in ids], target, str(target),
                       float(probs[target]), [(str(c), float(probs[c])) for c in order],
                       attribution, _recorded(model, recorder, {}))


def explain_next_token(model, ids, target: int | None = None,
                       method: str = "integrated_gradients", steps: int = DEFAULT_STEPS,
                       baseline: int | None = None, batch: int = DEFAULT_BATCH,
                       vocab_limit: int | None = None,
                       token_text: Callable[[int], str] = str) -> Explanation:
    """Attributions of a causal GPT's logit for the next token (default: the likeliest among
    the first ``vocab_limit`` ids, those a tokenizer can write) to the context ``ids`` (T,),
    and every layer's attention. Arguments as for :func:`explain_classifier`."""
    if not model.config.causal:
        raise ValueError("a masked (bidirectional) language model does not predict the next "
                         "token; explain a causal one")
    ids = _ids(ids, model.config.context_length, "explain_next_token")
    table = model.tok_emb.weight
    limit = min(vocab_limit or model.config.vocab_size, model.config.vocab_size)
    with _inspecting(model):
        with no_grad(), AttentionRecorder() as recorder:
            logits = backend.to_numpy(model(ids[None]).data)[0, -1, :limit].astype(np.float64)
        probs = _softmax(logits)
        target = int(probs.argmax()) if target is None else _check_target(
            target, limit, "token id")

        def f(e: Tensor) -> Tensor:
            rows = np.repeat(ids[None], e.shape[0], axis=0)
            hidden = model.hidden_states(rows, token_embeddings=e)
            return model.head(hidden[:, -1])[:, target]

        attribution = _attribute(f, ids, table, method, steps, baseline, batch, token_text)
    top = np.argsort(-probs, kind="stable")[:TOP_NEXT_TOKENS]
    return Explanation("next token", ids, [token_text(int(i)) for i in ids], target,
                       token_text(target), float(probs[target]),
                       [(token_text(int(t)), float(probs[t])) for t in top],
                       attribution, _recorded(model, recorder, {}))


def explain_translation(model, source_ids, output_ids,
                        token_text: Callable[[int], str] = str) -> Explanation:
    """The attention of a Seq2SeqTransformer producing ``output_ids`` (without eos; e.g. from
    decoding.translate_ids) for ``source_ids`` (eos included): the cross-attention of each
    output token (eos last) over the source per layer and head
    (:meth:`Explanation.cross_attention`), the encoder's and decoder's self-attention, and
    the probability of each output token given the ones before it."""
    c = model.config
    src = _ids(source_ids, c.context_length, "explain_translation (source)")
    out = np.append(np.asarray(output_ids, dtype=np.int64), c.eos_id)
    tgt_in = _ids(np.insert(out[:-1], 0, c.bos_id), c.context_length,
                  "explain_translation (output)")
    with _inspecting(model), no_grad(), AttentionRecorder() as recorder:
        logits = backend.to_numpy(model(src[None], tgt_in[None]).data)[0].astype(np.float64)
    probs = _softmax(logits)[np.arange(len(out)), out]
    sides = {"attn": ("source", "source"), "self_attn": ("target", "target"),
             "cross_attn": ("output", "source")}
    return Explanation("translation", src, [token_text(int(i)) for i in src], -1, "",
                       float(np.prod(probs)), [], None, _recorded(model, recorder, sides),
                       out, [token_text(int(i)) for i in out], probs,
                       [token_text(int(i)) for i in tgt_in])


def explain_answer(model, ids, context_mask, span: tuple[int, int] | None = None,
                   answer_class: int = 0, answer_text: str = "", probability: float = 0.0,
                   method: str = "integrated_gradients", steps: int = DEFAULT_STEPS,
                   baseline: int | None = None, batch: int = DEFAULT_BATCH,
                   token_text: Callable[[int], str] = str,
                   answer_names: list[str] | None = None, matches=None) -> Explanation:
    """Attributions of a QuestionAnswerer's chosen answer to one window's tokens ``ids`` (T,)
    (question and context; ``context_mask`` (T,) marks the context; ``matches`` (T,) the
    context tokens of question words, as QuestionAnswerer.forward takes them), and every
    layer's attention. For a ``span`` (first, last) the explained output is its score, the
    start logit at first plus the end logit at last; otherwise the answer head's logit for
    ``answer_class``. ``answer_text``/``probability`` describe the answer as
    inference.qa.predict_answers chose it; ``alternatives`` are the answer head's classes
    (``answer_names``) in this window. Other arguments as for :func:`explain_classifier`."""
    ids = _ids(ids, model.body.config.context_length, "explain_answer")
    mask = np.asarray(context_mask, bool).reshape(1, -1)
    if mask.shape[1] != len(ids):
        raise ValueError(f"explain_answer: context mask of {mask.shape[1]} positions for "
                         f"{len(ids)} tokens")
    if matches is not None:
        matches = np.asarray(matches, bool).reshape(1, -1)
        if matches.shape != mask.shape:
            raise ValueError(f"explain_answer: matches for {matches.shape[1]} positions, "
                             f"{len(ids)} tokens")
    names = answer_names or [str(k) for k in range(model.num_answers)]
    if span is not None and not (mask[0, span[0]] and mask[0, span[1]] and span[0] <= span[1]):
        raise ValueError(f"explain_answer: span {span} is not within the context")
    answer_class = _check_target(answer_class, model.num_answers, "answer class")
    table = model.body.tok_emb.weight
    with _inspecting(model):
        with no_grad(), AttentionRecorder() as recorder:
            head = backend.to_numpy(model(ids[None], [len(ids)], mask,
                                          matches=matches)[2].data)[0]
        probs = _softmax(head.astype(np.float64))

        def f(e: Tensor) -> Tensor:
            n = e.shape[0]
            start, end, answer = model(
                np.repeat(ids[None], n, axis=0), [len(ids)] * n, np.repeat(mask, n, axis=0),
                token_embeddings=e,
                matches=None if matches is None else np.repeat(matches, n, axis=0))
            if span is None:
                return answer[:, answer_class]
            return start[:, span[0]] + end[:, span[1]]

        attribution = _attribute(f, ids, table, method, steps, baseline, batch, token_text)
    order = np.argsort(-probs, kind="stable")[:TOP_NEXT_TOKENS]
    return Explanation("answer class" if span is None else "answer span", ids,
                       [token_text(int(i)) for i in ids], answer_class,
                       answer_text, probability, [(names[k], float(probs[k])) for k in order],
                       attribution, _recorded(model, recorder, {}), answer_tokens=span)
