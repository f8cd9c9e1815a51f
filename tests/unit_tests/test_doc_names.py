"""The names the README and docs/*.md give a user exist, and what exists is documented.

Three kinds of name, each checked both ways:

- command flags: a ``moa <command> ... --flag`` written in one code span or on one line of a
  code block (its ``#`` comment included) names a flag that command has, as its click
  parameters say; and every flag of every command appears somewhere in the pages;
- environment variables (``MOA_*``, ``LANGGRAPH_MOA_*``): each one the pages name is a
  string in src (read with ``os.environ``, or a click ``envvar``), and each such string
  of src is named in the pages;
- config keys: the README's config file example ("### Config files") loads as a config,
  which refuses a key no config model has, at any depth; and every top-level field of
  `MoAConfig` is one of its keys.

What it cannot catch: a flag given to a command in prose rather than in the same code span
("`--history` of `moa serve`" is two spans, so the flag belongs to no command); a flag
shared by several commands documented for one only (``--prices`` of `moa eval` counts for
`moa serve` too); a flag whose meaning the text gets wrong; a variable src names but never
reads; a config key written outside the example; a command built in a script from
parts (``cmd = ["moa", ...]``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer.main
import yaml

from langgraph_moa import cli as cli_package
from langgraph_moa.cli._app import app
from langgraph_moa.config import MoAConfig
from tests.snippets import PAGES, ROOT

SRC = Path(cli_package.__file__).parents[1]

# Flags no page needs to name, and why.
UNDOCUMENTED_FLAGS = {
    "--help": "every command has it, and says so itself",
    "--show-completion": "prints the script that --install-completion installs",
}
# Variables the pages name that are made, not written, in src, and why.
MADE_VARIABLES = {
    "MOA_URL_KEY_2": "MOA_URL_KEY with a number: _redact.shell_command names the second key so",
}

_FENCE = re.compile(r"^\s*```")
_SPAN = re.compile(r"`([^`]+)`")
_COMMAND = re.compile(r"(?<![\w./:,=-])moa(?:\s+(?P<name>[a-z]+))?(?=\s|$)")
_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
_VARIABLE = re.compile(r"\b(?:LANGGRAPH_)?MOA_[A-Z0-9_]*[A-Z0-9]\b")
_SHELL_END = re.compile(r"\||&&|;|\$\(")


def _code(page: Path) -> list[tuple[int, str]]:
    """The page's code: each line of a code block, each inline code span (by the line its
    paragraph starts on).

    A block's line that ends with ``\\`` is joined to the next, as the shell joins them; a
    span may run over a line break of its paragraph.
    """
    found: list[tuple[int, str]] = []
    in_block, prose, prose_from, pending = False, [], 1, ""
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_block = not in_block
            continue
        if in_block:
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            found.append((number, pending))
            pending = ""
        elif line.strip():
            prose_from = prose_from if prose else number
            prose.append(line)
            continue
        if prose:  # a blank line or a fence ends a paragraph: its spans
            found += [(prose_from, s.replace("\n", " ")) for s in _SPAN.findall("\n".join(prose))]
            prose = []
    return found


def _commands() -> dict[str, list[tuple[str, ...]]]:
    """Each command's options, each as its names (``--stream``, ``--no-stream``; ``-p``).

    "" is `moa` itself; ``--help``, which click adds to each, is one of them.
    """
    group = typer.main.get_command(app)
    commands = {"": group, **group.commands}  # type: ignore[attr-defined]
    return {
        name: [
            ("--help",),
            *(
                (*p.opts, *p.secondary_opts)
                for p in command.params
                if p.param_type_name == "option"
            ),
        ]
        for name, command in commands.items()
    }


def _command_flags() -> dict[str, set[str]]:
    """Each command's flags, every name of every option."""
    return {name: {f for names in options for f in names} for name, options in _commands().items()}


def _flags_written(text: str) -> list[tuple[str, str]]:
    """The (command, flag) pairs of a line or span: each ``moa <command>`` up to the next one.

    A shell line ends the command at a pipe, ``&&``, ``;`` or ``$(``; a ``#`` comment after
    it still speaks of it (``moa ui ... # --history PATH``).
    """
    pairs = []
    matches = list(_COMMAND.finditer(text))
    ends = [later.start() for later in matches[1:]] + [len(text)]
    for match, end in zip(matches, ends[: len(matches)], strict=True):
        tail = text[match.end() : end]
        code, hash_, comment = tail.partition(" #")
        code = _SHELL_END.split(code)[0]
        name = match.group("name") or ""
        pairs += [(name, flag) for flag in _FLAG.findall(code + hash_ + comment)]
    return pairs


def _pages_code() -> list[tuple[str, str]]:
    """(where, code) for every line and span of every page."""
    return [
        (f"{page.relative_to(ROOT).as_posix()}:{number}", code)
        for page in PAGES
        for number, code in _code(page)
    ]


def test_every_flag_written_after_a_command_is_one_of_its_own():
    flags = _command_flags()
    wrong = [
        f"{where}: moa {name} has no {flag} ({code.strip()!r})"
        for where, code in _pages_code()
        for name, flag in _flags_written(code)
        if name in flags and flag not in flags[name]
    ]
    assert not wrong, "\n".join(wrong)


def test_every_option_of_every_command_is_documented():
    """One name of an on/off pair is enough: the default's side (``--stream``) goes unsaid."""
    written = {flag for _, code in _pages_code() for flag in _FLAG.findall(code)}
    missing = [
        f"moa {name} {'/'.join(names)}"
        for name, options in _commands().items()
        for names in options
        if not written & set(names) and not UNDOCUMENTED_FLAGS.keys() & set(names)
    ]
    assert not missing, missing


def _variables_in_src() -> set[str]:
    """Every string constant of src that is a whole variable name (read, or an envvar)."""
    return {
        node.value
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _VARIABLE.fullmatch(node.value)
    }


def _variables_in_pages() -> set[str]:
    return {name for page in PAGES for name in _VARIABLE.findall(page.read_text("utf-8"))}


def test_every_variable_the_pages_name_is_read():
    unread = _variables_in_pages() - _variables_in_src() - set(MADE_VARIABLES)
    assert not unread, sorted(unread)


def test_every_variable_src_reads_is_documented():
    undocumented = _variables_in_src() - _variables_in_pages()
    assert not undocumented, sorted(undocumented)


def _config_example() -> str:
    """The first ```yaml block of the README's "### Config files" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.partition("\n### Config files\n")[2]
    assert section, "the README has no config file section"
    return section.partition("```yaml\n")[2].partition("```")[0]


def test_the_config_example_loads(tmp_path):
    path = tmp_path / "my-moa.yaml"
    path.write_text(_config_example(), encoding="utf-8")
    MoAConfig.from_file(path)


def test_the_config_example_names_every_top_level_key():
    written = set(yaml.safe_load(_config_example()))
    assert written == set(MoAConfig.model_fields), {
        "unknown": written - set(MoAConfig.model_fields),
        "left out": set(MoAConfig.model_fields) - written,
    }


def test_the_config_example_shows_the_defaults(tmp_path):
    """The README says its values are the defaults but for the name, the models and the
    prompt: it showed ``selection: {show_tally: false}``, whose default is null (variant
    select derives its rule)."""
    path = tmp_path / "my-moa.yaml"
    path.write_text(_config_example(), encoding="utf-8")
    shown = MoAConfig.from_file(path)
    default = MoAConfig(proposers=shown.proposers, aggregator=shown.aggregator)
    own = {"name", "proposers", "aggregator", "synthesis_prompt"}
    differ = {k for k in MoAConfig.model_fields if getattr(shown, k) != getattr(default, k)}
    assert differ <= own, differ - own
