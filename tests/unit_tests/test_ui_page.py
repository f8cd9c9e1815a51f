"""The page's static files, read as a screen reader and a contrast checker would.

What a browser must run is tested in tests/integration_tests/test_ui_browser.py; these
checks need only the HTML and CSS text, so they run with the unit tests.
"""

import re
from html.parser import HTMLParser

from langgraph_moa.serving._ui import STATIC

CSS = (STATIC / "style.css").read_text()
HTML = (STATIC / "index.html").read_text()
CARD_BACKGROUND = "#fff"
"""The background every coloured text of the page sits on (header, history, panes, cards)."""


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a #rgb or #rrggbb colour."""
    hex_digits = colour.lstrip("#")
    if len(hex_digits) == 3:
        hex_digits = "".join(c * 2 for c in hex_digits)
    channels = [int(hex_digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def palette(dark: bool = False) -> dict[str, str]:
    """The colour variables of the page's light :root, or of its dark-scheme :root."""
    light = re.search(r"^:root\s*\{([^}]*)\}", CSS, re.M)
    variables = dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3,6})\b", light.group(1)))
    if dark:
        block = re.search(r"prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}", CSS)
        assert block, "the page sets colours but has no prefers-color-scheme: dark palette"
        variables |= dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3,6})\b", block.group(1)))
    return variables


def text_colours(variables: dict[str, str]) -> dict[str, str]:
    """Every `color:` of the stylesheet (not backgrounds or borders), its var() resolved."""
    found = {}
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", CSS):
        for value in re.findall(r"(?:^|;|\s)color:\s*([^;]+)", body):
            value = value.strip()
            name = re.fullmatch(r"var\((--[\w-]+)\)", value)
            if name:
                value = variables[name.group(1)]
            if value.startswith("#"):
                found[selector.strip()] = value
    return found


def test_contrast_is_computed_as_wcag_does():
    assert round(contrast("#000", "#fff"), 1) == 21.0
    assert round(contrast("#777", "#fff"), 2) == 4.48


def test_every_text_colour_reads_at_4_5_to_1_on_the_page():
    """The 'running' label of a card was amber #b7791f on white, 3.6:1: below the 4.5:1 that
    small text needs (WCAG 1.4.3). Each coloured text now reads at 4.5:1 or more."""
    colours = text_colours(palette())
    assert ".status" in colours  # the parser sees the rule that failed
    weak = {s: (c, round(contrast(c, CARD_BACKGROUND), 2)) for s, c in colours.items()}
    weak = {s: v for s, v in weak.items() if v[1] < 4.5}
    assert not weak, weak


def test_a_dark_system_gets_a_dark_page_that_reads_at_4_5_to_1():
    """The page set its own light colours and ignored a system set to dark: a white page in
    a dark room. Under prefers-color-scheme: dark it takes a dark palette whose every text
    colour reads at 4.5:1 on its cards and page, and no rule keeps a light background of
    its own (each background is one of the palette's variables)."""
    dark = palette(dark=True)
    for background in ("--card", "--bg"):
        weak = {
            s: (c, round(contrast(c, dark[background]), 2))
            for s, c in text_colours(dark).items()
            if contrast(c, dark[background]) < 4.5
        }
        assert not weak, (background, weak)
    for name in ("--code", "--mark", "--picked"):  # the tinted backgrounds text sits on
        assert contrast(dark["--fg"], dark[name]) >= 4.5, name
    rules = re.sub(r":root\s*\{[^}]*\}", "", CSS)
    assert not re.findall(r"background(?:-color)?:\s*#[0-9a-fA-F]{3,6}", rules)


def _hsl_hex(hue: float, saturation: float, lightness: float) -> str:
    """The #rrggbb of an hsl() colour (saturation and lightness as fractions)."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb(hue / 360, lightness, saturation)
    return "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b))


def _ring_tone(dark: bool) -> tuple[float, float]:
    """The agreement ring's saturation and lightness (``--agree-s``, ``--agree-l``)."""
    light = re.search(r"^:root\s*\{([^}]*)\}", CSS, re.M).group(1)
    block = re.search(r"prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}", CSS)
    tone = dict(re.findall(r"(--agree-[sl]):\s*([\d.]+)%", light))
    if dark:
        tone |= dict(re.findall(r"(--agree-[sl]):\s*([\d.]+)%", block.group(1)))
    assert set(tone) == {"--agree-s", "--agree-l"}, "the ring's tone is not in the palette"
    return float(tone["--agree-s"]) / 100, float(tone["--agree-l"]) / 100


def test_the_agreement_rings_stand_out_at_3_to_1_in_every_hue_and_palette():
    """The rings around the cards that agree were hsl(hue 60% 70%): 1.5 to 3.2:1 on white,
    below the 3:1 that a UI mark needs (WCAG 1.4.11). Their tone is now the palette's, and
    every hue the page gives a group reads at 3:1 or more on the cards and the page, light
    and dark."""
    script = (STATIC / "app.js").read_text()
    assert "--agree-hue" in script and "60% 70%" not in script  # the page sets the hue only
    assert re.search(r"\.card\.agree\s*\{[^}]*hsl\(var\(--agree-hue", CSS)
    for dark in (False, True):
        colours = palette(dark)
        saturation, lightness = _ring_tone(dark)
        for hue in range(360):
            ring = _hsl_hex(hue, saturation, lightness)
            for background in ("--card", "--bg"):
                ratio = contrast(ring, colours[background])
                assert ratio >= 3, (dark, hue, ring, background, round(ratio, 2))


class _Controls(HTMLParser):
    """Collect each form control and whether it has an accessible name."""

    def __init__(self) -> None:
        super().__init__()
        self.in_label = 0
        self.labelled_ids: set[str] = set()
        self.controls: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.labelled_ids.add(a["for"])
        if tag in ("input", "textarea", "select"):
            named = bool(self.in_label or a.get("aria-label") or a.get("aria-labelledby"))
            self.controls.append({"id": a.get("id"), "named": named})

    def handle_endtag(self, tag):
        if tag == "label":
            self.in_label -= 1


def test_every_form_control_of_the_page_has_an_accessible_name():
    """The question's box had only a placeholder, which is no label: a screen reader read
    it as 'edit text'. Every control is inside a <label>, named by one, or aria-labelled."""
    parser = _Controls()
    parser.feed(HTML)
    assert {c["id"] for c in parser.controls} >= {"question", "preset", "api-key"}
    unnamed = [
        c["id"] for c in parser.controls if not c["named"] and c["id"] not in parser.labelled_ids
    ]
    assert not unnamed, unnamed


def test_the_page_has_a_language_a_main_landmark_and_a_polite_notice():
    assert re.search(r'<html lang="\w+', HTML)
    assert '<main id="panes"' in HTML
    assert re.search(r'id="notice" role="status"', HTML)


def test_nothing_moves_unless_the_reader_allows_motion():
    """The page has no animation, transition or smooth scrolling; one added later must sit
    under `prefers-reduced-motion: no-preference` (WCAG 2.3.3), or this fails."""
    allowed = re.search(r"prefers-reduced-motion:\s*no-preference\)\s*\{(.*?\})\s*\}", CSS, re.S)
    rest = CSS.replace(allowed.group(0), "") if allowed else CSS
    assert not re.findall(r"(?:animation|transition)[\w-]*\s*:|scroll-behavior:\s*smooth", rest)
    script = (STATIC / "app.js").read_text()
    assert not re.findall(r"""behavior:\s*["']smooth|\.animate\(""", script)


def _page_set(script: str, name: str) -> set[str]:
    found = re.search(rf"const {name} = new Set\(\[([^\]]*)\]\)", script)
    assert found, f"app.js has no {name}"
    return set(re.findall(r'"([^"]*)"', found.group(1)))


def test_the_page_keeps_an_open_block_by_the_packages_finish_reasons():
    """A part whose model stopped to call tools ("tool_calls") showed its unclosed <think>
    block as answer text, where the answer drops it: the page's rule is the package's
    (`keeps_block`), its two lists of finish reasons the same."""
    from langgraph_moa.run._accounting import CUT_OFF_REASONS, TOOL_CALL_REASONS

    script = (STATIC / "app.js").read_text()
    assert _page_set(script, "CUT_OFF_REASONS") == CUT_OFF_REASONS
    assert _page_set(script, "TOOL_CALL_REASONS") == TOOL_CALL_REASONS
    assert re.search(r"function keepsBlock[^}]*TOOL_CALL_REASONS\.has\(", script)
    # Gemini says STOP with its calls: a part whose tokens carried one keeps no open block.
    assert "if (ev.tool_calls) this.partCalled = true;" in script
    finishes = re.findall(r"this\.thinking\.finish\(([^)]*)\)", script)
    assert finishes and set(finishes) == {"this.partStopped && !this.partCalled"}, finishes


def test_the_history_off_note_names_the_option_of_both_commands_that_serve_the_page():
    """The note said ``moa serve --history-runs 0``; `moa ui` serves the page too, with the
    same option, and its user was sent to a command they had not run."""
    note = re.search(r'<p id="history-off"[^>]*>(.*?)</p>', HTML, re.S)
    assert note is not None
    assert "--history-runs 0" in note.group(1)
    assert "moa serve --history-runs" not in note.group(1), note.group(1)
