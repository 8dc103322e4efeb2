"""Text handling for the media flow: folding, tokens, the watch list, terms, the lexicon.

Everything here is plain Python (no bytewax), so it can be tested and benchmarked alone.

Folding
    :func:`fold` lower-cases (``str.casefold``), removes diacritics (NFD, then drop
    combining marks) and maps ``đ`` to ``d``: ``"VĂN LÂM"``, ``"Văn Lâm"`` and
    ``"Van Lam"`` all fold to ``"van lam"``. Text is NFC-normalised first, so Vietnamese
    typed with combining marks (some keyboards) and precomposed text compare equal.

Words
    :func:`tokens` splits on Unicode word boundaries (``\\w+``, so ``"Lâm"`` is one word and
    ``"Lâmxyz"`` another); URLs are dropped and ``@handle``/``#tag`` keep their word.

Watch list
    :class:`WatchList` matches aliases as whole-word phrases on folded tokens, so matching
    is diacritic-insensitive and never matches inside a word. When folding would merge
    aliases that the configuration keeps apart (``"Lâm"`` of one entity, ``"Lầm"`` of
    another), those aliases are matched on their accented form only, and a text that
    writes the name without any diacritics is *ambiguous*: it is attributed to neither
    entity (and counted), rather than to the wrong one.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# Near-duplicates (MinHash) live in vigil.flows.media.dedup; re-exported here, where
# they were first imported from.
from vigil.flows.media.dedup import MinHashIndex, jaccard, minhash, minhash_many, shingles

__all__ = [
    "LexiconSentiment",
    "Match",
    "MinHashIndex",
    "WatchList",
    "fold",
    "guess_language",
    "has_diacritics",
    "jaccard",
    "load_stopwords",
    "minhash",
    "minhash_many",
    "normalize",
    "shingles",
    "terms",
    "tokens",
]

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)
# Vietnamese letters that English never uses (after NFC): a cheap language guess.
_VI_LETTERS = frozenset("ăâđêôơưĂÂĐÊÔƠƯ")
_FOLD_EXTRA = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "ł": "l", "ø": "o"})


def normalize(text: str) -> str:
    """NFC and casefold: accents kept, case removed.

    >>> normalize("VĂN LÂM") == normalize("Văn Lâm")
    True
    """
    return unicodedata.normalize("NFC", text).casefold()


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Casefolded text without diacritics (``đ`` becomes ``d``).

    Parameters
    ----------
    text
        Any text.

    Examples
    --------
    >>> fold("VĂN LÂM"), fold("Văn Lâm"), fold("Van Lam"), fold("Đông Anh")
    ('van lam', 'van lam', 'van lam', 'dong anh')
    """
    decomposed = unicodedata.normalize("NFD", text.translate(_FOLD_EXTRA).casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_FOLD_EXTRA)


def has_diacritics(text: str) -> bool:
    """Whether ``text`` carries any diacritic (or ``đ``).

    >>> has_diacritics("Van Lam"), has_diacritics("Văn Lâm")
    (False, True)
    """
    return fold(text) != text.casefold()


def tokens(text: str) -> list[str]:
    """Words of ``text``, NFC-normalised and casefolded, accents kept; URLs removed.

    >>> tokens("RT @JetBlue: Lũ lụt ở Văn Lâm! https://t.co/x #ngap")
    ['rt', 'jetblue', 'lũ', 'lụt', 'ở', 'văn', 'lâm', 'ngap']
    """
    # Every URL match holds "://" or a "www." in some case: most texts skip the regex.
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" ", text)
    return _WORD.findall(normalize(text))


def guess_language(text: str) -> str:
    """``"vi"`` if the text has letters only Vietnamese uses, else ``"en"``.

    A heuristic for items whose feed does not declare a language.

    >>> guess_language("Ngập lụt ở Văn Lâm"), guess_language("Flight delayed again")
    ('vi', 'en')
    """
    if text.isascii():  # no Vietnamese letter, no tone mark (the common English case)
        return "en"
    nfc = unicodedata.normalize("NFC", text)
    if not _VI_LETTERS.isdisjoint(nfc):
        return "vi"
    # Tone marks on plain vowels (à, ả, ã, á, ạ ...) in several words also mean Vietnamese.
    nfd = unicodedata.normalize("NFD", nfc)
    marked = sum(nfd.count(m) for m in "\u0300\u0301\u0303\u0309\u0323")
    return "vi" if marked >= 2 else "en"


# ---------------------------------------------------------------------------- watch list
@dataclass(frozen=True, slots=True)
class Match:
    """One watched entity found in a text: by which alias or keyword."""

    entity: str
    phrase: str
    by: str  # "alias" or "keyword"


@dataclass(frozen=True, slots=True)
class _Phrase:
    entity: str
    phrase: str
    by: str
    folded: tuple[str, ...]
    exact: tuple[str, ...]
    strict: bool  # folding collides with another entity's phrase: match the accents too
    match: Match  # what finding it reports (one frozen value, not one per text)


class WatchList:
    """Finds watched entities in text: whole words, case- and diacritic-insensitive.

    Parameters
    ----------
    entities
        ``(entity id, aliases, keywords)`` triples. Aliases are names of the entity;
        keywords are further phrases that count as a mention of it (a project's topic).

    Examples
    --------
    >>> wl = WatchList([("van_lam", ("Văn Lâm",), ()), ("lam_son", ("Lam Sơn",), ())])
    >>> [m.entity for m in wl.find("UBND huyện VĂN LÂM họp")]
    ['van_lam']
    >>> [m.entity for m in wl.find("tin van lam hom nay")]
    ['van_lam']
    >>> wl.find("Vănlâm")  # inside another word: no match
    []

    Names that fold alike stay apart: ``"Lâm"`` and ``"Lầm"`` are different names, so
    each is matched only with its own accents, and an unaccented ``"Lam"`` is ambiguous:

    >>> wl = WatchList([("a", ("Lâm",), ()), ("b", ("Lầm",), ())])
    >>> [m.entity for m in wl.find("ông Lâm nói")], [m.entity for m in wl.find("ông LẦM nói")]
    (['a'], ['b'])
    >>> wl.find("ong Lam noi"), wl.ambiguous("ong Lam noi")
    ([], ['lam'])
    """

    def __init__(self, entities: Iterable[tuple[str, Sequence[str], Sequence[str]]]) -> None:
        raw: list[tuple[str, str, str]] = []
        for ent, aliases, keywords in entities:
            raw.extend((ent, a, "alias") for a in aliases)
            raw.extend((ent, k, "keyword") for k in keywords)
        owners: dict[tuple[str, ...], set[str]] = {}
        for ent, phrase, _by in raw:
            owners.setdefault(tuple(fold(t) for t in tokens(phrase)), set()).add(ent)
        self._first: dict[str, list[_Phrase]] = {}
        self._ambiguous: set[tuple[str, ...]] = set()
        self.entities: tuple[str, ...] = tuple(dict.fromkeys(e for e, _, _ in raw))
        for ent, phrase, by in raw:
            exact = tuple(tokens(phrase))
            if not exact:
                continue
            folded = tuple(fold(t) for t in exact)
            strict = len(owners[folded]) > 1
            if strict:
                self._ambiguous.add(folded)
            p = _Phrase(ent, phrase, by, folded, exact, strict, Match(ent, phrase, by))
            self._first.setdefault(folded[0], []).append(p)
        for lst in self._first.values():
            lst.sort(key=lambda p: -len(p.folded))  # longest phrase first
        #: Folded words of aliases (they name an entity, so they are not story terms).
        self.alias_words: frozenset[str] = frozenset(
            w for lst in self._first.values() for p in lst if p.by == "alias" for w in p.folded
        )

    def find_tokens(self, exact: Sequence[str], folded: Sequence[str]) -> list[Match]:
        """Matches in a text given as its exact (accented) and folded tokens."""
        out: list[Match] = []
        first = self._first
        if first.keys().isdisjoint(folded):  # the common case: no watched name at all
            return out
        # Only words that start a phrase can match; a match skips the words it covers.
        starts = [i for i, w in enumerate(folded) if w in first]
        seen: set[str] = set()
        nxt = 0
        for i in starts:
            if i < nxt:
                continue
            for p in first[folded[i]]:
                k = len(p.folded)
                # A one-word phrase matches its first word, which is how it was found.
                if k > 1 and tuple(folded[i : i + k]) != p.folded:
                    continue
                if p.strict and tuple(exact[i : i + k]) != p.exact:
                    continue
                if p.entity not in seen:
                    seen.add(p.entity)
                    out.append(p.match)
                nxt = i + k
                break
        return out

    def find(self, text: str) -> list[Match]:
        """Entities mentioned in ``text``, each once, in order of first mention."""
        exact = tokens(text)
        return self.find_tokens(exact, [fold(t) for t in exact])

    def ambiguous(self, text: str) -> list[str]:
        """Names written without diacritics that could be several watched entities."""
        exact = tokens(text)
        folded = [fold(t) for t in exact]
        out = []
        for phrase in self._ambiguous:
            k = len(phrase)
            for i in range(len(folded) - k + 1):
                if tuple(folded[i : i + k]) == phrase and tuple(exact[i : i + k]) == phrase:
                    out.append(" ".join(phrase))
                    break
        return out

    def ambiguous_tokens(self, exact: Sequence[str], folded: Sequence[str]) -> int:
        """How many ambiguous unaccented names occur (for a metric), given tokens."""
        if not self._ambiguous:
            return 0
        n = 0
        for phrase in self._ambiguous:
            k = len(phrase)
            for i in range(len(folded) - k + 1):
                if tuple(folded[i : i + k]) == phrase and tuple(exact[i : i + k]) == phrase:
                    n += 1
                    break
        return n


# ---------------------------------------------------------------------------- terms
@lru_cache(maxsize=4)
def load_stopwords(lang: str) -> frozenset[str]:
    """Folded stop words shipped in ``flows/media/lexicons/stopwords_<lang>.txt``."""
    text = (resources.files("vigil.flows.media") / "lexicons" / f"stopwords_{lang}.txt").read_text(
        "utf-8"
    )
    return frozenset(
        fold(w) for line in text.splitlines() if (w := line.strip()) and not w.startswith("#")
    )


@lru_cache(maxsize=1)
def _stop() -> frozenset[str]:
    return load_stopwords("en") | load_stopwords("vi")


@lru_cache(maxsize=64)
def _skipped(exclude: frozenset[str]) -> frozenset[str]:
    """Stop words and ``exclude`` in one set (one lookup per word)."""
    return _stop() | exclude


def terms(
    folded: Sequence[str],
    exclude: frozenset[str] = frozenset(),
    also: AbstractSet[str] = frozenset(),
) -> set[str]:
    """Candidate story terms of a text: content words and two-word phrases (folded).

    Stop words, numbers, one-letter words, ``exclude`` (e.g. the watched names) and
    ``also`` (e.g. the text's own handles) are not terms; a phrase is two adjacent content
    words. Vietnamese words are often two syllables, so phrases matter there.

    >>> sorted(terms(["the", "flood", "closes", "route", "5"]))
    ['closes', 'closes route', 'flood', 'flood closes', 'route']
    >>> sorted(terms(["flood", "closes", "route"], frozenset({"route"}), {"flood"}))
    ['closes']
    """
    skip = _skipped(exclude)
    out: set[str] = set()
    add = out.add
    prev = None  # the previous word, if it was a content word
    for w in folded:
        if len(w) > 1 and w not in skip and w not in also and not w.isdigit():
            add(w)
            if prev is not None:
                add(prev + " " + w)
            prev = w
        else:
            prev = None
    return out


# ---------------------------------------------------------------------------- sentiment
@dataclass(frozen=True, slots=True)
class _Lexicon:
    words: dict[tuple[str, ...], float]
    folded: dict[tuple[str, ...], float]
    negators: frozenset[str]
    intensifiers: dict[str, float]
    longest: int


def _read_lexicon(lang: str) -> _Lexicon:
    text = (resources.files("vigil.flows.media") / "lexicons" / f"sentiment_{lang}.tsv").read_text(
        "utf-8"
    )
    words: dict[tuple[str, ...], float] = {}
    negators: set[str] = set()
    intens: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        phrase, _, value = line.rpartition("\t")
        if value == "NEG":
            negators.add(normalize(phrase))
        elif value.startswith("x"):
            intens[normalize(phrase)] = float(value[1:])
        else:
            words[tuple(tokens(phrase))] = float(value)
    folded: dict[tuple[str, ...], float] = {}
    for k, v in words.items():
        folded.setdefault(tuple(fold(t) for t in k), v)
    longest = max((len(k) for k in words), default=1)
    return _Lexicon(words, folded, frozenset(negators), intens, longest)


class LexiconSentiment:
    """Sentiment of a short text from small English and Vietnamese word lists.

    Each listed word or phrase has a weight in ``[-3, 3]``. A negator (``not``, ``không``,
    ``chưa`` ...) within the three previous words flips and halves it; an intensifier
    (``very``, ``rất`` ...) just before scales it. The score is the sum divided by
    ``sqrt(sum^2 + 4)``, in ``(-1, 1)``. Vietnamese written without diacritics is looked
    up on folded words. The lists were written for Vigil (see ``flows/media/lexicons/README.md``).

    Parameters
    ----------
    negative_below, positive_above
        Score thresholds of the ``"negative"`` and ``"positive"`` labels.

    Examples
    --------
    >>> s = LexiconSentiment()
    >>> s.label("Flight cancelled again, worst service ever", "en")
    'negative'
    >>> s.label("Cảm ơn, dịch vụ rất tốt", "vi"), s.label("dich vu khong tot", "vi")
    ('positive', 'negative')
    >>> s.label("The council meets on Monday", "en")
    'neutral'
    """

    def __init__(self, negative_below: float = -0.2, positive_above: float = 0.2) -> None:
        self.negative_below = negative_below
        self.positive_above = positive_above
        self._lex = {lang: _read_lexicon(lang) for lang in ("en", "vi")}
        # The lengths of the listed phrases starting with each word, longest first, per
        # table: any other word is skipped, and only those lengths are tried.
        self._starts: dict[int, dict[str, tuple[int, ...]]] = {}
        for lx in self._lex.values():
            for t in (lx.words, lx.folded):
                lens: dict[str, set[int]] = {}
                for k in t:
                    if k:
                        lens.setdefault(k[0], set()).add(len(k))
                self._starts[id(t)] = {w: tuple(sorted(v, reverse=True)) for w, v in lens.items()}
        self._folded_negators = {
            lang: frozenset(fold(n) for n in lx.negators) for lang, lx in self._lex.items()
        }

    def score_tokens(self, exact: Sequence[str], lang: str, accented: bool = True) -> float:
        """Score of a tokenised text in ``(-1, 1)``."""
        lng = lang if lang in self._lex else "en"
        lex = self._lex[lng]
        table = lex.words if accented else lex.folded
        negs = lex.negators if accented else self._folded_negators[lng]
        toks = exact if accented else [fold(t) for t in exact]
        starts = self._starts[id(table)]
        total = 0.0
        n = len(toks)
        nxt = 0  # words before this are inside a phrase already scored
        for i in [i for i, w in enumerate(toks) if w in starts]:
            if i < nxt:
                continue
            hit = None
            for k in starts[toks[i]]:  # the listed lengths, longest first
                if k <= n - i:
                    v = table.get(tuple(toks[i : i + k]))
                    if v is not None:
                        hit = (k, v)
                        break
            if hit is None:
                continue
            k, v = hit
            if i > 0:
                v *= lex.intensifiers.get(toks[i - 1], 1.0)
            if i and not negs.isdisjoint(toks[max(0, i - 3) : i]):
                v = -0.5 * v
            total += v
            nxt = i + k
        return float(total / math.sqrt(total * total + 4.0))

    def score(self, text: str, lang: str) -> float:
        """Score of ``text`` in ``(-1, 1)``; below 0 is negative."""
        return self.score_tokens(tokens(text), lang, has_diacritics(text) or lang != "vi")

    def label_of(self, score: float) -> str:
        if score <= self.negative_below:
            return "negative"
        if score >= self.positive_above:
            return "positive"
        return "neutral"

    def label(self, text: str, lang: str) -> str:
        """``"negative"``, ``"neutral"`` or ``"positive"``."""
        return self.label_of(self.score(text, lang))
