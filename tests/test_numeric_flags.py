"""Every numeric flag of the inference tools, attacked with generated values (NaN, infinities,
overflowing and negative numbers, sizes far beyond any memory): each run ends normally or in one
error line naming the flag, never in a traceback, an errno tuple or a message that names no
flag; and --max-new-tokens / --beam / --batch-size are bounded before anything is allocated."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm import evaluate, generate, translate
from tests.cli_support import assert_one_line_error

V1 = Path(__file__).resolve().parent / "fixtures" / "v1_runs"
FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
FLOATS = ["nan", "-nan", "inf", "-inf", "1e308", "-1e308", "1e400", "0", "-1", "1e-320"]
INTS = ["0", "-1", "1000000000", str(2**63), str(10**30), "1"]
LENGTHS = ["0", "-1", "1000000000000", str(2**63), str(10**30), "1"]  # never a long run

TOOLS = {
    "generate": (generate.main, ["--ckpt", str(V1 / "lm"), "--max-new-tokens", "2"],
                 {"--max-new-tokens": LENGTHS, "--temperature": FLOATS, "--top-k": INTS,
                  "--top-p": FLOATS, "--seed": INTS}),
    "translate": (translate.main, ["--ckpt", str(V1 / "translate"), "alpha beta"],
                  {"--beam": INTS, "--length-penalty": FLOATS, "--max-len-a": FLOATS,
                   "--max-len-b": INTS}),
    "evaluate": (evaluate.main, ["--ckpt", str(V1 / "lm"), "--data", str(V1 / "text.txt")],
                 {"--batch-size": INTS}),
}


@st.composite
def attacks(draw):
    tool = draw(st.sampled_from(sorted(TOOLS)))
    main, argv, flags = TOOLS[tool]
    flag = draw(st.sampled_from(sorted(flags)))
    return tool, flag, draw(st.sampled_from(flags[flag]))


@FUZZ
@given(case=attacks())
def test_a_numeric_flag_is_used_or_refused_by_name(capsys, case):
    tool, flag, value = case
    main, argv, _ = TOOLS[tool]
    capsys.readouterr()
    try:
        status = main([*argv, f"{flag}={value}"])
    except SystemExit as e:  # argparse: not a number of the flag's type
        status = e.code
    out, err = capsys.readouterr()
    assert status in (0, 2), (status, err)
    if status == 2:
        assert "Traceback" not in err
        last = [line for line in err.splitlines() if line.strip()][-1]
        assert flag in last or flag.lstrip("-").replace("-", "_") in last, (flag, value, err)
        assert "Numerical result out of range" not in last and "(34," not in last
        assert "cannot convert" not in last, last


@pytest.mark.parametrize(("main", "argv", "flag"), [
    (generate.main, ["--ckpt", str(V1 / "lm"), "--max-new-tokens", "1000000000000"],
     "--max-new-tokens"),
    (translate.main, ["--ckpt", str(V1 / "translate"), "--beam", "1000000000", "alpha"],
     "--beam"),
])
def test_sizes_beyond_the_memory_are_refused_before_allocating(capsys, main, argv, flag):
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, flag)
