"""Write the shipped verifiable dataset, computing every numeric answer, and check each item.

The arithmetic, unit-conversion and word-problem answers are computed here from the same
numbers the question shows (exact fractions, so 2.5 km is 2500 m and never 2499.9999), so no
answer is typed by hand. Facts are stable ones (capitals, symbols, planets, authors, basic
science) with their common spellings. Multiple-choice items place the right option at A, B,
C and D in turn, so that a model's preference for one letter earns nothing; their
``pattern`` accepts the right letter (standing alone, as "B)", or after "answer is") or the
right option's text, and refuses an answer that echoes the other options; a hedge between
options ("\\boxed{C, D}") the scorer refuses on any item whose answer is one letter.

Before writing, every item is scored through the package's own scorers: its expected answer
must count as right; "I do not know.", a neighbouring number, another letter and an echo of
the question must count as wrong. The 22 items the file held before keep their ids and text
and gain a category.

    PYTHONPATH=src python benchmarks/data/make_verifiable.py
"""

# The questions write the multiplication and division signs on purpose, as people do.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from langgraph_moa.eval.datasets import load_dataset
from langgraph_moa.eval.scorers import normalize, score

OUT = Path(__file__).parents[2] / "src" / "langgraph_moa" / "eval" / "data" / "verifiable.jsonl"

PREFIX = {
    "fact": "fact",
    "arithmetic": "arith",
    "unit-conversion": "unit",
    "reasoning": "reason",
    "multiple-choice": "mc",
}

# The items the file held before this set grew: ids and text unchanged, category added.
LEGACY = {
    "fact-01": "fact",
    "fact-02": "arithmetic",
    "fact-03": "fact",
    "fact-04": "fact",
    "fact-05": "fact",
    "fact-06": "fact",
    "fact-07": "fact",
    "fact-08": "arithmetic",
    "fact-09": "fact",
    "fact-10": "fact",
    "fact-11": "fact",
    "fact-12": "fact",
    "fact-13": "arithmetic",
    "fact-14": "fact",
    "fact-15": "fact",
    "fact-16": "fact",
    "num-01": "reasoning",
    "num-02": "arithmetic",
    "num-03": "unit-conversion",
    "num-04": "arithmetic",
    "re-01": "format",
    "re-02": "format",
}

NUMBER_ASKS = [
    "Answer with the number only.",
    "Reply with just the number.",
    "Give only the final number.",
    "Respond with a single number.",
    "Answer with a number.",
]
WORD_ASKS = [
    "Answer in a few words.",
    "Give a short answer.",
    "Reply briefly.",
    "Keep the answer short.",
    "",
]
LETTER_ASKS = [
    "Answer with the letter only.",
    "Reply with A, B, C or D.",
    "Respond with the letter of the correct option.",
    "Give only the letter of your choice.",
]

# --- facts: (question, accepted answers); counts ask for a number --------------------------

FACTS: list[tuple[str, list[str]]] = [
    ("What is the capital of Japan?", ["tokyo"]),
    ("What is the capital of Italy?", ["rome", "roma"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("What is the capital of Spain?", ["madrid"]),
    ("What is the capital of Canada?", ["ottawa"]),
    ("What is the capital of Australia?", ["canberra"]),
    ("What is the capital of Egypt?", ["cairo"]),
    ("What is the capital of Russia?", ["moscow"]),
    ("What is the capital of the United Kingdom?", ["london"]),
    ("What is the capital of Kenya?", ["nairobi"]),
    ("What is the capital of Argentina?", ["buenos aires"]),
    ("What is the capital of South Korea?", ["seoul"]),
    ("What is the chemical symbol for iron?", ["fe"]),
    ("What is the chemical symbol for sodium?", ["na"]),
    ("What is the chemical symbol for silver?", ["ag"]),
    ("What is the chemical formula for water?", ["h2o", "h₂o"]),
    ("Which planet is closest to the Sun?", ["mercury"]),
    ("What is the largest planet in our solar system?", ["jupiter"]),
    ("Which planet is famous for its large, bright rings?", ["saturn"]),
    ("Which planet is third from the Sun?", ["earth"]),
    ("How many planets are in our solar system?", ["8", "eight"]),
    ("Who wrote the novel Nineteen Eighty-Four?", ["orwell", "george orwell"]),
    ("Who wrote the novel Pride and Prejudice?", ["austen", "jane austen"]),
    ("Who painted the Mona Lisa?", ["leonardo", "da vinci", "davinci", "leonardo da vinci"]),
    ("Who developed the theory of relativity?", ["einstein", "albert einstein"]),
    ("Who was the first President of the United States?", ["washington", "george washington"]),
    ("Who discovered penicillin?", ["fleming", "alexander fleming"]),
    ("Who formulated the three laws of motion?", ["newton", "isaac newton"]),
    ("Who composed the Moonlight Sonata?", ["beethoven", "ludwig van beethoven"]),
    ("In what year did World War II end?", ["1945"]),
    ("In what year did humans first land on the Moon?", ["1969"]),
    ("What is the hardest natural substance?", ["diamond", "diamonds"]),
    ("What is the largest animal on Earth?", ["blue whale", "blue whales"]),
    ("How many continents are there on Earth?", ["7", "seven"]),
    ("What is the longest river in South America?", ["amazon"]),
    ("What is the tallest mountain on Earth above sea level?", ["everest", "mount everest"]),
    ("What is the largest desert in Africa?", ["sahara"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many legs does an insect have?", ["6", "six"]),
    ("Which gas makes up most of Earth's atmosphere?", ["nitrogen", "n2"]),
    ("What is the positively charged particle in an atom's nucleus called?", ["proton", "protons"]),
    ("What force keeps the planets in orbit around the Sun?", ["gravity", "gravitation"]),
    ("Which organelle is known as the powerhouse of the cell?", ["mitochondria", "mitochondrion"]),
    ("Which organ pumps blood through the human body?", ["heart"]),
    ("How many chambers does the human heart have?", ["4", "four"]),
    ("How many bones are in the adult human body?", ["206"]),
    ("What is the largest organ of the human body?", ["skin"]),
    ("Which ocean lies between Africa and Australia?", ["indian", "indian ocean"]),
    ("What is the smallest prime number?", ["2", "two"]),
    ("How many degrees are in a right angle?", ["90", "ninety"]),
    ("What is the currency of Japan?", ["yen"]),
    ("Which metal is liquid at room temperature?", ["mercury"]),
    ("In computing, what does RAM stand for?", ["random access memory", "random-access memory"]),
    ("What does HTML stand for?", ["hypertext markup language", "hyper text markup language"]),
    ("What is the largest country in the world by area?", ["russia"]),
    ("Which element has atomic number 1?", ["hydrogen"]),
    ("What is the atomic number of carbon?", ["6", "six"]),
    ("What is the name of the galaxy that contains our solar system?", ["milky way"]),
    ("Which instrument is used to measure temperature?", ["thermometer"]),
    ("What colour do you get by mixing blue and yellow paint?", ["green"]),
]

# --- arithmetic: (question with {names}, values, answer from the values) -------------------

Fn = Callable[..., Fraction | int]


def _f(x: float | int) -> Fraction:
    return Fraction(str(x))


ARITHMETIC: list[tuple[str, dict[str, float], Fn]] = [
    ("What is {a} + {b}?", {"a": 38, "b": 47}, lambda a, b: _f(a) + _f(b)),
    ("What is {a} plus {b}?", {"a": 256, "b": 389}, lambda a, b: _f(a) + _f(b)),
    ("Compute {a} - {b}.", {"a": 91, "b": 37}, lambda a, b: _f(a) - _f(b)),
    ("What is {a} minus {b}?", {"a": 503, "b": 278}, lambda a, b: _f(a) - _f(b)),
    ("What is {a} times {b}?", {"a": 13, "b": 7}, lambda a, b: _f(a) * _f(b)),
    ("What is {a} × {b}?", {"a": 25, "b": 16}, lambda a, b: _f(a) * _f(b)),
    ("Multiply {a} by {b}.", {"a": 48, "b": 12}, lambda a, b: _f(a) * _f(b)),
    ("What is {a} divided by {b}?", {"a": 156, "b": 12}, lambda a, b: _f(a) / _f(b)),
    ("What is {a} ÷ {b}?", {"a": 91, "b": 7}, lambda a, b: _f(a) / _f(b)),
    ("Divide {a} by {b}.", {"a": 1000, "b": 8}, lambda a, b: _f(a) / _f(b)),
    ("What is {a} squared?", {"a": 15}, lambda a: _f(a) ** 2),
    ("What is {a} cubed?", {"a": 4}, lambda a: _f(a) ** 3),
    ("What is the square root of {a}?", {"a": 169}, lambda a: Fraction(math.isqrt(a))),
    ("What is the square root of {a}?", {"a": 225}, lambda a: Fraction(math.isqrt(a))),
    ("What is {a} to the power of {b}?", {"a": 2, "b": 10}, lambda a, b: _f(a) ** b),
    ("What is {p}% of {n}?", {"p": 20, "n": 150}, lambda p, n: _f(p) / 100 * _f(n)),
    ("What is {p} percent of {n}?", {"p": 75, "n": 80}, lambda p, n: _f(p) / 100 * _f(n)),
    ("What is {p}% of {n}?", {"p": 10, "n": 470}, lambda p, n: _f(p) / 100 * _f(n)),
    ("What is {a} + {b} × {c}?", {"a": 6, "b": 4, "c": 5}, lambda a, b, c: _f(a) + _f(b) * _f(c)),
    (
        "What is ({a} + {b}) × {c}?",
        {"a": 6, "b": 4, "c": 5},
        lambda a, b, c: (_f(a) + _f(b)) * _f(c),
    ),
    ("What is {a} × {b} - {c}?", {"a": 9, "b": 8, "c": 10}, lambda a, b, c: _f(a) * _f(b) - _f(c)),
    (
        "What is the sum of {a}, {b} and {c}?",
        {"a": 17, "b": 28, "c": 35},
        lambda a, b, c: _f(a) + _f(b) + _f(c),
    ),
    ("What is the product of {a} and {b}?", {"a": 14, "b": 6}, lambda a, b: _f(a) * _f(b)),
    (
        "What is the average of {a}, {b} and {c}?",
        {"a": 4, "b": 8, "c": 12},
        lambda a, b, c: (_f(a) + _f(b) + _f(c)) / 3,
    ),
    (
        "What is the remainder when {a} is divided by {b}?",
        {"a": 47, "b": 5},
        lambda a, b: Fraction(a % b),
    ),
    ("What is half of {a}?", {"a": 96}, lambda a: _f(a) / 2),
    ("What is one third of {a}?", {"a": 81}, lambda a: _f(a) / 3),
    ("What is {a} + {b}?", {"a": 3.5, "b": 2.25}, lambda a, b: _f(a) + _f(b)),
    ("What is {a} × {b}?", {"a": 0.5, "b": 18}, lambda a, b: _f(a) * _f(b)),
    ("What is {a} - {b}?", {"a": 10, "b": 2.75}, lambda a, b: _f(a) - _f(b)),
    ("What is double {a}?", {"a": 235}, lambda a: _f(a) * 2),
    (
        "What is {a} - {b} + {c}?",
        {"a": 100, "b": 45, "c": 12},
        lambda a, b, c: _f(a) - _f(b) + _f(c),
    ),
    (
        "What is {a} × {b} × {c}?",
        {"a": 2, "b": 3, "c": 7},
        lambda a, b, c: _f(a) * _f(b) * _f(c),
    ),
    ("How much is {a} divided by {b}?", {"a": 72, "b": 9}, lambda a, b: _f(a) / _f(b)),
    (
        "What is {a} + {b} + {c} + {d}?",
        {"a": 11, "b": 22, "c": 33, "d": 44},
        lambda a, b, c, d: _f(a) + _f(b) + _f(c) + _f(d),
    ),
    ("What is {a} times {b}?", {"a": 11, "b": 11}, lambda a, b: _f(a) * _f(b)),
    ("What is {a} × {b}?", {"a": 99, "b": 3}, lambda a, b: _f(a) * _f(b)),
    ("What is {a} - {b}?", {"a": 1000, "b": 1}, lambda a, b: _f(a) - _f(b)),
    ("What is {a} squared minus {b}?", {"a": 7, "b": 9}, lambda a, b: _f(a) ** 2 - _f(b)),
    ("What is {a}/{b} written as a decimal?", {"a": 3, "b": 4}, lambda a, b: _f(a) / _f(b)),
    ("What is {a} divided by {b}?", {"a": 7, "b": 2}, lambda a, b: _f(a) / _f(b)),
    ("What is {a} + {b}?", {"a": 1234, "b": 4321}, lambda a, b: _f(a) + _f(b)),
    ("What is {a} × {b}?", {"a": 125, "b": 8}, lambda a, b: _f(a) * _f(b)),
]

# --- unit conversions: exact factors ------------------------------------------------------

UNIT_ASKS = [
    "Convert {v} {src} to {dst}.",
    "How many {dst} are in {v} {src}?",
    "{V} {src} is how many {dst}?",
    "Express {v} {src} in {dst}.",
]

UNITS: list[tuple[float, str, str, Fraction]] = [
    (3, "kilometers", "meters", Fraction(1000)),
    (2.5, "kilometers", "meters", Fraction(1000)),
    (4, "meters", "centimeters", Fraction(100)),
    (1.75, "meters", "centimeters", Fraction(100)),
    (6, "centimeters", "millimeters", Fraction(10)),
    (5, "kilograms", "grams", Fraction(1000)),
    (0.75, "kilograms", "grams", Fraction(1000)),
    (3500, "grams", "kilograms", Fraction(1, 1000)),
    (2, "liters", "milliliters", Fraction(1000)),
    (1500, "milliliters", "liters", Fraction(1, 1000)),
    (4, "hours", "minutes", Fraction(60)),
    (2.5, "hours", "minutes", Fraction(60)),
    (5, "minutes", "seconds", Fraction(60)),
    (2, "hours", "seconds", Fraction(3600)),
    (3, "days", "hours", Fraction(24)),
    (4, "weeks", "days", Fraction(7)),
    (5, "years", "months", Fraction(12)),
    (3, "feet", "inches", Fraction(12)),
    (4, "yards", "feet", Fraction(3)),
    (2, "miles", "feet", Fraction(5280)),
    (10, "inches", "centimeters", Fraction(254, 100)),
    (250, "centimeters", "meters", Fraction(1, 100)),
    (7000, "meters", "kilometers", Fraction(1, 1000)),
    (3, "metric tons", "kilograms", Fraction(1000)),
    (2, "centuries", "years", Fraction(100)),
    (3, "decades", "years", Fraction(10)),
    (2, "square meters", "square centimeters", Fraction(10000)),
    (3, "cubic meters", "liters", Fraction(1000)),
    (180, "minutes", "hours", Fraction(1, 60)),
    (48, "hours", "days", Fraction(1, 24)),
    (5, "pounds", "ounces", Fraction(16)),
    (3, "gallons", "quarts", Fraction(4)),
    (9, "feet", "yards", Fraction(1, 3)),
    (36, "inches", "feet", Fraction(1, 12)),
    (0.5, "liters", "milliliters", Fraction(1000)),
    (45, "millimeters", "centimeters", Fraction(1, 10)),
    (12, "grams", "milligrams", Fraction(1000)),
    (90, "seconds", "minutes", Fraction(1, 60)),
    (1, "kilometer", "centimeters", Fraction(100000)),
]

# Conversions that are not one factor, each with its own wording.
UNIT_SPECIAL: list[tuple[str, dict[str, float], Fn]] = [
    (
        "What is {c} degrees Celsius in degrees Fahrenheit?",
        {"c": 25},
        lambda c: _f(c) * Fraction(9, 5) + 32,
    ),
    (
        "Convert {c} °C to °F.",
        {"c": 40},
        lambda c: _f(c) * Fraction(9, 5) + 32,
    ),
    (
        "What is {f} degrees Fahrenheit in degrees Celsius?",
        {"f": 50},
        lambda f: (_f(f) - 32) * Fraction(5, 9),
    ),
    (
        "Convert {f} °F to °C.",
        {"f": 86},
        lambda f: (_f(f) - 32) * Fraction(5, 9),
    ),
    ("How many eggs are in {n} dozen?", {"n": 3}, lambda n: _f(n) * 12),
    ("How many hours are in {n} week?", {"n": 1}, lambda n: _f(n) * 7 * 24),
    ("How many seconds are in {n} day?", {"n": 1}, lambda n: _f(n) * 24 * 3600),
    (
        "Convert a speed of {v} kilometers per hour to meters per second.",
        {"v": 72},
        lambda v: _f(v) * 1000 / 3600,
    ),
]

# --- word problems: several steps, one number ---------------------------------------------

REASONING: list[tuple[str, dict[str, float], Fn]] = [
    (
        "Tom has {a} apples. He gives {b} to his sister and then buys {c} more. "
        "How many apples does he have now?",
        {"a": 12, "b": 4, "c": 7},
        lambda a, b, c: _f(a) - b + c,
    ),
    (
        "A box holds {n} eggs. How many eggs are in {k} boxes?",
        {"n": 6, "k": 9},
        lambda n, k: _f(n) * k,
    ),
    (
        "A train travels at {v} kilometers per hour for {t} hours. "
        "How many kilometers does it travel?",
        {"v": 80, "t": 3},
        lambda v, t: _f(v) * _f(t),
    ),
    (
        "A book costs {b} dollars and a pen costs {p} dollars. "
        "How many dollars do {nb} books and {np} pens cost together?",
        {"b": 15, "p": 3, "nb": 2, "np": 4},
        lambda b, p, nb, np: _f(b) * nb + _f(p) * np,
    ),
    (
        "Sara reads {r} pages a day. How many days does she need to read a {n}-page book?",
        {"r": 25, "n": 300},
        lambda r, n: _f(n) / r,
    ),
    (
        "A rectangle is {a} cm long and {b} cm wide. What is its area in square centimeters?",
        {"a": 8, "b": 5},
        lambda a, b: _f(a) * b,
    ),
    (
        "A rectangle is {a} cm long and {b} cm wide. What is its perimeter in centimeters?",
        {"a": 9, "b": 4},
        lambda a, b: 2 * (_f(a) + b),
    ),
    (
        "A class has {n} students and {g} of them are girls. How many boys are in the class?",
        {"n": 30, "g": 18},
        lambda n, g: _f(n) - g,
    ),
    (
        "A shirt costs {p} dollars and is on sale for {d}% off. What is the sale price in dollars?",
        {"p": 40, "d": 25},
        lambda p, d: _f(p) * (100 - _f(d)) / 100,
    ),
    (
        "Ali is {a} years old and his father is {k} times as old. "
        "How old will his father be in {y} years?",
        {"a": 7, "k": 4, "y": 5},
        lambda a, k, y: _f(a) * k + y,
    ),
    (
        "A hall has {r} rows of chairs with {c} chairs in each row. "
        "If {t} chairs are taken, how many chairs are free?",
        {"r": 5, "c": 12, "t": 17},
        lambda r, c, t: _f(r) * c - t,
    ),
    (
        "A baker makes {n} cookies and packs them in bags of {b}. He sells {s} bags. "
        "How many bags are left?",
        {"n": 48, "b": 6, "s": 5},
        lambda n, b, s: _f(n) / b - s,
    ),
    (
        "Emma saves {s} dollars each week. How many weeks does she need to save {t} dollars?",
        {"s": 15, "t": 180},
        lambda s, t: _f(t) / s,
    ),
    (
        "A car uses {f} liters of fuel per 100 kilometers. "
        "How many liters does it use to drive {d} kilometers?",
        {"f": 6, "d": 350},
        lambda f, d: _f(f) * d / 100,
    ),
    (
        "If {k} notebooks cost {c} dollars, how many dollars do {m} notebooks cost?",
        {"k": 3, "c": 12, "m": 7},
        lambda k, c, m: _f(c) / k * m,
    ),
    (
        "A farm has {c} cows and {h} chickens. How many legs do these animals have in total?",
        {"c": 14, "h": 9},
        lambda c, h: _f(c) * 4 + _f(h) * 2,
    ),
    (
        "John had {m} dollars. He spent {c} dollars on lunch and half of what was left on a "
        "book. How many dollars does he have now?",
        {"m": 50, "c": 18},
        lambda m, c: (_f(m) - c) / 2,
    ),
    (
        "An empty tank holds {v} liters and is filled at {r} liters per minute. "
        "How many minutes does it take to fill?",
        {"v": 200, "r": 8},
        lambda v, r: _f(v) / r,
    ),
    (
        "The sum of two numbers is {s} and their difference is {d}. What is the larger number?",
        {"s": 30, "d": 6},
        lambda s, d: (_f(s) + d) / 2,
    ),
    (
        "I think of a number, double it and add {a}, and get {r}. What was my number?",
        {"a": 7, "r": 31},
        lambda a, r: (_f(r) - a) / 2,
    ),
    (
        "A pizza is cut into {s} slices. Three friends each eat {e} slices. "
        "How many slices are left?",
        {"s": 12, "e": 2},
        lambda s, e: _f(s) - 3 * e,
    ),
    (
        "A runner runs {d} kilometers every day for {w} weeks. "
        "How many kilometers does she run in total?",
        {"d": 5, "w": 2},
        lambda d, w: _f(d) * 7 * w,
    ),
    (
        "A school bus has {s} seats. How many buses are needed to carry {n} students?",
        {"s": 40, "n": 130},
        lambda s, n: Fraction(math.ceil(Fraction(n, s))),
    ),
    (
        "Lisa is {d} years older than Ben, who is {b}. What is the sum of their ages?",
        {"d": 3, "b": 9},
        lambda d, b: _f(b) + (_f(b) + d),
    ),
    (
        "A square garden has sides of {s} meters. What is its area in square meters?",
        {"s": 7},
        lambda s: _f(s) ** 2,
    ),
    (
        "A worker earns {w} dollars per hour and works {h} hours a day, {d} days a week. "
        "How many dollars does she earn in a week?",
        {"w": 18, "h": 8, "d": 5},
        lambda w, h, d: _f(w) * h * d,
    ),
    (
        "A bag holds {r} red, {b} blue and {g} green marbles. "
        "How many marbles in the bag are not blue?",
        {"r": 5, "b": 7, "g": 8},
        lambda r, b, g: _f(r) + g,
    ),
    (
        "The temperature was {t} degrees in the morning, rose by {u} degrees by noon and fell "
        "by {d} degrees by evening. What was the temperature in the evening, in degrees?",
        {"t": 4, "u": 9, "d": 5},
        lambda t, u, d: _f(t) + u - d,
    ),
    (
        "Mike buys {n} sandwiches at {p} dollars each and pays with a {b}-dollar bill. "
        "How many dollars of change does he get?",
        {"n": 3, "p": 4, "b": 20},
        lambda n, p, b: _f(b) - _f(n) * p,
    ),
    (
        "A library had {b} books. It lent out {o} and then got {r} back. "
        "How many books does it have now?",
        {"b": 120, "o": 45, "r": 20},
        lambda b, o, r: _f(b) - o + r,
    ),
    (
        "A jacket costs {p} dollars before a sales tax of {t}%. "
        "How many dollars does it cost with the tax?",
        {"p": 80, "t": 10},
        lambda p, t: _f(p) * (100 + _f(t)) / 100,
    ),
    (
        "A student scored {a}, {b}, {c} and {d} on four tests. What is her average score?",
        {"a": 70, "b": 80, "c": 90, "d": 100},
        lambda a, b, c, d: (_f(a) + b + c + d) / 4,
    ),
    (
        "A cake needs {g} grams of flour. How many grams of flour are needed for {n} cakes?",
        {"g": 250, "n": 6},
        lambda g, n: _f(g) * n,
    ),
    (
        "A cyclist rides {d} kilometers in one hour. At the same speed, how many hours does "
        "she need to ride {t} kilometers?",
        {"d": 15, "t": 60},
        lambda d, t: _f(t) / d,
    ),
    (
        "There are {n} students in a class and one third of them wear glasses. "
        "How many students do not wear glasses?",
        {"n": 24},
        lambda n: _f(n) - _f(n) / 3,
    ),
    (
        "Anna has twice as many stickers as Tom. Together they have {t} stickers. "
        "How many stickers does Anna have?",
        {"t": 36},
        lambda t: _f(t) * 2 / 3,
    ),
    (
        "A shop sells apples at {k} for {p} dollars. How many dollars do {n} apples cost?",
        {"k": 3, "p": 2, "n": 15},
        lambda k, p, n: _f(n) / k * p,
    ),
    (
        "A rope {n} meters long is cut into pieces {p} meters long. How many pieces are there?",
        {"n": 45, "p": 5},
        lambda n, p: _f(n) / p,
    ),
    (
        "Each of {n} students has {p} pencils and {e} erasers. "
        "How many pencils and erasers do they have altogether?",
        {"n": 25, "p": 4, "e": 2},
        lambda n, p, e: _f(n) * (p + e),
    ),
    (
        "A phone's battery is full at 100% and loses {r}% every hour. "
        "What percentage is left after {h} hours?",
        {"r": 12, "h": 5},
        lambda r, h: 100 - _f(r) * h,
    ),
    (
        "A ticket costs {a} dollars for an adult and {c} dollars for a child. "
        "How many dollars do {na} adults and {nc} children pay in total?",
        {"a": 12, "c": 7, "na": 2, "nc": 3},
        lambda a, c, na, nc: _f(a) * na + _f(c) * nc,
    ),
    (
        "A water bottle holds {v} milliliters. How many milliliters do {n} full bottles hold?",
        {"v": 750, "n": 4},
        lambda v, n: _f(v) * n,
    ),
]

# --- multiple choice: (question, right option, wrong options, other accepted texts) -------

CHOICES: list[tuple[str, str, list[str], list[str]]] = [
    ("Which of these animals is a mammal?", "Dolphin", ["Shark", "Salmon", "Octopus"], []),
    ("Which of these is a noble gas?", "Neon", ["Nitrogen", "Oxygen", "Hydrogen"], []),
    ("What is the capital of Turkey?", "Ankara", ["Istanbul", "Izmir", "Antalya"], []),
    (
        "Which is the smallest planet in our solar system?",
        "Mercury",
        ["Mars", "Venus", "Earth"],
        [],
    ),
    ("Who wrote the Odyssey?", "Homer", ["Virgil", "Sophocles", "Plato"], []),
    ("Which organ do humans use to breathe?", "Lungs", ["Liver", "Kidneys", "Stomach"], ["lung"]),
    ("On which continent is Brazil?", "South America", ["Africa", "Asia", "Europe"], []),
    ("Which of these is a programming language?", "Java", ["Photoshop", "Windows", "Chrome"], []),
    (
        "Which of these animals is the largest?",
        "Blue whale",
        ["Elephant", "Giraffe", "Hippopotamus"],
        [],
    ),
    (
        "What is a triangle with three equal sides called?",
        "Equilateral",
        ["Isosceles", "Scalene", "Obtuse"],
        [],
    ),
    ("What is the longest river in Africa?", "Nile", ["Congo", "Niger", "Zambezi"], []),
    (
        "Who proposed the theory of evolution by natural selection?",
        "Charles Darwin",
        ["Isaac Newton", "Marie Curie", "Galileo Galilei"],
        ["darwin"],
    ),
    ("What is the plural of 'mouse'?", "Mice", ["Mouses", "Mousen", "Meese"], []),
    ("Which word means the same as 'happy'?", "Joyful", ["Sad", "Angry", "Tired"], []),
    ("Which word is the opposite of 'ancient'?", "Modern", ["Old", "Historic", "Antique"], []),
    ("Which of these words is a verb?", "Run", ["Table", "Blue", "Quickly"], []),
    (
        "What is the capital of Brazil?",
        "Brasília",
        ["Rio de Janeiro", "São Paulo", "Salvador"],
        ["brasilia"],
    ),
    ("Which instrument has 88 keys?", "Piano", ["Guitar", "Violin", "Flute"], []),
    ("Which shape has exactly five sides?", "Pentagon", ["Hexagon", "Octagon", "Square"], []),
    (
        "Which blood vessels carry blood away from the heart?",
        "Arteries",
        ["Veins", "Capillaries", "Nerves"],
        ["artery"],
    ),
    ("Which metal conducts electricity best?", "Silver", ["Iron", "Lead", "Tin"], []),
    ("In which country are the pyramids of Giza?", "Egypt", ["Mexico", "Peru", "Greece"], []),
    ("Which unit measures electrical resistance?", "Ohm", ["Volt", "Ampere", "Watt"], ["ohms"]),
    ("What is the main ingredient of guacamole?", "Avocado", ["Tomato", "Potato", "Cucumber"], []),
    ("Which sense uses the nose?", "Smell", ["Taste", "Hearing", "Touch"], []),
    (
        "Which of these is a renewable source of energy?",
        "Solar power",
        ["Coal", "Oil", "Natural gas"],
        ["solar"],
    ),
    ("Which month has the fewest days?", "February", ["January", "April", "June"], []),
    (
        "Which language is mainly spoken in Argentina?",
        "Spanish",
        ["Portuguese", "English", "Italian"],
        [],
    ),
    (
        "Which part of an animal cell holds most of its DNA?",
        "Nucleus",
        ["Ribosome", "Cell membrane", "Vacuole"],
        [],
    ),
    (
        "Who painted The Starry Night?",
        "Vincent van Gogh",
        ["Pablo Picasso", "Claude Monet", "Salvador Dalí"],
        ["van gogh"],
    ),
    ("Which planet has the Great Red Spot?", "Jupiter", ["Saturn", "Neptune", "Uranus"], []),
    ("What is the freezing point of water in degrees Celsius?", "0", ["32", "100", "10"], ["zero"]),
]


def _computed_choices() -> list[tuple[str, str, list[str], list[str]]]:
    """Choices whose right option is computed, so the key cannot be mistyped."""
    numbers = [21, 27, 29, 33]
    primes = [n for n in numbers if all(n % d for d in range(2, math.isqrt(n) + 1))]
    assert len(primes) == 1
    fractions = ["2/3", "3/4", "1/2", "3/5"]
    largest = max(fractions, key=Fraction)
    decimals = ["0.65", "0.095", "0.7", "0.59"]
    biggest = max(decimals, key=Fraction)
    out = [
        (
            "Which of these numbers is prime?",
            str(primes[0]),
            [str(n) for n in numbers if n not in primes],
            [],
        ),
        (
            "Which of these fractions is the largest?",
            largest,
            [f for f in fractions if f != largest],
            [],
        ),
        (
            "Which of these numbers is the largest?",
            biggest,
            [d for d in decimals if d != biggest],
            [],
        ),
    ]
    for question, answer, wrong in (
        ("What is 15% of 200?", Fraction(15, 100) * 200, [15, 20, 35]),
        ("What is 7 × 8?", Fraction(7 * 8), [54, 48, 64]),
        ("How many minutes are in two and a half hours?", Fraction(5, 2) * 60, [120, 130, 250]),
        ("What is the square root of 144?", Fraction(math.isqrt(144)), [14, 11, 16]),
        ("How many sides does an octagon have?", Fraction(8), [6, 10, 12]),
        ("What is 1000 - 275?", Fraction(1000 - 275), [835, 735, 625]),
        (
            "A dozen eggs cost 3 dollars. How many dollars do 4 dozen cost?",
            Fraction(3 * 4),
            [7, 15, 16],
        ),
    ):
        text = _number(answer)
        assert str(text) not in [str(w) for w in wrong]
        out.append((question, str(text), [str(w) for w in wrong], []))
    return out


def _number(value: Fraction | int) -> int | float:
    """Return the value as JSON writes it: an integer when whole, else an exact decimal."""
    value = Fraction(value)
    if value.denominator == 1:
        return int(value)
    as_float = float(value)
    assert Fraction(str(as_float)) == value, f"{value} has no short decimal"
    return as_float


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def choice_pattern(letter: str, texts: list[str]) -> str:
    """Accept the stated conclusion, the letter or the option's text; refuse an echo.

    A worked answer counts by its last stated conclusion ("the answer is C", "\\boxed{C}"),
    whatever options it walked through on the way. Otherwise the letter counts when it
    stands alone (any case), opens the answer as "B)" or "B.", or follows
    "answer"/"option"/"choice"; outside a lone letter it must be a capital, so the article
    "a" never reads as option A. An answer without a conclusion that writes another
    option's marker ("C)", "Option C") echoes the list and counts as wrong.
    """
    others = "".join(x for x in "ABCD" if x != letter)
    words = "|".join(re.escape(t.lower()) for t in texts)
    end = r"(?![\w'+#])"
    stated = r"(?:(?:answer|option|choice)\s*(?:is|:|=)\W{0,3}(?:option\W{0,3})?\(?|\\boxed\{(?:\\text\{)?)"
    return (
        rf"^(?:(?=.*{stated}(?-i:[ABCD]){end})"
        rf".*{stated}(?-i:{letter}){end}(?!.*{stated}(?-i:[{others}]){end})"
        rf"|(?!.*{stated}(?-i:[ABCD]){end})"
        rf"(?!.*(?:(?-i:(?<!\w)[{others}]\))|option\s+(?-i:[{others}]){end}))"
        rf"(?:\W*{letter}\W*$"
        rf"|\W*(?-i:{letter})[).:\]]"
        rf"|.*?(?:answer|option|choice)\W{{0,4}}(?:is\W{{0,4}})?(?:option\W{{0,3}})?(?-i:{letter})\b"
        rf"|.*?(?<!\w)(?:{words})(?!\w)))"
    )


def build() -> list[dict[str, Any]]:
    """Return every generated item, ids numbered within each category."""
    items: list[dict[str, Any]] = []

    def add(category: str, number: int, **fields: Any) -> None:
        items.append({"id": f"{PREFIX[category]}-{number:02d}", "category": category, **fields})

    for i, (question, accepted) in enumerate(FACTS):
        numeric_answer = accepted[0].isdigit()
        ask = NUMBER_ASKS[i % len(NUMBER_ASKS)] if numeric_answer else WORD_ASKS[i % len(WORD_ASKS)]
        add("fact", 17 + i, instruction=f"{question} {ask}".strip(), expected=accepted)
    for i, (template, values, fn) in enumerate(ARITHMETIC):
        text = template.format(**{k: _fmt(v) for k, v in values.items()})
        add(
            "arithmetic",
            1 + i,
            instruction=f"{text} {NUMBER_ASKS[i % len(NUMBER_ASKS)]}",
            numeric=_number(fn(**values)),
        )
    n = 0
    for i, (value, src, dst, factor) in enumerate(UNITS):
        n += 1
        template = UNIT_ASKS[i % len(UNIT_ASKS)]
        text = template.format(v=_fmt(value), V=_fmt(value), src=src, dst=dst)
        add(
            "unit-conversion",
            n,
            instruction=f"{text} {NUMBER_ASKS[(i + 1) % len(NUMBER_ASKS)]}",
            numeric=_number(_f(value) * factor),
        )
    for i, (template, values, fn) in enumerate(UNIT_SPECIAL):
        n += 1
        text = template.format(**{k: _fmt(v) for k, v in values.items()})
        add(
            "unit-conversion",
            n,
            instruction=f"{text} {NUMBER_ASKS[(i + 2) % len(NUMBER_ASKS)]}",
            numeric=_number(fn(**values)),
        )
    for i, (template, values, fn) in enumerate(REASONING):
        text = template.format(**{k: _fmt(v) for k, v in values.items()})
        add(
            "reasoning",
            1 + i,
            instruction=f"{text} {NUMBER_ASKS[(i + 3) % len(NUMBER_ASKS)]}",
            numeric=_number(fn(**values)),
        )
    for i, (question, right, wrong, also) in enumerate(CHOICES + _computed_choices()):
        options = list(wrong)
        options.insert(i % 4, right)  # the right answer at A, B, C, D in turn
        letter = "ABCD"[options.index(right)]
        listed = "\n".join(f"{x}) {o}" for x, o in zip("ABCD", options, strict=True))
        add(
            "multiple-choice",
            1 + i,
            instruction=f"{question}\n{listed}\n{LETTER_ASKS[i % len(LETTER_ASKS)]}",
            expected=[letter, right],
            pattern=choice_pattern(letter, [right, *also]),
        )
    return items


def legacy() -> list[dict[str, Any]]:
    """Return the items the file held before, each with its category."""
    kept = []
    for line in OUT.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        if data["id"] in LEGACY:
            kept.append({"id": data["id"], "category": LEGACY[data["id"]], **data})
    assert [d["id"] for d in kept] == list(LEGACY), "the 22 original items must all be there"
    return kept


def check(path: Path) -> None:
    """Score every item through the package's scorers: its answer right, wrong answers wrong."""
    items = load_dataset(path)
    for item in items:
        instruction = item.turns[0]
        rights: list[str]
        wrongs = ["I do not know.", ""]
        if item.numeric is not None:
            value = _fmt(item.numeric)
            rights = [value, f"The answer is {value}.", f"{value}\n"]
            wrongs += [_fmt(item.numeric + 1), _fmt(item.numeric * 10), instruction]
        elif item.pattern is not None and item.expected:  # multiple choice
            letter, text = item.expected[0], item.expected[1]
            options_listed = "\n".join(instruction.splitlines()[1:5])
            rights = [
                letter,
                letter.lower(),
                f"{letter})",
                f"({letter})",
                f"**{letter}**",
                f"{letter}) {text}",
                f"The answer is {letter}.",
                f"Answer: {letter}",
                f"**Answer:** {letter}",
                f"The correct answer is option {letter}.",
                text,
                # worked: every option discussed, then a conclusion
                f"{options_listed}\nTherefore, the correct answer is \\boxed{{{letter}}}.",
                f"{options_listed}\nThe correct answer is {letter}) {text}.",
                # the other options named after the conclusion, as reasons
                f"The answer is {letter}) {text}. Option {'B' if letter == 'A' else 'A'} is not.",
                f"Answer: {letter}\n\nWhy not option {'D' if letter != 'D' else 'C'}?",
            ]
            wrongs.append("A guess would be none of them.")  # the article is not option A
            wrongs += [x for x in "ABCD" if x != letter]
            wrongs += [f"The answer is {x}." for x in "ABCD" if x != letter]
            wrongs += [
                line.split(") ", 1)[1]
                for line in instruction.splitlines()[1:5]
                if not line.startswith(f"{letter})")
            ]
            wrongs += [instruction, "\n".join(instruction.splitlines()[1:5])]
            wrongs += [
                f"{options_listed}\nTherefore, the correct answer is \\boxed{{{x}}}."
                for x in "ABCD"
                if x != letter
            ]
            # walking through the options without concluding (cut off) is no answer
            wrongs.append(
                "\n".join(
                    f"**Option {x}: {line[3:]}**"
                    for x, line in zip("ABCD", instruction.splitlines()[1:5], strict=True)
                )
            )
            # changing its mind: the last conclusion counts
            other = next(x for x in "ABCD" if x != letter)
            wrongs.append(f"The answer is {letter}. No: the correct answer is {other}.")
            # a hedge names the right option among others: the scorer refuses it (`hedges`)
            wrongs += [f"\\boxed{{{letter}, {other}}}", f"The answer is {other} or {letter}."]
        elif item.pattern is not None:
            rights = {"re-01": ["s[::-1]"], "re-02": ["someone@example.com"]}[item.id]
        else:
            rights = [*item.expected, f"The answer is {item.expected[-1]}."]
            wrongs.append(instruction)
            assert not any(
                f" {normalize(e)} " in f" {normalize(instruction)} " for e in item.expected
            ), f"{item.id}: the question gives the answer away"
        for answer in rights:
            assert score(item, answer).get("correct"), f"{item.id}: {answer!r} should be right"
        for answer in wrongs:
            assert not score(item, answer).get("correct"), f"{item.id}: {answer!r} should be wrong"


def main() -> None:
    """Write the dataset, then check every item through the real scorers."""
    items = legacy() + build()
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    draft = OUT.with_suffix(".draft.jsonl")
    draft.write_text(
        "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8"
    )
    try:
        check(draft)  # the shipped file changes only once every item passes
    except BaseException:
        draft.unlink()
        raise
    draft.replace(OUT)
    counts = Counter(i["category"] for i in items)
    print(f"{len(items)} items written to {OUT}: {dict(counts)}")


if __name__ == "__main__":
    main()
