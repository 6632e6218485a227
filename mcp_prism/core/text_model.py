"""A small linear text classifier: hashed TF-IDF features and one weight vector per class.

Pure (stdlib only, no I/O): `TextModel.from_bytes` takes the shipped weights as bytes (the config
layer reads `mcp_prism/data/classifier.bin`), and `text_counts` is the one feature extractor, used
both here and by the training script (`tools/classifier/train.py`), so training and inference cannot
drift apart.

Features, hashed with CRC-32 into `buckets` slots (collisions are tolerated, as in any hashing trick):
- word unigrams and bigrams (numbers folded to one token; `?` and code punctuation are tokens),
- character 3- to 5-grams inside each word, padded with spaces (robust to typos and inflections),
- the first few words and the last word marked by position, and the first and last dozen words as
  their own bags (the instruction usually leads or ends, around a paste),
- a little shape: line count, length, a question mark at the end, a first line that looks like code.
Weights: term frequency (sublinear, or presence only: the model says which) x inverse document
frequency, L2-normalised; a class's score is
its bias plus the dot product; probabilities are the softmax of the scores.

File format (zlib-compressed): b"PRISMTXT1\\n", a 4-byte little-endian header length, a JSON header
(classes, buckets, biases, per-class weight scales, idf scale, thresholds, training metadata), then
`buckets` uint8 IDF values and, per class, `buckets` weights stored as uint8 (int8 + 128).
"""

from __future__ import annotations

import json
import math
import re
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter, mul
from typing import Any

MAGIC = b"PRISMTXT1\n"
FEATURE_VERSION = 1

# Long texts (pasted logs, whole files) are read as a head and a tail: the instruction is almost
# always at one end, and this bounds the cost of a call.
HEAD_CHARS = 1500
TAIL_CHARS = 600
LEAD_WORDS = 4
END_WORDS = 12
CHAR_MIN, CHAR_MAX = 3, 5
CHAR_WORD_MAX = 20  # longer "words" (hashes, base64) get no character n-grams
# Character n-grams for the first and last words only: they cost most of the features, and the
# instruction sits at one end; the middle of a long paste still gives its words and word pairs.
CHAR_HEAD_WORDS, CHAR_TAIL_WORDS = 120, 40

_TOKEN = re.compile(r"[^\W\d_][\w'’-]*|\d+|[?{}();=<>\[\]`@#:$/\\|*+!]")
_CODE_LINE = re.compile(r"^\s*(?:def |func |fn |class |public |private |function |const |let |var |import |"
                        r"from \S+ import |SELECT |#include|package |impl |interface |export |async |@\w+|"
                        r"[\w.]+\(.*\)\s*[{:]?\s*$|.*[{;]\s*$)")
_FIELD_BITS, _FIELD_OFFSET = 32, 32768  # packed class sums (see TextModel._fold)
_FIELD_MASK = (1 << _FIELD_BITS) - 1
# (mask, with character n-grams) -> word -> its feature buckets (bounded caches)
_WORD_FEATURES: dict[tuple[int, bool], dict[str, tuple[int, ...]]] = {}
_WORD_CACHE_MAX = 50_000


def _h(s: str) -> int:
    return zlib.crc32(s.encode("utf-8", "surrogatepass"))


def _word_features(word: str, with_chars: bool, mask: int) -> tuple[int, ...]:
    """A word's unigram bucket, plus its character n-gram buckets when `with_chars` (cached)."""
    cache = _WORD_FEATURES.setdefault((mask, with_chars), {})
    feats = cache.get(word)
    if feats is None:
        keys = ["w:" + word]
        if with_chars:
            padded = f" {word} "
            n = len(padded)
            keys += ["c:" + padded[i:i + k] for k in range(CHAR_MIN, CHAR_MAX + 1) for i in range(n - k + 1)]
        feats = tuple(_h(k) & mask for k in keys)
        if len(cache) >= _WORD_CACHE_MAX:
            cache.clear()
        cache[word] = feats
    return feats


def _window(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def _bucket(n: int, edges: Iterable[int]) -> int:
    return sum(n > e for e in edges)


def text_counts(text: str, buckets: int) -> dict[int, int]:
    """Hashed feature counts of `text` (`buckets` must be a power of two)."""
    mask = buckets - 1
    window = _window(text).lower()
    tokens = ["<n>" if t.isdigit() else t for t in _TOKEN.findall(window)]
    feats: list[int] = []
    extend, append = feats.extend, feats.append
    prev = "<s>"
    tail_from = len(tokens) - CHAR_TAIL_WORDS
    for i, t in enumerate(tokens):
        chars = (i < CHAR_HEAD_WORDS or i >= tail_from) and t[0].isalpha() and len(t) <= CHAR_WORD_MAX
        extend(_word_features(t, chars, mask))
        append(_h("b:" + prev + " " + t) & mask)
        prev = t
    words = [t for t in tokens if t[0].isalpha()]
    keys = [f"^{i}:{w}" for i, w in enumerate(words[:LEAD_WORDS])]
    if words:
        keys.append("$:" + words[-1])
    # The words at either end again, as their own features: the instruction before a paste, or after it.
    keys += ["h:" + w for w in words[:END_WORDS]]
    keys += ["t:" + w for w in words[-END_WORDS:]]
    stripped = window.strip()
    lines = stripped.count("\n") + 1 if stripped else 0
    keys.append(f"s:lines{_bucket(lines, (1, 3, 10, 30))}")
    keys.append(f"s:len{_bucket(len(text), (20, 60, 150, 400, 1500))}")
    if stripped.endswith("?"):
        keys.append("s:endq")
    first = stripped.split("\n", 1)[0] if stripped else ""
    if first and _CODE_LINE.match(first):
        keys.append("s:codefirst")
    feats.extend(_h(k) & mask for k in keys)
    return dict(Counter(feats))


@dataclass(frozen=True)
class Scores:
    """Class probabilities, best first."""

    ranked: tuple[tuple[str, float], ...]

    @property
    def best(self) -> tuple[str, float]:
        return self.ranked[0]

    @property
    def second(self) -> tuple[str, float] | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


class TextModel:
    """Multinomial linear model over `text_counts` features, loaded from the shipped bytes."""

    def __init__(self, classes: tuple[str, ...], buckets: int, idf: array, weights: tuple[bytes, ...],
                 scales: tuple[float, ...], biases: tuple[float, ...], meta: dict[str, Any]) -> None:
        if buckets & (buckets - 1) or buckets <= 0:
            raise ValueError(f"buckets must be a power of two, got {buckets}")
        if (len(idf) != buckets or len(weights) != len(classes) or len(scales) != len(classes)
                or any(len(w) != buckets for w in weights)):
            raise ValueError("model arrays do not match its classes and buckets")
        self.classes = classes
        self.buckets = buckets
        self.idf = idf
        # Weight of class c for bucket j: (weights[c][j] - 128) * scales[c]. Kept as bytes because
        # indexing bytes gives small cached ints (no float allocated per lookup): scoring is 2-3x faster.
        self.weights = weights
        self.scales = scales
        self.biases = biases
        # With presence-only term frequency a feature's value is idf / norm, so each class's weight and
        # the idf fold into one float per bucket, once: a score is then a plain sum of lookups.
        self._folded: tuple[list[int], float, list[float]] | None = None
        self.meta = meta
        # Probability below which the best type is not trusted (fall back), and below which a verdict
        # is reported as uncertain; both chosen by cross-validation on the training corpus.
        self.threshold = float(meta.get("threshold", 0.0))
        # Term frequency: "sublinear" (1 + log count) or "binary" (presence), chosen by cross-validation.
        self.binary_tf = meta.get("tf", "sublinear") == "binary"
        self.uncertain_below = float(meta.get("uncertain_below", 0.0))

    # ---------------------------------------------------------------- scoring
    def vector(self, text: str) -> tuple[list[int], list[float]]:
        """The L2-normalised sublinear TF-IDF vector of `text`, as (indices, values)."""
        counts = text_counts(text, self.buckets)
        idx = list(counts)
        idf = self.idf
        if self.binary_tf:
            vals = [idf[j] for j in idx]
        else:
            vals = [(1.0 + math.log(c)) * idf[j] if c > 1 else idf[j] for j, c in counts.items()]
        norm = math.sqrt(sum(map(mul, vals, vals))) or 1.0
        return idx, [v / norm for v in vals]

    def weight(self, cls: int, bucket: int) -> float:
        return (self.weights[cls][bucket] - 128) * self.scales[cls]

    def _fold(self) -> tuple[list[int], float, list[float]]:
        """Presence-only TF: a feature's value is idf / norm, so class c's score is
        bias + sum_j(w_cj * idf_j) / norm. Fold w * idf into 16-bit fixed point and pack the classes of a
        bucket into one integer, 32 bits a class: a request's 12 sums are then one sum of integers
        (a field cannot overflow: even 65,536 features x 65,535 < 2**32)."""
        if self._folded is None:
            idf = self.idf.tolist()
            n_cls = len(self.classes)
            # one 16-bit step for the largest |w * idf| any class can reach
            step = max(127 * s for s in self.scales) * max(idf) / 32767 or 1.0
            fields = array("I", bytes(4 * n_cls * self.buckets))
            for c, (w, s) in enumerate(zip(self.weights, self.scales, strict=True)):
                k = s / step
                fields[c::n_cls] = array("I", [round((q - 128) * k * f) + _FIELD_OFFSET
                                               for q, f in zip(w, idf, strict=True)])
            if sys.byteorder != "little":
                fields.byteswap()
            raw, width = fields.tobytes(), 4 * n_cls
            packed = [int.from_bytes(raw[i:i + width], "little") for i in range(0, len(raw), width)]
            self._folded = (packed, step, [f * f for f in idf])
        return self._folded

    def scores(self, text: str) -> Scores:
        if self.binary_tf:
            idx = list(text_counts(text, self.buckets))
            packed, scale, idf2 = self._fold()
            if len(idx) > 1:
                pick = itemgetter(*idx)
                norm = math.sqrt(sum(pick(idf2))) or 1.0
                total = sum(pick(packed))
            else:
                norm, total = math.sqrt(idf2[idx[0]]) or 1.0, packed[idx[0]]
            base = len(idx) * _FIELD_OFFSET
            raw = [b + (((total >> (_FIELD_BITS * c)) & _FIELD_MASK) - base) * scale / norm
                   for c, b in enumerate(self.biases)]
        else:
            idx, vals = self.vector(text)
            total_v = sum(vals)
            pick = itemgetter(*idx) if len(idx) > 1 else (lambda w: (w[idx[0]],))
            raw = [b + s * (sum(map(mul, pick(w), vals)) - 128.0 * total_v)
                   for w, s, b in zip(self.weights, self.scales, self.biases, strict=True)]
        top = max(raw)
        exps = [math.exp(s - top) for s in raw]
        total = sum(exps)
        ranked = sorted(zip(self.classes, (e / total for e in exps), strict=True), key=lambda p: -p[1])
        return Scores(tuple(ranked))

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_bytes(cls, data: bytes) -> TextModel:
        try:
            raw = zlib.decompress(data)
        except zlib.error as e:
            raise ValueError(f"classifier model is not zlib data: {e}") from None
        if not raw.startswith(MAGIC):
            raise ValueError("classifier model has the wrong magic bytes (not a PRISMTXT1 file)")
        pos = len(MAGIC)
        hlen = int.from_bytes(raw[pos:pos + 4], "little")
        pos += 4
        header = json.loads(raw[pos:pos + hlen].decode("utf-8"))
        pos += hlen
        if header.get("feature_version") != FEATURE_VERSION:
            raise ValueError(f"classifier model uses feature version {header.get('feature_version')}, "
                             f"this code extracts version {FEATURE_VERSION}: retrain it")
        classes = tuple(header["classes"])
        buckets = int(header["buckets"])
        q_idf = raw[pos:pos + buckets]
        pos += buckets
        idf_scale, idf_min = float(header["idf_scale"]), float(header["idf_min"])
        idf = array("f", (idf_min + q * idf_scale for q in q_idf))
        weights = []
        for _ in header["weight_scales"]:
            weights.append(bytes(raw[pos:pos + buckets]))
            pos += buckets
        if pos != len(raw):
            raise ValueError("classifier model has trailing or missing bytes")
        return cls(classes, buckets, idf, tuple(weights), tuple(float(x) for x in header["weight_scales"]),
                   tuple(float(b) for b in header["biases"]), header.get("meta", {}))

    @staticmethod
    def to_bytes(classes: list[str], buckets: int, idf: list[float], weights: list[list[float]],
                 biases: list[float], meta: dict[str, Any]) -> bytes:
        """Quantise and pack (idf to uint8, weights to int8 with one scale per class)."""
        idf_min, idf_max = min(idf), max(idf)
        idf_scale = (idf_max - idf_min) / 255 or 1.0
        q_idf = bytes(round((v - idf_min) / idf_scale) for v in idf)
        scales, blobs = [], []
        for row in weights:
            scale = max(abs(v) for v in row) / 127 or 1.0
            scales.append(scale)
            blobs.append(bytes(128 + max(-127, min(127, round(v / scale))) for v in row))
        header = json.dumps({"feature_version": FEATURE_VERSION, "classes": classes, "buckets": buckets,
                             "idf_scale": idf_scale, "idf_min": idf_min, "weight_scales": scales,
                             "biases": biases, "meta": meta}).encode("utf-8")
        raw = MAGIC + len(header).to_bytes(4, "little") + header + q_idf + b"".join(blobs)
        return zlib.compress(raw, 9)


def quantise_idf(idf: list[float]) -> list[float]:
    """The IDF values a model will hold after packing (training uses these, so it sees what inference does)."""
    idf_min, idf_max = min(idf), max(idf)
    scale = (idf_max - idf_min) / 255 or 1.0
    return [idf_min + round((v - idf_min) / scale) * scale for v in idf]
