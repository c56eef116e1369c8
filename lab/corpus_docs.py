"""Documents and articles of the synthetic corpus: the real framework first, then generated documents.

Everything is a pure function of the seed: the documents come in a fixed order, and each document's
wording is drawn from its own random stream, so any prefix of the sequence is the same for every
profile.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from ragperf_lab.corpus_text import (
    CHAPTERS,
    CITIES,
    CLOSINGS,
    DETAILS,
    MINISTRIES,
    OPENINGS,
    PROVINCES,
    REAL_DOCS,
    ROMAN,
    SECTORS,
    THEMES,
    RealDoc,
    Sector,
    Topic,
)
from ragperf_lab.corpus_topics_a import TOPICS_A
from ragperf_lab.corpus_topics_b import TOPICS_B
from ragperf_lab.corpus_topics_c import TOPICS_C
from ragperf_lab.corpus_topics_d import TOPICS_D

TOPICS: dict[str, Topic] = {t.key: t for t in TOPICS_A + TOPICS_B + TOPICS_C + TOPICS_D}
_BY_CHAPTER: dict[str, list[str]] = {c: [k for k, t in TOPICS.items() if t.chapter == c] for c in CHAPTERS}
_WORKS = ("xây lắp", "xây dựng", "lắp đặt", "cải tạo", "nạo vét", "duy tu", "tu bổ", "cấp nước")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:])")
_TYPE_WORD = {"luat": "luat", "nghi_dinh": "nghi-dinh", "thong_tu": "thong-tu", "quyet_dinh": "quyet-dinh"}


@dataclass
class Doc:
    """One legal document: identity, the context its articles speak of, and its topic keys in order."""

    index: int
    doc_type: str
    number: str
    title: str
    year: int
    self_ref: str
    sector: str
    pkg: str
    ctx: str
    scope: str
    where: str | None
    org: str
    boss: str
    refs: tuple[str, ...]
    seed: int
    source: str
    topics: list[str] = field(default_factory=list)
    facets: list[int | None] = field(default_factory=list)


@dataclass(frozen=True)
class Article:
    """One article: where it sits, its text (first line ``Điều n. Title``) and the values it states."""

    doc: Doc
    chapter: str
    number: int
    title: str
    topic: str
    text: str
    slots: dict[str, str]


def slug(text: str) -> str:
    """ASCII, hyphenated form of ``text`` for file names (đ becomes d)."""
    plain = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    ascii_text = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    return "-".join("".join(c if c.isalnum() else " " for c in ascii_text).split())


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


_REAL_ORGS = {
    "QH": ("Bộ Kế hoạch và Đầu tư", "Chính phủ"),
    "NĐ-CP": ("Bộ Kế hoạch và Đầu tư", "Thủ tướng Chính phủ"),
    "TT-BYT": ("Cục Quản lý Dược", "Bộ trưởng Bộ Y tế"),
    "TT-BTC": ("Cục Quản lý công sản", "Bộ trưởng Bộ Tài chính"),
    "QĐ-TTg": ("Bộ Tài chính", "Thủ tướng Chính phủ"),
    "TT-BKHĐT": ("Cục Quản lý đấu thầu", "Bộ trưởng Bộ Kế hoạch và Đầu tư"),
}


def _real_doc(index: int, real: RealDoc, facet_uses: dict[str, int], seed: int) -> Doc:
    suffix = real.number.rsplit("/", 1)[-1]
    org, boss = _REAL_ORGS["QH" if suffix.startswith("QH") else suffix]
    kind = slug(real.name) if real.doc_type == "luat" else _TYPE_WORD[real.doc_type]
    doc = Doc(
        index=index, doc_type=real.doc_type, number=real.number, title=real.title, year=real.year,
        self_ref=real.self_ref, sector=real.sector, pkg=real.sector_short, ctx=real.sector_short, scope="",
        where=None, org=org, boss=boss, refs=real.refs, seed=seed, source=f"{kind}-{slug(real.number)}.pdf",
    )  # fmt: skip
    for key in real.topics:  # real documents take title variants in turn, so they differ from each other
        doc.topics.append(key)
        doc.facets.append(facet_uses.get(key, 0) % len(TOPICS[key].titles))
        facet_uses[key] = facet_uses.get(key, 0) + 1
    return doc


class _Numbers:
    """Hands out document numbers that are unique across the corpus."""

    def __init__(self) -> None:
        self.used = {r.number for r in REAL_DOCS}

    def take(self, rng: random.Random, suffix: str, top: int) -> tuple[str, int]:
        for attempt in range(10_000):
            year = rng.randint(2014, 2025)
            n = rng.randint(1, top) if attempt < 50 else top + attempt
            number = f"{n:02d}/{year}/{suffix}"
            if number not in self.used:
                self.used.add(number)
                return number, year
        raise RuntimeError("document numbers exhausted")  # pragma: no cover


def _generated_doc(
    index: int, kind: str, issuer: str, sector: Sector, theme: str, seed: int, *, number: str, year: int
) -> Doc:
    """A province's decision, a ministry's circular or a government decree on ``theme`` for ``sector``."""
    pkg = f"gói thầu {sector.short}"
    if kind == "province":
        where = ("thành phố " if issuer in CITIES else "tỉnh ") + issuer
        return Doc(
            index=index, doc_type="quyet_dinh", number=number, year=year,
            title=f"Quyết định ban hành Quy định về {theme} đối với {sector.phrase} trên địa bàn {where}",
            self_ref="Quy định này", sector=sector.phrase, pkg=pkg, ctx=f"{pkg} ở {where}",
            scope=f"trên địa bàn {where}", where=where, org=f"{sector.office} {where}",
            boss=f"Ủy ban nhân dân {where}",
            refs=(f"Quyết định {number} của UBND {where}", f"quy định của UBND {where}",
                  f"Quyết định số {number} của UBND {where}", f"quy định của {where}"),
            seed=seed, source=f"quyet-dinh-{slug(number)}-{slug(issuer)}.pdf",
        )  # fmt: skip
    if kind == "ministry":
        ministry = MINISTRIES[sector.ministry]
        return Doc(
            index=index, doc_type="thong_tu", number=number, year=year,
            title=f"Thông tư quy định về {theme} đối với {sector.phrase} thuộc phạm vi quản lý của {ministry}",
            self_ref="Thông tư này", sector=sector.phrase, pkg=pkg, ctx=f"{pkg} thuộc {ministry}",
            scope=f"thuộc phạm vi quản lý của {ministry}", where=ministry, org="Vụ Kế hoạch - Tài chính",
            boss=f"Bộ trưởng {ministry}",
            refs=(f"Thông tư {number} của {ministry}", f"thông tư của {ministry} về {sector.short}"),
            seed=seed, source=f"thong-tu-{slug(number)}.pdf",
        )  # fmt: skip
    return Doc(
        index=index, doc_type="nghi_dinh", number=number, year=year,
        title=f"Nghị định quy định về {theme} đối với {sector.phrase}",
        self_ref="Nghị định này", sector=sector.phrase, pkg=pkg, ctx=pkg, scope="trên phạm vi cả nước",
        where=None, org="Bộ Kế hoạch và Đầu tư", boss="Thủ tướng Chính phủ",
        refs=(f"Nghị định {number}", f"Nghị định số {number} của Chính phủ"),
        seed=seed, source=f"nghi-dinh-{slug(number)}.pdf",
    )  # fmt: skip


_NUMBERING = {"province": ("QĐ-UBND", 150), "ministry": ("TT-{ministry}", 60), "decree": ("NĐ-CP", 260)}


def _pick_topics(doc: Doc, rng: random.Random) -> None:
    """Choose the generated document's chapters and articles (general provisions first, final last)."""
    general = ["pham_vi", "doi_tuong"] + rng.sample([k for k in _BY_CHAPTER["chung"][2:]], rng.randint(2, 4))
    middle = [c for c in CHAPTERS if c not in ("chung", "thi_hanh")]
    if not any(word in doc.sector for word in _WORKS):  # construction chapters only for works
        middle.remove("xay_dung")
    chosen = sorted(rng.sample(middle, rng.randint(3, 4)), key=list(CHAPTERS).index)
    keys = general
    for chapter in chosen:
        pool = _BY_CHAPTER[chapter]
        keys += rng.sample(pool, min(len(pool), rng.randint(4, 8)))
    keys.append("hieu_luc")
    doc.topics = keys
    doc.facets = [None] * len(keys)


def documents(seed: int) -> Iterator[Doc]:
    """All documents in corpus order: the real framework, then generated ones without end."""
    facet_uses: dict[str, int] = {}
    for i, real in enumerate(REAL_DOCS):
        yield _real_doc(i, real, facet_uses, seed)
    spec_rng = random.Random(f"ragperf-corpus-docs:{seed}")
    numbers = _Numbers()
    index = len(REAL_DOCS)
    for round_no in range(1_000_000):
        pairs = [("province", p, s) for p in PROVINCES for s in SECTORS]
        pairs += [("ministry", s.ministry, s) for s in SECTORS] + [("decree", "CP", s) for s in SECTORS]
        spec_rng.shuffle(pairs)
        for kind, issuer, sector in pairs:
            theme = THEMES[(round_no + spec_rng.randrange(len(THEMES))) % len(THEMES)]
            suffix, top = _NUMBERING[kind]
            number, year = numbers.take(spec_rng, suffix.format(ministry=sector.ministry), top)
            doc = _generated_doc(index, kind, issuer, sector, theme, seed, number=number, year=year)
            _pick_topics(doc, random.Random(f"ragperf-corpus-topics:{seed}:{index}"))
            yield doc
            index += 1


def _amount(rng: random.Random) -> str:
    return f"{rng.randint(5, 99) * 10_000_000:,}".replace(",", ".") + " đồng"


# How each number an article states is drawn.
_DRAW = {
    "pct": lambda rng: f"{rng.randint(5, 30) / 10:g}%".replace(".", ","),
    "pct2": lambda rng: f"{rng.randint(10, 30)}%",
    "days": lambda rng: str(rng.randint(3, 45)),
    "days2": lambda rng: str(rng.randint(60, 180)),
    "months": lambda rng: str(rng.randint(6, 60)),
    "count": lambda rng: str(rng.randint(2, 7)),
    "amount": _amount,
    "amount2": lambda rng: f"{rng.randint(2, 60)} tỷ đồng",
    "day": lambda rng: str(rng.randint(1, 28)),
    "month": lambda rng: str(rng.randint(1, 12)),
}


class _Values(dict):
    """An article's slot values; a number already stated is drawn afresh each further time it is used."""

    def __init__(self, values: dict[str, str], rng: random.Random) -> None:
        super().__init__(values)
        self.rng = rng
        self.stated: set[str] = set()

    def __getitem__(self, key: str) -> str:
        if key in _DRAW:
            if key in self.stated:
                return _DRAW[key](self.rng)
            self.stated.add(key)
        return super().__getitem__(key)


def _fill(template: str, values: _Values) -> str:
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(template.format_map(values).split()))


def _article(doc: Doc, chapter: str, number: int, key: str, facet: int | None, rng: random.Random) -> Article:
    topic = TOPICS[key]
    title = topic.titles[facet if facet is not None else rng.randrange(len(topic.titles))]
    slots = {
        "sector": doc.sector,
        "pkg": doc.pkg,
        "ctx": doc.ctx,
        "scope": doc.scope,
        "self": doc.self_ref,
        "org": doc.org,
        "boss": doc.boss,
        "F": title,
        "f": _lower_first(title),
        "year": str(doc.year + rng.randint(0, 1)),
    } | {name: draw(rng) for name, draw in _DRAW.items()}
    values = _Values(slots, rng)  # the first use of a number states the value questions may cite
    lines = [f"Điều {number}. {title}"]
    clauses = list(topic.clauses)
    if key not in ("pham_vi", "doi_tuong", "giai_thich", "hieu_luc"):
        clauses.insert(0, rng.choice(OPENINGS))
    clauses += rng.sample(DETAILS, rng.randint(2, 4)) + rng.sample(CLOSINGS, rng.randint(0, 2))
    for i, clause in enumerate(clauses, start=1):
        lines.append(f"{i}. {_fill(clause, values)}")
        if clause.endswith(":"):
            items = rng.sample(topic.items, rng.randint(min(3, len(topic.items)), len(topic.items)))
            lines += [f"{chr(ord('a') + j)}) {_fill(item, values)};" for j, item in enumerate(items)]
            lines[-1] = lines[-1][:-1] + "."
    text = unicodedata.normalize("NFC", "\n".join(lines))
    return Article(doc, chapter, number, title, key, text, slots)


def articles(doc: Doc) -> Iterator[Article]:
    """The articles of ``doc`` in order, each with its chapter label."""
    rng = random.Random(f"ragperf-corpus-text:{doc.seed}:{doc.index}:{doc.number}")
    chapter_no = -1
    previous = None
    for number, (key, facet) in enumerate(zip(doc.topics, doc.facets, strict=True), start=1):
        chapter = TOPICS[key].chapter
        if chapter != previous:
            chapter_no, previous = chapter_no + 1, chapter
        yield _article(doc, f"Chương {ROMAN[chapter_no]}. {CHAPTERS[chapter]}", number, key, facet, rng)
