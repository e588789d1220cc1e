"""Explanations as HTML, terminal lines, JSON and PNG (minigrad_lm.inference.explain_views)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.inference.explain import explain_classifier, explain_translation
from minigrad_lm.inference.explain_views import (
    html_report,
    json_record,
    terminal_lines,
    write_pngs,
)
from minigrad_lm.io.files import json_text
from minigrad_lm.models import Seq2SeqConfig, Seq2SeqTransformer
from tests.inference.test_explain import tiny_classifier

TOKENS = {3: "<script>", 4: "a&b", 5: '"quoted"', 6: "</p>", 7: "plain", 8: "plain"}
VOID = {"meta"}


class Page(HTMLParser):
    """Checks nesting as it parses, and collects the text of the token spans by class."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open, self.starts, self.errors = [], [], []
        self.spans: dict[str, list[str]] = {}
        self.current = None

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        if tag in VOID:
            return
        self.open.append(tag)
        cls = dict(attrs).get("class")
        if tag == "span" and cls in ("tok", "out"):
            self.current = cls
            self.spans.setdefault(cls, []).append("")

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:]}")
        else:
            self.open.pop()
        if tag == "span":
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.spans[self.current][-1] += data


def parsed(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.open, (parser.errors, parser.open)
    return parser


def classified():
    ids = np.array([3, 4, 5, 6, 7, 8])
    return explain_classifier(tiny_classifier(), ids, steps=8, token_text=TOKENS.__getitem__)


def test_the_html_report_is_well_formed_and_shows_every_token_once_in_order_as_text():
    ex = classified()
    page = html_report("a <b>report</b>", [("<script>alert(1)</script> & more", ex)])
    p = parsed(page)
    assert "script" not in p.starts  # every token and the text itself are escaped
    assert p.spans["tok"] == ["<script>", "a&b", '"quoted"', "</p>", "plain", "plain"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<link" not in page and "src=" not in page
    # one heatmap per head, and a mean, for each layer; each one a well-formed SVG document
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == page.count("<svg") == 2 * (2 + 1)
    for svg in svgs:
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"


def test_a_report_too_large_for_per_head_maps_shows_each_layers_mean(monkeypatch):
    from minigrad_lm.inference import explain_views

    ex = classified()
    monkeypatch.setattr(explain_views, "MAX_HTML_CELLS", 2 * 2 * 36 - 1)  # 2 layers, 2 heads
    page = html_report("r", [("x", ex)])
    assert page.count("<svg") == 2 and "too many for a page" in page
    assert page.count("mean over heads") == 2 and "head 0" not in page


def test_a_translation_report_shows_source_and_output_tokens():
    mg.manual_seed(0)
    model = Seq2SeqTransformer(Seq2SeqConfig(vocab_size=20, context_length=10, n_layer=1,
                                             n_head=2, d_model=8, d_ff=16, dropout=0.0))
    ex = explain_translation(model, np.array([5, 6, 2]), [8, 9], token_text=lambda i: f"<w{i}>")
    p = parsed(html_report("t", [("x", ex)]))
    assert p.spans["out"] == ["<w5>", "<w6>", "<w2>", "<w8>", "<w9>", "<w2>"]
    lines = terminal_lines(ex, color=False)
    assert lines[-3:] == [f"<w{o}>\t<w{s}>\t{v:.4f}" for o, s, v in _alignments(ex)]


def _alignments(ex):
    mean = ex.cross_attention().mean(axis=(0, 1))
    return [(o, int(ex.ids[row.argmax()]), row.max()) for o, row in zip(ex.output_ids, mean)]


def test_terminal_lines_plain_and_coloured():
    ex = classified()
    plain = terminal_lines(ex, color=False)
    assert plain[2] == "token\tattribution"
    assert [line.split("\t")[0] for line in plain[3:]] == list(TOKENS.values())
    scores = [float(line.split("\t")[1]) for line in plain[3:]]
    np.testing.assert_allclose(scores, ex.attribution.scores, atol=1e-6)
    assert "completeness gap" in plain[1] and "\x1b[" not in "".join(plain)
    coloured = terminal_lines(ex, color=True)
    assert len(coloured) == 3 and coloured[2].count("\x1b[0m") == len(TOKENS)


def test_the_json_record_holds_the_raw_numbers():
    ex = classified()
    record = json.loads(json_text(json_record("text", ex)))
    assert record["tokens"] == list(TOKENS.values()) and record["ids"] == [3, 4, 5, 6, 7, 8]
    np.testing.assert_allclose(record["attribution"]["scores"], ex.attribution.scores)
    assert record["attribution"]["completeness_gap"] == pytest.approx(
        ex.attribution.completeness_gap)
    assert [m["name"] for m in record["attention"]] == ["body.layers.0.attn",
                                                        "body.layers.1.attn"]
    np.testing.assert_allclose(record["attention"][1]["probs"], ex.attention[1].probs)


def test_pngs_are_written_for_the_summary_and_each_layer(tmp_path):
    pytest.importorskip("matplotlib")
    paths = write_pngs(classified(), str(tmp_path), "s1")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["s1.png", "s1_body_layers_0_attn.png",
                                                    "s1_body_layers_1_attn.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
