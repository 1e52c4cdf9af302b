"""Properties of matching inside sentences that hold for any text: no customer's name, no
opt-out; a name quoted from another message, or given as someone else's, never opts them out."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.inbox.body import ParsedMessage, own_text
from mailer.inbox.headers import parse_headers
from mailer.inbox.match import Decision, Lookup, decide, extract_clues
from mailer.names import normalise_company, normalise_name

OWN = frozenset({"offers@telecom.example"})

modest = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (name, company) of each customer, ids from 1.
CUSTOMERS = (
    ("Jane Smith", "Acme Widgets Ltd"),
    ("Jane Doe", "Brontë & Söhne GmbH"),
    ("John O'Neill", "Hall Holdings plc"),
    ("Mary Jane Bloggs", ""),
)
NAME_WORDS = tuple(normalise_name(name).split() for name, _ in CUSTOMERS)
COMPANY_WORDS = tuple(normalise_company(c).split() for _, c in CUSTOMERS if c)
# How the parts of those names may be written.
SPELLINGS = {
    "jane": "Jane", "smith": "Smith", "doe": "Doe", "john": "John", "oneill": "O'Neill",
    "mary": "Mary", "bloggs": "Bloggs", "acme": "Acme", "widgets": "Widgets",
    "bronte": "Brontë", "sohne": "Söhne", "hall": "Hall", "holdings": "Holdings",
}  # fmt: skip
# Words and marks around names in requests, including every word the rules turn on.
OTHER_WORDS = (
    "please", "remove", "unsubscribe", "stop", "opt", "out", "off", "take", "me", "us", "my",
    "our", "name", "is", "I'm", "writing", "for", "on", "behalf", "of", "from", "the", "your",
    "list", "lists", "offers", "no", "longer", "wishes", "don't", "want", "not", "still",
    "keep", "but", "colleague", "wife", "told", "Dear", "Hi", "Regards", "Thanks", "and", "&",
    "Ltd", "plc", "GmbH", "Sons", "Mr", "Dr.", "Ms", ",", ".", ";", ":", "-", "(", ")", "?",
    "\n", "\n\n", "> ", "--",
)  # fmt: skip
CASINGS = (str, str.lower, str.upper, str.title)
# Filler that holds no letters, so it cannot spell a name by chance.
filler = st.text(
    alphabet=st.characters(blacklist_categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Cs")),
    max_size=6,
)


def lookup_for(names: tuple[str, ...], companies: tuple[str, ...]) -> Lookup:
    """What the store answers for these keys, given CUSTOMERS."""
    by_name: dict[str, tuple[int, ...]] = {}
    by_company: dict[str, tuple[int, ...]] = {}
    for number, (name, company) in enumerate(CUSTOMERS, start=1):
        if normalise_name(name) in names:
            by_name[normalise_name(name)] = (*by_name.get(normalise_name(name), ()), number)
        if company and normalise_company(company) in companies:
            key = normalise_company(company)
            by_company[key] = (*by_company.get(key, ()), number)
    return Lookup({}, by_name, by_company)


def decided(text: str) -> Decision:
    headers = parse_headers(b"From: stranger@unknown.example\r\n\r\n")
    clues = extract_clues(ParsedMessage(headers, own_text(text)), own_addresses=OWN)
    return decide(clues, lookup_for(clues.name_keys, clues.company_keys))


@st.composite
def texts_without_a_customer_name(draw: st.DrawFn) -> str:
    """Requests built of customers' first names, surnames and company words, but never every
    word of any one customer's name or company, with request words, titles and punctuation
    between them in any case."""
    missing = {draw(st.sampled_from(words)) for words in (*NAME_WORDS, *COMPANY_WORDS)}
    parts = [SPELLINGS[word] for word in SPELLINGS if word not in missing]
    token = st.one_of(st.sampled_from(parts + list(OTHER_WORDS)), filler)
    tokens = draw(st.lists(st.tuples(token, st.sampled_from(CASINGS)), max_size=40))
    joints = draw(st.lists(st.sampled_from([" ", " ", "\n", ""]), min_size=len(tokens),
                           max_size=len(tokens)))
    pairs = zip(tokens, joints, strict=True)
    return "".join(casing(word) + joint for (word, casing), joint in pairs)


@modest
@given(texts_without_a_customer_name())
def test_text_that_names_no_customer_never_opts_anyone_out(text: str) -> None:
    assert decided(text).customer_ids == ()


@modest
@given(texts_without_a_customer_name(), st.sampled_from(CUSTOMERS), st.sampled_from(CASINGS))
def test_a_customer_named_only_in_quoted_lines_is_never_opted_out(
    text: str, customer: tuple[str, str], casing: type[str]
) -> None:
    quoted = f"\n> Please remove {casing(customer[0])} from your list\n> {customer[0]}\n"
    assert decided(text + quoted).customer_ids == ()


@modest
@given(
    texts_without_a_customer_name(),
    st.sampled_from(range(len(CUSTOMERS))),
    st.sampled_from(["my colleague", "my wife", "Dear", "not", "please keep"]),
    texts_without_a_customer_name(),
)
def test_a_customer_named_as_someone_else_or_against_the_request_is_never_opted_out(
    before: str, index: int, lead: str, after: str
) -> None:
    name = CUSTOMERS[index][0]
    decision = decided(f"{before}\nPlease unsubscribe me, {lead} {name} {after}")
    assert index + 1 not in decision.customer_ids
