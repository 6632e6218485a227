"""Compose the classifier's training corpus: templates (templates.py) x slot fillers (slots.py) x voices,
plus hand-written requests (handwritten.jsonl). Deterministic for a seed.

    python tools/classifier/make_corpus.py                 # writes tools/classifier/corpus.jsonl (seed 0)
    python tools/classifier/make_corpus.py --seed 3 --out /tmp/c3.jsonl

Each row: {"text", "task_type", "group"}; `group` names the template (or hand-written line) a row came
from, so cross-validation can hold out whole templates (rows of one template are near-duplicates and
would flatter a random split). Voices: polite or bare openers, sign-offs, all lowercase, typos,
dropped articles (non-native English), a paragraph of context first, code or a log pasted before or
after the instruction, long pastes (many blobs, or one log line spammed). Nothing here is drawn from
tests/data/heldout_requests.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import slots  # noqa: E402
from templates import T  # noqa: E402

PER_TEMPLATE = 14  # filled variants per template (before de-duplication)
GENERAL_PER_TEMPLATE = 6

OPENERS = ["hey, ", "hi! ", "quick one: ", "ok so ", "next: ", "Task: ", "so ", "hey claude, ", "one more: ",
           "Hi team, ", "morning! ", "yo ", "hello, ", "question: ", "", "", "", ""]
ASK = ["can you ", "could you please ", "please ", "pls ", "I need you to ", "would you ", "help me ",
       "I'd like you to ", "kindly "]
SIGNOFFS = [" thx", " pls", " thanks!", " asap", " :)", " — thanks", " ty", ".", " when you get a chance",
            " (urgent)", " no rush", " 🙏", "!!", " thank you in advance", " cheers"]
SLOT = re.compile(r"\{(\w+)\}")
IMPERATIVE = re.compile(r"^(?:write|add|draft|review|check|extract|pull|triage|label|design|document|complete|"
                        r"finish|fill|implement|tell|make|get|grab|look|go|sort|assign|investigate|debug|"
                        r"figure|find|compose|reply|respond|update|generate|explain|audit|scan|cover|test|"
                        r"mock|parse|convert|turn|build|plan|propose|sketch|validate|verify|route|classify|"
                        r"categori[sz]e|bucket|mark|increase|unit-test|fuzz|spec|read|collect|count|map)\b")


def fill(template: str, rng: random.Random) -> str:
    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        pool = {
            "lang": slots.LANGS, "fw": slots.FRAMEWORKS, "tool": slots.TEST_TOOLS, "comp": slots.COMPONENTS,
            "func": slots.FUNCS, "file": slots.FILES, "sym": slots.SYMPTOMS, "code": slots.CODE,
            "log": slots.LOGS, "team": slots.TEAMS, "person": slots.PEOPLE,
        }.get(key)
        if pool is not None:
            return rng.choice(pool)
        if key == "n":
            return str(rng.choice([3, 5, 8, 12, 20, 40]))
        return m.group(0)

    text = SLOT.sub(one, template)
    text = re.sub(r"\b(the|your|our) the ", r"\1 ", text)  # templates that say "the {comp}"
    # literal braces in templates are doubled ({{ }}) the str.format way
    return text.replace("{{", "{").replace("}}", "}")


def typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.75:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def long_paste(rng: random.Random) -> str:
    """A long paste: several blobs, or one log line spammed (what people paste before or after asking)."""
    if rng.random() < 0.4:
        line = rng.choice(slots.LOGS).split("\n")[0]
        return "\n".join([line] * rng.randrange(20, 200))
    return "\n\n".join(rng.choice(slots.CODE + slots.LOGS) for _ in range(rng.randrange(3, 9)))


def voice(text: str, rng: random.Random, *, general: bool = False) -> str:
    if not general and rng.random() < 0.12:
        ctx = rng.sample(slots.CONTEXTS, rng.choice([1, 1, 2]))
        fw, lang = rng.choice(slots.FRAMEWORKS), rng.choice(slots.LANGS)
        intro = " ".join(c.replace("{framework}", fw).replace("{lang}", lang) for c in ctx)
        text = intro + ("\n\n" if rng.random() < 0.7 else " ") + text
    if not general and "{" not in text and rng.random() < 0.14 and "\n" not in text:
        blob = rng.choice(slots.CODE + slots.LOGS)
        text = blob + "\n\n" + text if rng.random() < 0.5 else text + "\n\n" + blob
    elif not general and rng.random() < 0.07:
        text = long_paste(rng) + "\n\n" + text if rng.random() < 0.6 else text + "\n\n" + long_paste(rng)
    r = rng.random()
    if r < 0.22 and IMPERATIVE.match(text):
        text = rng.choice(ASK) + text
    elif r < 0.45:
        opener = rng.choice(OPENERS)
        text = opener + text if opener else text
    if rng.random() < 0.25:
        text = text.rstrip(".?!") + rng.choice(SIGNOFFS)
    if rng.random() < 0.3:
        text = text.lower()
    elif rng.random() < 0.15:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.22:
        words = text.split(" ")
        for _ in range(rng.choice([1, 1, 2, 3])):
            k = rng.randrange(len(words))
            words[k] = typo(words[k], rng)
        text = " ".join(words)
    if rng.random() < 0.1:
        text = re.sub(r"\b(?:the|a|an) ", "", text)
    return text.strip()


def handwritten() -> list[dict]:
    path = HERE / "handwritten.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"text": r["text"], "task_type": r["task_type"], "group": f"hand:{i}"} for i, r in enumerate(rows)]


def build(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    for task_type, templates in T.items():
        general = task_type == "general"
        per = GENERAL_PER_TEMPLATE if general else PER_TEMPLATE
        for ti, template in enumerate(templates):
            for _ in range(per):
                text = voice(fill(template, rng), rng, general=general)
                if text and text not in seen:
                    seen.add(text)
                    rows.append({"text": text, "task_type": task_type, "group": f"{task_type}:{ti}"})
    for row in handwritten():
        for variant in (row["text"], voice(row["text"], rng)):
            if variant not in seen:
                seen.add(variant)
                rows.append({**row, "text": variant})
    rng.shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "corpus.jsonl")
    args = ap.parse_args()
    rows = build(args.seed)
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["task_type"]] = counts.get(row["task_type"], 0) + 1
    print(f"{len(rows)} rows -> {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
