"""Users who do not write English: text that is not ASCII is counted, read and shown right.

The token estimate (a provider that reports no usage, the context budget) counted 3
characters a token, which is English's rate: Chinese, Japanese, Thai or emoji take a token
or more a character, so a budget was reached three times too late and references meant to
fit an aggregator's window overflowed it.
"""

from fractions import Fraction

from langchain_core.messages import AIMessage, HumanMessage

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.run._accounting import estimated_tokens
from langgraph_moa.text._prompts import estimate_tokens, fit_references

CHINESE = "混合智能体通过多个模型的回答来提高质量。"  # 20 characters
THAI = "ภาษาไทยไม่มีช่องว่างระหว่างคำ"
EMOJI = "\U0001f468\u200d\U0001f469\u200d\U0001f467\U0001f44d\U0001f3fd"


def test_english_keeps_three_characters_a_token():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1 and estimate_tokens("abcd") == 2
    assert estimate_tokens("word " * 300) == 500


def test_text_in_other_scripts_is_estimated_at_a_token_or_more_a_character():
    # Tokenizers give a CJK or Thai character about a token (older ones, byte by byte, up
    # to three), an emoji two or more: 3 characters a token counted a third of that.
    for text in (CHINESE * 50, THAI * 30, EMOJI * 40):
        assert estimate_tokens(text) >= len(text), text[:10]
    assert estimate_tokens(CHINESE) >= 30  # 1.5 a character
    assert estimate_tokens("\U0001f44d") == 2


def test_an_unreported_usage_of_a_chinese_answer_is_not_undercounted():
    answer = AIMessage(content=CHINESE * 100)  # 2,000 characters
    prompt, completion, _, _ = estimated_tokens(answer, [HumanMessage(content=CHINESE)])
    assert completion >= 2000 and prompt >= 20


def test_a_token_budget_stops_a_run_whose_chinese_answers_report_no_usage(fake, log):
    # 3,000 characters of Chinese a proposal: at 3 characters a token, 1,000 tokens, so a
    # budget of 4,000 let the second layer run although the first had spent past it.
    config = MoAConfig(
        proposers=[fake("A", no_usage=True, reply=lambda *a: CHINESE * 150)],
        aggregator=fake("AGG", no_usage=True),
        layers=3,
        budget={"max_tokens": 4000},
    )
    out = create_moa_graph(config).invoke({"messages": [("user", "请解释")]})
    assert [c.label for c in log.calls] == ["A"]
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "budget"


def test_chinese_references_are_trimmed_to_fit_the_budget_in_tokens():
    refs = [CHINESE * 100, "An English reference. " * 50, THAI * 40]
    fitted, cut = fit_references(refs, budget_tokens=1000)
    assert cut >= 1
    # At least a token a character that is not ASCII: 3 characters a token kept 3,000.
    text = "".join(fitted)
    assert sum(1 if ord(ch) > 127 else 1 / 3 for ch in text) <= 1000
    assert all(r for r in fitted)
    english = ["word " * 100, "x" * 3000]  # English is fitted as it was: 3 characters a token
    assert sum(map(len, fit_references(english, 400)[0])) <= 1200


def test_arabic_decimal_and_thousands_separators_read_as_one_number():
    # Arabic text writes 12.5 with U+066B for its point and 1,234 with U+066C: the digits
    # were read, the separators not, so the answer was the digits after the last of them.
    from langgraph_moa.eval.scorers import numeric
    from langgraph_moa.text._selection import concluded_number

    assert concluded_number("\u0661\u0662\u066b\u0665") == Fraction(25, 2)
    assert (
        concluded_number("\u0627\u0644\u062c\u0648\u0627\u0628: \u0661\u066c\u0662\u0663\u0664")
        == 1234
    )
    assert concluded_number("The answer is \u06f3\u066b\u06f7\u06f5") == Fraction(15, 4)  # Persian
    assert numeric("\u0661\u066c\u0662\u0663\u0664\u066b\u0665", 1234.5)


def test_exact_match_takes_a_composed_and_a_decomposed_letter_for_the_same_text():
    # "café" typed on a Mac (NFD: "e" and a combining accent) is the same text as "café"
    # (NFC); exact match said it was wrong.
    from langgraph_moa.eval.scorers import exact

    assert exact("cafe\u0301", ["caf\u00e9"])
    assert not exact("cafe", ["caf\u00e9"])


def test_normalized_and_contains_read_full_width_letters_and_digits_as_ascii():
    # A Chinese or Japanese answer writes 42 and DNA full width (U+FF14): the same words.
    from langgraph_moa.eval.scorers import contains, exact, normalized

    assert normalized("\uff14\uff12", ["42"]) and normalized("\uff24\uff2e\uff21", ["dna"])
    assert contains("\u7b54\u6848\u662f \uff14\uff12\u3002", ["42"])
    assert not exact("\uff14\uff12", ["42"])  # exact is exact
    assert not contains("\uff14\uff12\uff10", ["42"])


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji drawn from three and two ZWJs
FLAG = "\U0001f1eb\U0001f1f7"  # two regional indicators: one flag


def test_a_clip_never_cuts_a_character_from_its_marks_or_an_emoji_sequence():
    # A label cut at LABEL_CHARS ended in an "e" without its accent, a lone ZWJ or half a
    # flag (another country's letter): the cut now falls before the whole sequence.
    from langgraph_moa._redact import clip

    assert clip("x" * 8 + "e\u0301\u0301z", 10) == "x" * 8 + "\u2026"
    assert clip("x" * 6 + FAMILY + "z", 10) == "x" * 6 + "\u2026"
    assert clip("x" * 8 + "\U0001f44d\U0001f3fd" + "z", 10) == "x" * 8 + "\u2026"
    assert clip("x" + FLAG * 5, 5) == "x" + FLAG + "\u2026"
    assert clip("x" * 20, 10) == "x" * 9 + "\u2026"


def test_a_live_preview_is_cut_to_terminal_columns_not_characters():
    # A Chinese answer's 70-character preview took 140 columns: a failure line or a log
    # line of the live view wrapped where an English one did not.
    from rich.cells import cell_len

    from langgraph_moa.cli._live import PREVIEW_CHARS, _short

    preview = _short(CHINESE * 10)
    assert cell_len(preview) <= PREVIEW_CHARS and preview.endswith("\u2026")
    assert cell_len(_short(CHINESE * 10, 120)) <= 120
    assert _short("word " * 5) == "word word word word word"
    assert _short(FAMILY * 60).endswith(FAMILY + "\u2026")  # no emoji cut in half


def test_a_trimmed_reference_ends_between_whole_characters():
    # Trimming cut a reference at a character count: a Vietnamese or decomposed accent
    # left its letter, an emoji family lost its last members but kept a joiner.
    from langgraph_moa.text._prompts import TRIM_MARK

    for unit in ("ve\u0301\u0302 ", FAMILY):
        fitted, cut = fit_references([unit * 400, "short"], budget_tokens=60)
        body = fitted[0].removesuffix(TRIM_MARK)
        assert cut == 1 and fitted[0].endswith(TRIM_MARK)
        assert body == (unit * 400)[: len(body)]
        assert (unit * 400)[len(body)] in (unit[0], " "), ascii(body[-4:])


def test_the_reports_disagreement_lines_end_between_whole_characters():
    # A question or an answer shortened to 160 characters ended in half an emoji family
    # (a dangling joiner) and said nothing of the cut.
    from langgraph_moa.eval.report import _disagreements

    long = "x" * 157 + FAMILY
    lines = _disagreements(
        [{"id": "q1", "question": long, "answers": {"moa": {"correct": False, "answer": long}}}]
    )
    assert lines[-2] == "- `q1`: " + "x" * 157 + "\u2026"
    assert lines[-1] == "  - moa (wrong): " + "x" * 157 + "\u2026"


async def test_chinese_proposals_are_aggregated_in_chunks_as_they_are_written(fake):
    # Chunk-wise aggregation counted words by spaces: a Chinese proposal, written without
    # them, stayed one word until it ended, so the first part waited for every proposal
    # whole (standard MoA's latency). Each CJK character counts as a word.
    from tests.fakes import WordStreamer

    streamers = [WordStreamer(label=x, words=6, gap=0.2, sep="") for x in "\u6587\u5b57"]
    config = MoAConfig(
        proposers=streamers,
        aggregator=fake("AGG"),
        layers=2,
        aggregation={"start": "chunks", "chunk_tokens": 2},
    )
    out = await create_moa_graph(config).ainvoke({"messages": [("user", "\u8bf7\u89e3\u91ca")]})
    parts = out["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]
    assert not any(s["complete"] for s in parts[0]["saw"]), parts[0]
    assert all(s["words"] >= 2 for s in parts[0]["saw"])


def test_the_vote_reads_full_width_letters_and_digits_as_ascii():
    # Paris written full width (U+FF30...) by a Chinese proposal and "Paris" by another voted
    # apart, and so did full-width 42 and "42" under the text extractors.
    from langgraph_moa.text._selection import extract_answer

    assert extract_answer("\uff30\uff41\uff52\uff49\uff53") == extract_answer("Paris")
    for extractor in ("text", "short-span"):
        assert extract_answer("\uff14\uff12", extractor) == extract_answer("42", extractor)


def test_the_tally_line_quotes_a_long_answer_cut_between_whole_characters():
    # The aggregator's tally quoted a long answer cut at 79 characters: an emoji family
    # there lost its last member and read as another emoji (a couple).
    import json

    from langgraph_moa.text._selection import TALLY_ANSWER_CHARS, _quoted_answer

    answer = "x" * (TALLY_ANSWER_CHARS - 4) + FAMILY + " more"
    assert json.loads(_quoted_answer(answer)) == "x" * (TALLY_ANSWER_CHARS - 4) + "\u2026"


def test_references_of_unlike_weights_are_trimmed_until_they_fit():
    # Four passes of proportional tightening were not always enough: an emoji reference
    # beside an English one came to 123 tokens over a 2233-token budget.
    refs = ["\U0001f600" * 1000, "a" * 3000]
    for budget in (2233, 1500, 700):
        fitted, cut = fit_references(refs, budget)
        assert cut and estimate_tokens("".join(fitted)) <= budget, budget


def test_a_streamed_preview_starts_between_whole_characters():
    # The live view keeps the last 200 characters of a streamed answer and shows their
    # start: that start fell on a Thai tone mark with no letter under it, or on a flag's
    # second half, so every flag after it paired with the wrong letter.
    import unicodedata

    from langgraph_moa.cli._live import Progress

    for text in ("\u0e01\u0e48" * 150 + "y", FLAG * 150 + "y", FAMILY * 60 + "y"):
        progress = Progress()
        event = {"role": "proposer", "layer": 1, "proposer": 0, "sample": 0}
        progress.event({**event, "event": "token", "text": text})
        (row,) = progress.rows.values()
        assert unicodedata.category(row.detail[0]) != "Mn" and row.detail[0] != "\u200d"
        assert text.endswith(row.tail) and len(row.tail) <= 200
        if FLAG in text:
            assert row.tail.startswith(FLAG)


def test_full_width_decimal_point_and_comma_read_as_one_number():
    # Full-width text writes 12.5 with U+FF0E and 1,234 with U+FF0C: the numeric scorer and
    # the vote's number read the digits after the last of them, 5 and 234, as Arabic's were.
    from langgraph_moa.eval.scorers import numeric
    from langgraph_moa.text._selection import concluded_number, extract_answer

    assert concluded_number("\u7b54\u6848\u662f\uff11\uff12\uff0e\uff15") == Fraction(25, 2)
    assert concluded_number("\uff11\uff0c\uff12\uff13\uff14") == 1234
    assert numeric("\uff11\uff0c\uff12\uff13\uff14\uff0e\uff15", 1234.5)
    assert extract_answer("\u7b54\u6848\u662f\uff11\uff12\uff0e\uff15") == "12.5"
    # Alone, a lone comma then one digit is a decimal comma, as "3,4" is (it read 4, a list's
    # last entry, before that rule); in prose it stays ambiguous, as "The points are 3,4".
    assert extract_answer("\uff13\uff0c\uff14", "last-number") == "3.4"
    assert extract_answer("The points are \uff13\uff0c\uff14", "last-number") == ""


def test_a_clip_keeps_a_decomposed_korean_syllable_whole():
    # Korean typed on a Mac (NFD) writes a syllable as two or three jamo: a cut between them
    # left another syllable ("\ud55c" became "\u1112"), as a cut accent leaves another letter.
    from langgraph_moa._redact import clip

    han = "\u1112\u1161\u11ab"  # one syllable, decomposed
    assert clip(han * 3, 5) == han + "\u2026"
    assert clip(han * 3, 6) == han + "\u2026"
    assert clip(han * 3, 7) == han * 2 + "\u2026"


def test_a_thai_proposal_counts_words_as_it_is_written():
    # Thai (as Lao, Khmer and Burmese) puts no spaces between words, only between phrases:
    # counted by spaces, a Thai proposal was one word for a whole clause, and the first
    # chunk-wise part waited for it as for a Chinese one. Each consonant counts.
    from langgraph_moa.graph._chunkwise import _words

    assert _words(THAI) >= 10
    assert _words("\u0e01\u0e34\u0e19") == _words("\u0e01\u0e19")  # a vowel mark is no word
    assert _words("hello world") == 2


def test_the_history_lists_an_answer_cut_between_whole_characters():
    # The history's summary cut a run's answer at 200 characters: an emoji family there
    # ended in a dangling joiner, a flag in half of another one.
    from langgraph_moa.serving._history import RunRecord

    for unit in ("x" + FAMILY, "x" + FLAG):  # 200 falls inside the emoji, after its start
        answer = RunRecord(id="r", model="m", question="q", answer=unit * 100).summary()["answer"]
        assert answer == (unit * 100)[:199], len(answer)


def test_a_quoted_refusal_is_cut_between_whole_characters():
    # A refusal is quoted in its error at 200 characters: one in emoji or with a flag was
    # cut inside the sequence.
    import pytest

    from langgraph_moa.errors import EmptyResponseError
    from langgraph_moa.run._accounting import refuse_filtered

    refusal = ("x" + FLAG) * 100
    response = AIMessage(content="", additional_kwargs={"refusal": refusal})
    with pytest.raises(EmptyResponseError) as raised:
        refuse_filtered(response, "proposer 1")
    assert repr(refusal[:199]) in str(raised.value)


async def test_a_finished_calls_preview_ends_between_whole_characters(fake):
    # `finished` events carry the call's text cut at 200 characters: an answer in flags or
    # emoji sequences ended inside one (half a flag is another letter).
    reply = ("x" + FLAG) * 100
    config = MoAConfig(proposers=[fake("A", reply=lambda *a: reply)], aggregator=fake("AGG"))
    events = [
        e
        async for e in create_moa_graph(config).astream(
            {"messages": [("user", "q")]}, stream_mode="custom"
        )
    ]
    previews = [e["preview"] for e in events if e["event"] == "finished" and e["proposer"] == 0]
    assert previews and set(previews) == {reply[:199]}
