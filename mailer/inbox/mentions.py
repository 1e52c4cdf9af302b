"""Names and companies written inside sentences, and whether each mention asks for an opt-out.

`match.extract_clues` finds names on lines of their own, after a lead-in ("Name:", "Regards,"),
after "company:" / "on behalf of", and in the From display name; this module reads the running
text too. It is pure: it makes bounded candidate keys (windows of normalised words) for the
store to look up, and says, for every key, how the text used it, so that `match.decide` can
refuse a fit that is not certain. The rules, each erring towards review:

- **Whole, not partial.** A window counts only if its neighbours end the name: punctuation, a
  line end, a title, a common word ("remove", "from", "the"...), or (when the name is written
  capitalised) a lower-case word. "Mary Jane Smith", "Jane Smith-Jones", "Jane Smith & Sons"
  and "Acme Widgets Holdings" are not "Jane Smith" or "Acme Widgets": only part of a longer
  name, so review. A name particle ("van", "de") never ends a name.
- **Asked for.** The clause holding the mention must ask for the opt-out (unsubscribe, remove,
  stop, opt out, take off, cancel, delete, "no longer", "don't want") or be nothing but the name
  and words that introduce the sender ("my name is", "I'm writing for", "regards"). "Please
  unsubscribe me. Jane Smith told me to write" does not ask for Jane Smith.
- **Nothing against it.** Review, whatever else the message says, when the sentence holding the
  mention has a negation that is not itself the request ("not", "never", "don't remove"), words
  that keep, limit or report ("still", "keep", "stay", "but", "except", "instead", "told",
  "suggested"), or a relation ("wife", "colleague", "friend"); or when the name follows a
  greeting or "to" ("Dear Jane Smith", "To: Jane Smith": whom the message is for, often our
  own staff) or a word naming someone else ("my manager Jane Smith", "a lady called"). A
  request on behalf of another person by name is for a person to check; a household member is
  opted out by their address instead.
- **Companies look like names.** Inside a sentence every word of a company is capitalised
  (inner "and", "of", "&" aside), at least one word is not a common word, and a one-word
  company counts only with its legal suffix ("Acme Ltd", not "Acme"), so everyday words are
  never read as a company.

A sentence ends at ". ! ? ;" (not after a title or an initial), a blank line or a sign-off
line ("Kind regards,"); a line break inside a sentence joins it, so a wrapped "... my wife
Jane Smith / still wants offers" is one sentence. Windows never cross punctuation or a line
break.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mailer.names import LEGAL_SUFFIXES, TITLES, fold_words

__all__ = ["Mention", "read_mentions"]

MAX_NAME_WORDS = 4
MAX_COMPANY_WORDS = 6
# Requests are short. Past this many words the rest is not read, and, since a doubt about a
# name might lie in the unread part, nothing found inside a sentence may then opt anyone out.
MAX_READ_WORDS = 1000


@dataclass(frozen=True)
class Mention:
    """One place a key is written: `doubt` is None for a fit, else why it must not count."""

    key: str
    doubt: str | None
    strong: bool  # a doubt that outweighs any fit of the same key elsewhere


def _words(*groups: str) -> frozenset[str]:
    return frozenset(word for group in groups for word in group.split())


# Words that ask for the opt-out.
_CUES = _words("""unsubscribe unsubscribed unsubscribing remove removed removing removal delete
    deleted stop stopped cancel cancelled canceled opt opted off withdraw erase""")
# After a negation these words make it the request ("no longer", "don't want", "not interested").
_NEGATED_REQUEST = _words("""longer more interested want wants wish wishes need like send email
    contact mail call text receive""")
# A cue after such a negation turns it round again: "no longer wants to stop".
_REVERSING = _words("unsubscribe remove stop opt cancel delete lose miss")
_NEGATIONS = _words("""not no never nor neither none nobody without dont doesnt didnt wont cant
    cannot isnt arent wasnt werent shouldnt wouldnt havent hasnt""")
# Words that keep, limit, contrast or report: a sentence holding one is not a plain request.
_AGAINST = _words("""still keep keeps keeping kept continue continues continuing stay stays
    staying remain remains but except excluding exclude apart rather instead however although
    though unless else other others told tell tells said says say asked suggested suggests advised
    recommended mentioned referred wrong mistake mistaken""")
# Words before a name that make it someone other than the sender.
# People close to the sender: named anywhere in the sentence, the request may be for them.
_RELATIONS = _words("""colleague colleagues coworker wife husband partner friend son daughter
    mother father mum mom dad brother sister neighbour neighbor tenant landlord flatmate
    housemate spouse child parent grandmother grandfather aunt uncle cousin fiance fiancee
    girlfriend boyfriend relative named called""")
# Words before a name that make it someone other than the sender.
_SOMEONE_ELSE = _RELATIONS | _words("boss manager director assistant secretary client employee")
# Words that make the name after them the one the message is addressed to (our own staff).
_GREETINGS = _words("""dear hi hello hey hiya attn attention fao morning afternoon evening to cc
    bcc""")
# Words that may surround the sender's own name in a clause that is only that name.
_INTRODUCING = _words("""name names full account holder my is i im am this we were are regards
    kind best warm warmest thanks thank you many cheers wishes sincerely yours faithfully truly
    from company for on behalf of writing signed customer re regarding concerning ref here the
    at""")
# Common words: as a neighbour they end a name; a window of nothing else is no name.
_COMMON = (
    _CUES
    | _NEGATED_REQUEST
    | _NEGATIONS
    | _AGAINST
    | _SOMEONE_ELSE
    | _GREETINGS
    | _INTRODUCING
    | _words("""me mine us our ours your he him his she her hers they them their it its that
    these those a an some any all every each both and or so to in by with about as into onto
    out up down over than then if because since while until via per is was be been being has
    have had do does did will would could can should shall may might must please pls kindly
    take taken wanted wished likes receiving get getting sending sent emails emailing
    contacting mailing mails write asked ask asks there also too again now anymore list lists
    offers offer special marketing promotions promotional newsletter newsletters messages
    message texts updates database details address just who which what when where why how
    one ive id ill youre hes shes theyre thats ok okay yes sorry""")
)
# Never the end of a name, even in lower case.
_PARTICLES = _words("van von de der den du da di del della la le ter ten bin ibn al el y st")
# Inner words a capitalised company may hold in lower case.
_CONNECTORS = _words("and of the de du la le van von der den y et und for in on at")
# After "and"/"&", these make "Jane Smith and Sons" a company rather than a person.
_FIRM_WORDS = _words("""son sons daughter daughters partners partner associates brothers bros
    company family group holdings""")

_SIGN_OFF = re.compile(
    r"""^(?:(?:kind|best|warm|warmest|many)\s+)?(?:regards|thanks|thank\s+you|cheers|wishes
        |best\s+wishes|best|sincerely|yours\s+(?:sincerely|faithfully|truly))\s*[,.!]*\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCE_END = re.compile(r"[.!?;]+$")
_CLAUSE_END = re.compile(r"[,:()\[\]{}\"“”«»/–—-]+$")
_CLAUSE_START = re.compile(r"^[(\[{\"“«/–—-]")
_EDGE = re.compile(r"^\W+|\W+$")


@dataclass(slots=True)
class _Word:
    key: str
    capital: bool
    glued: bool  # written joined to the word before ("Smith-Jones")
    line: int
    joins: bool  # nothing but spaces between it and the word before, on the same line
    sentence: int
    clause: int
    ampersand: bool = False


def _scan(lines: list[str | None], kind: str) -> tuple[list[_Word], bool]:
    """The words of the text for one kind of key (None in `lines` is a blank line), and
    whether the text went on past `MAX_READ_WORDS`."""
    out: list[_Word] = []
    sentence = clause = 0
    for number, line in enumerate(lines):
        if len(out) >= MAX_READ_WORDS:
            return out[:MAX_READ_WORDS], True
        if line is None:
            sentence, clause = sentence + 1, clause + 1
            continue
        if _SIGN_OFF.match(line):
            # A sign-off ends what came before and starts the signature after it.
            sentence, clause = sentence + 1, clause + 1
        joins = False
        for token in line.split():
            core = _EDGE.sub("", token)
            if _CLAUSE_START.match(token):
                clause, joins = clause + 1, False
            ampersand = token == "&"
            if kind == "company":  # as normalise_company reads it
                folded = fold_words(core.replace("&", " and ")) or (["and"] if ampersand else [])
            else:
                folded = ["and"] if ampersand else fold_words(core)
            is_title = len(folded) == 1 and folded[0] in TITLES
            if is_title and kind == "name":
                folded, joins = [], False
            for index, key in enumerate(folded):
                capital = core[:1].isupper() or core[:1].isdigit() or ampersand
                out.append(
                    _Word(key, capital, index > 0, number, joins, sentence, clause, ampersand)
                )
                joins = True
            if not folded:
                joins = False
            closed = token.rstrip("\"'”’)]}")
            # "Dr." and "J." end no sentence.
            if _SENTENCE_END.search(closed) and not is_title and len(core) > 1:
                sentence, clause, joins = sentence + 1, clause + 1, False
            elif _CLAUSE_END.search(token) or _SENTENCE_END.search(token):
                clause, joins = clause + 1, False
    return out[:MAX_READ_WORDS], len(out) > MAX_READ_WORDS


def _windows(words: list[_Word], kind: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, key) for each candidate window, end exclusive."""
    most = MAX_NAME_WORDS if kind == "name" else MAX_COMPANY_WORDS
    least = 2 if kind == "name" else 1
    for start in range(len(words)):
        for end in range(start + least, min(start + most, len(words)) + 1):
            if not words[end - 1].joins and end - 1 > start:
                break
            window = words[start:end]
            if not _could_be_a_name(window, kind):
                continue
            if kind == "name":
                if any(w.ampersand for w in window):
                    break
                yield start, end, " ".join(w.key for w in window)
                continue
            if not _company_shape(window):
                continue
            keys = [w.key for w in window]
            while len(keys) > 1 and keys[-1] in LEGAL_SUFFIXES:
                keys.pop()
            if len(keys) == 1 and len(window) == 1:
                continue  # one bare word ("Acme") is too weak a sign of a company
            yield start, end, " ".join(keys)


def _could_be_a_name(window: list[_Word], kind: str) -> bool:
    """Common words do not begin or end a name ("The" may begin a company), nor sit inside one
    in lower case (bar a company's "and", "of"...), so "please remove jane smith" gives "jane
    smith" and not "remove jane"."""
    first, last = window[0].key, window[-1].key
    if (first in _COMMON and not (kind == "company" and first == "the")) or last in _COMMON:
        return False
    inner = _CONNECTORS if kind == "company" else frozenset()  # "Marks and Spencer"
    return not any(w.key in _COMMON and not w.capital and w.key not in inner for w in window)


def _company_shape(window: list[_Word]) -> bool:
    # A legal suffix may be written in lower case ("plc") and end the name.
    if not window[0].capital or window[0].ampersand or window[-1].ampersand:
        return False
    if not (window[-1].capital or window[-1].key in LEGAL_SUFFIXES):
        return False
    return all(w.capital or w.key in _CONNECTORS or w.key in LEGAL_SUFFIXES for w in window)


def _ends_name(words: list[_Word], index: int, inner: _Word, kind: str, right: bool) -> bool:
    """Whether the word at `index` (a neighbour of the window) ends the name there."""
    if index < 0 or index >= len(words):
        return True
    word = words[index]
    outer = word if right else inner
    if not outer.joins:
        return True
    if outer.glued or word.ampersand or word.key in _PARTICLES:
        return False
    if right and word.key in LEGAL_SUFFIXES:  # "Jane Smith Ltd" is a company
        return False
    following = words[index + 1] if right and index + 1 < len(words) else None
    if word.key == "and" and following and following.joins and following.key in _FIRM_WORDS:
        return False
    return word.key in _COMMON or (inner.capital and not word.capital)


@dataclass(frozen=True)
class _Sentence:
    against: str | None  # why nothing in it may count, if anything
    asking: frozenset[int]  # clauses holding a cue or a negated request


def _sentences(words: list[_Word]) -> dict[int, _Sentence]:
    groups: dict[int, list[_Word]] = {}
    for word in words:
        groups.setdefault(word.sentence, []).append(word)
    return {number: _read_sentence(group) for number, group in groups.items()}


def _read_sentence(words: list[_Word]) -> _Sentence:
    asking: set[int] = set()
    for position, word in enumerate(words):
        if word.key in _RELATIONS:
            return _Sentence(f"is in a sentence about someone else ('{word.key}')", frozenset())
        if word.key in _AGAINST:
            return _Sentence(
                f"is in a sentence that keeps, limits or reports ('{word.key}')", frozenset()
            )
        if word.key in _CUES:
            asking.add(word.clause)
        elif word.key in _NEGATIONS:
            after = words[position + 1 : position + 2]
            rest = {w.key for w in words[position + 2 :] if w.clause == word.clause}
            if not after or after[0].key not in _NEGATED_REQUEST or rest & _REVERSING:
                return _Sentence(f"is in a sentence with a negation ('{word.key}')", frozenset())
            asking.add(word.clause)
    return _Sentence(None, frozenset(asking))


def _judge(
    words: list[_Word],
    start: int,
    end: int,
    kind: str,
    sentence: _Sentence,
    strangers: int,
) -> tuple[str | None, bool]:
    """(doubt, strong) for the window words[start:end]; `strangers` counts the words of its
    clause that do not introduce a sender."""
    first, last = words[start], words[end - 1]
    if not _ends_name(words, start - 1, first, kind, right=False) or not _ends_name(
        words, end, last, kind, right=True
    ):
        return "is only part of a longer name in the message", False
    before = words[start - 1] if start > 0 and words[start - 1].line == first.line else None
    if before is not None and before.key in _GREETINGS:
        return f"follows '{before.key}': it names whom the message is addressed to", True
    if before is not None and before.key in _SOMEONE_ELSE:
        return f"is mentioned as someone else ('{before.key}')", True
    if sentence.against is not None:
        return sentence.against, True
    if first.clause in sentence.asking:
        return None, False
    window_strangers = sum(w.key not in _INTRODUCING for w in words[start:end])
    if strangers == window_strangers:  # the clause is the name and words introducing it
        return None, False
    return "is mentioned without asking to opt them out", False


def read_mentions(lines: list[str | None], kind: str) -> Iterator[Mention]:
    """Every candidate key written in `lines` (None marks a blank line) for `kind` ("name" or
    "company"), in order of the text, with how it is used."""
    words, cut = _scan(lines, kind)
    sentences = _sentences(words)
    strangers: dict[int, int] = {}
    for word in words:
        strangers[word.clause] = strangers.get(word.clause, 0) + (word.key not in _INTRODUCING)
    for start, end, key in _windows(words, kind):
        first = words[start]
        doubt, strong = _judge(
            words, start, end, kind, sentences[first.sentence], strangers[first.clause]
        )
        if cut and not strong:
            doubt = "is in a message too long to read whole"
        yield Mention(key, doubt, strong)
