"""The README's Python blocks run, in order, as a reader would paste them into one session: against the shipped
checkpoint, with the Hub pushes going to a local Hub server, and every output the README quotes (a `# -> ...` line
under a `print(...)` line) compared with what that print writes. So the quick start cannot go stale."""

import ast
import json
import os
import re
import subprocess
import sys

from hub_server import hub_env, local_hub


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPOSITORY, "README.md")
QUOTED = "# -> "


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def instrument(blocks: list[str]) -> tuple[str, list[str]]:
    """One script of the blocks, each quoted print call replaced by one that records what it writes; and the quoted
    outputs, in order."""
    lines, quoted = [], []
    for block in blocks:
        block_lines = block.splitlines()
        for index, line in enumerate(block_lines):
            following = block_lines[index + 1] if index + 1 < len(block_lines) else ""
            if following.startswith(QUOTED):
                if not line.startswith("print("):
                    raise AssertionError(f"a quoted output follows a line that is not a print call: {line!r}")
                line = f"_record({len(quoted)}, " + line[len("print(") :]
                quoted.append(following[len(QUOTED) :])
            lines.append(line)
    prelude = (
        "import json, sys\n"
        "_printed = {}\n"
        "def _record(index, *values):\n"
        "    text = ' '.join(str(value) for value in values)\n"
        "    print(text)\n"
        "    _printed[index] = text\n"
    )
    epilogue = "\nprint('README-PRINTED ' + json.dumps(_printed))\n"
    return prelude + "\n".join(lines) + epilogue, quoted


def test_instrument_finds_quoted_outputs():
    script, quoted = instrument(["x = 1\nprint(x + 1)\n# -> 2\nprint('not quoted')\n"])
    assert quoted == ["2"] and "_record(0, x + 1)" in script and "print('not quoted')" in script
    ast.parse(script)


def test_the_readme_python_blocks_run_and_print_what_they_quote(tmp_path, tiny_bert_path):
    with open(README, encoding="utf-8") as handle:
        blocks = python_blocks(handle.read())
    assert blocks, "the README has Python blocks"
    script, quoted = instrument(blocks)
    assert quoted, "the README quotes at least one output"
    # A reader's session: the repository's checkpoints where the README says, a BERT at "path/to/bert".
    os.symlink(os.path.join(REPOSITORY, "checkpoints"), tmp_path / "checkpoints")
    script = script.replace('"path/to/bert"', repr(tiny_bert_path))
    (tmp_path / "readme.py").write_text(script, encoding="utf-8")
    with local_hub() as hub:
        env = hub_env(hub.url, tmp_path / "hf")
        env["PYTHONPATH"] = REPOSITORY
        result = subprocess.run(
            [sys.executable, "readme.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.split("README-PRINTED ", 1)[1])
    for index, expected in enumerate(quoted):
        got = printed[str(index)]
        assert got == expected, f"the README quotes {expected!r}; the code prints {got!r}"
