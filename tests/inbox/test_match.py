"""Matching a request to customers: clues from the message, then a decision on the lookup."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mailer.inbox.body import ParsedMessage, parse_message
from mailer.inbox.headers import Headers
from mailer.inbox.match import Clues, Decision, Lookup, decide, extract_clues
from mailer.names import normalise_company, normalise_name

OWN = frozenset({"offers@telecom.example"})


def parsed(
    own_text: str, *, from_address: str | None = "jo@example.org", from_name: str = ""
) -> ParsedMessage:
    headers = Headers(
        message_id="<1@example.org>",
        subject="Unsubscribe special offers",
        from_address=from_address,
        from_name=from_name,
        auto_submitted=None,
        precedence=None,
        has_autoreply_header=False,
        content_type="text/plain",
        references=(),
    )
    return ParsedMessage(headers=headers, own_text=own_text)


def clues(
    from_address: str | None = None,
    body_addresses: tuple[str, ...] = (),
    name_keys: tuple[str, ...] = (),
    company_keys: tuple[str, ...] = (),
    name_doubts: Mapping[str, str] | None = None,
    company_doubts: Mapping[str, str] | None = None,
) -> Clues:
    return Clues(
        from_address, body_addresses, name_keys, company_keys, name_doubts or {},
        company_doubts or {},
    )


def lookup(
    by_address: Mapping[str, int] | None = None,
    by_name: Mapping[str, tuple[int, ...]] | None = None,
    by_company: Mapping[str, tuple[int, ...]] | None = None,
) -> Lookup:
    return Lookup(by_address or {}, by_name or {}, by_company or {})


# --- extracting clues ----------------------------------------------------------------------


def test_from_address_is_a_clue() -> None:
    assert extract_clues(parsed(""), own_addresses=OWN).from_address == "jo@example.org"


def test_addresses_in_the_text_are_lower_cased_deduplicated_and_in_order() -> None:
    text = "Please remove Partner@Example.ORG, and kid@example.co.uk.\nAgain: partner@example.org"
    found = extract_clues(parsed(text), own_addresses=OWN).body_addresses
    assert found == ("partner@example.org", "kid@example.co.uk")


def test_mailto_links_and_angle_brackets_give_addresses() -> None:
    text = "mailto:jo.bloggs+news@example.org?subject=stop and <other_one@mail.example.com>"
    found = extract_clues(parsed(text), own_addresses=OWN).body_addresses
    assert found == ("jo.bloggs+news@example.org", "other_one@mail.example.com")


def test_our_own_addresses_in_the_text_are_not_clues() -> None:
    text = "I got this at offers@telecom.example; my address is jo@example.org"
    assert extract_clues(parsed(text), own_addresses=OWN).body_addresses == ("jo@example.org",)


def test_quoted_reply_text_is_not_searched_for_addresses() -> None:
    raw = (
        b"From: Jo <jo@example.org>\r\nSubject: Re: Unsubscribe special offers\r\n\r\n"
        b"Please stop.\r\n\r\nOn Mon, 1 Jan 2024, Offers wrote:\r\n"
        b"> Dear someone@example.net, our offers...\r\n"
    )
    message = parse_message(raw, max_bytes=1_000_000)
    assert extract_clues(message, own_addresses=OWN).body_addresses == ()


def test_from_display_name_is_a_name_key() -> None:
    found = extract_clues(parsed("", from_name="BLOGGS, Jo"), own_addresses=OWN)
    assert found.name_keys == ("jo bloggs",)


def test_display_name_that_is_an_address_is_not_a_name_key() -> None:
    found = extract_clues(parsed("", from_name="jo.bloggs@example.org"), own_addresses=OWN)
    assert found.name_keys == ()


def test_name_lines_give_keys_without_their_lead_in() -> None:
    text = "Hi,\nPlease unsubscribe me.\nName: Dr. José Smith\nKind regards,\nAlice Jones"
    keys = extract_clues(parsed(text), own_addresses=OWN).name_keys
    assert "jose smith" in keys
    assert "alice jones" in keys
    assert all(len(key.split()) >= 2 for key in keys)


def test_names_inside_sentences_are_found_by_windows() -> None:
    text = "Thanks, my name is Jo Bloggs and my wife Ann Marie Bloggs also wants to stop."
    keys = extract_clues(parsed(text), own_addresses=OWN).name_keys
    assert "jo bloggs" in keys
    assert "ann marie bloggs" in keys


def test_every_name_key_is_already_normalised() -> None:
    text = "I am Mr Jo-Ann O'Neil, of 1 High St.\nSMITH, John"
    keys = extract_clues(parsed(text, from_name="Dr Zoë Ng"), own_addresses=OWN).name_keys
    assert keys
    assert all(normalise_name(key) == key for key in keys)
    assert "john smith" in keys


def test_name_keys_are_capped() -> None:
    text = "\n".join(f"word{i} alpha{i} beta{i} gamma{i} delta{i}" for i in range(500))
    keys = extract_clues(parsed(text), own_addresses=OWN).name_keys
    assert 0 < len(keys) <= 200


def test_company_lines_and_lead_ins_give_company_keys() -> None:
    text = (
        "Hello\nPlease remove us, writing on behalf of Acme Widgets Ltd., thanks\n"
        "Company: Bloggs & Sons Limited\nNorthwind Traders PLC"
    )
    keys = extract_clues(parsed(text), own_addresses=OWN).company_keys
    assert "acme widgets" in keys
    assert "bloggs and sons" in keys
    assert "northwind traders" in keys
    assert "hello" not in keys
    assert all(normalise_company(key) == key for key in keys)


def test_long_lines_are_not_company_keys() -> None:
    text = "please could you take me off every single one of your lists"
    assert extract_clues(parsed(text), own_addresses=OWN).company_keys == ()


# --- deciding ------------------------------------------------------------------------------


def test_known_from_address_is_honoured() -> None:
    decision = decide(clues("jo@example.org"), lookup({"jo@example.org": 7}))
    assert (decision.customer_ids, decision.method, decision.review_reason) == (
        (7,),
        "from_address",
        None,
    )


def test_household_naming_two_addresses_gets_both() -> None:
    decision = decide(
        clues("jo@example.org", ("ann@example.org", "unknown@example.org")),
        lookup({"jo@example.org": 9, "ann@example.org": 3}),
    )
    assert (decision.customer_ids, decision.method) == ((3, 9), "from_address")


def test_unknown_sender_with_known_body_address_is_honoured_by_body_address() -> None:
    decision = decide(
        clues("new@example.org", ("old@example.org",), ("jo bloggs",)),
        lookup({"old@example.org": 4}, {"jo bloggs": (5,)}),
    )
    assert (decision.customer_ids, decision.method) == ((4,), "body_address")


def test_addresses_win_over_names() -> None:
    decision = decide(
        clues("jo@example.org", (), ("john smith",)),
        lookup({"jo@example.org": 1}, {"john smith": (2, 3)}),
    )
    assert decision.customer_ids == (1,)


def test_unique_name_is_honoured_when_no_address_matches() -> None:
    decision = decide(
        clues("new@example.org", (), ("jo bloggs",)), lookup(by_name={"jo bloggs": (8,)})
    )
    assert (decision.customer_ids, decision.method, decision.review_reason) == ((8,), "name", None)


def test_name_matching_two_customers_goes_to_review() -> None:
    decision = decide(
        clues(None, (), ("jo bloggs", "john smith")),
        lookup(by_name={"jo bloggs": (8,), "john smith": (3, 2)}),
    )
    assert decision.customer_ids == ()
    assert decision.review_reason == "name 'john smith' matches 2 customers"


def test_two_unique_names_are_both_honoured() -> None:
    decision = decide(
        clues(None, (), ("jo bloggs", "ann bloggs")),
        lookup(by_name={"jo bloggs": (8,), "ann bloggs": (2,)}),
    )
    assert decision.customer_ids == (2, 8)


def test_shorter_name_inside_a_matched_longer_name_is_set_aside() -> None:
    decision = decide(
        clues(None, (), ("mary jane smith", "mary jane", "jane smith")),
        lookup(by_name={"mary jane smith": (1,), "jane smith": (2, 3)}),
    )
    assert (decision.customer_ids, decision.review_reason) == ((1,), None)


def test_unique_company_is_honoured_when_no_name_matches() -> None:
    decision = decide(
        clues(None, (), ("jo bloggs",), ("acme widgets",)),
        lookup(by_company={"acme widgets": (11,)}),
    )
    assert (decision.customer_ids, decision.method) == ((11,), "company")


def test_company_matching_several_customers_goes_to_review() -> None:
    decision = decide(
        clues(None, (), (), ("acme widgets",)), lookup(by_company={"acme widgets": (1, 2, 3)})
    )
    assert decision.customer_ids == ()
    assert decision.review_reason == "company 'acme widgets' matches 3 customers"


def test_duplicate_ids_for_a_key_count_once() -> None:
    decision = decide(clues(None, (), ("jo bloggs",)), lookup(by_name={"jo bloggs": (5, 5)}))
    assert decision.customer_ids == (5,)


def test_request_from_unknown_sender_naming_no_one_goes_to_review() -> None:
    decision = decide(clues("new@example.org", (), ("jo bloggs",), ("acme",)), lookup())
    assert decision.customer_ids == ()
    assert decision.method == "none"
    assert decision.review_reason == "no customer matches the sender, addresses or names"


def test_request_without_any_clue_goes_to_review() -> None:
    assert decide(clues(), lookup()).method == "none"


def test_clues_from_a_real_message_decide_end_to_end() -> None:
    text = "Please unsubscribe me and my husband.\nRegards,\nAnn Bloggs\nhis email: jo@example.org"
    found = extract_clues(parsed(text, from_address="ann.new@example.org"), own_addresses=OWN)
    by_address = {"jo@example.org": 20}
    by_name = {"ann bloggs": (21,)}
    decision = decide(found, lookup(by_address, by_name))
    # Addresses are the most certain clue, so the name is not consulted.
    assert (decision.customer_ids, decision.method) == ((20,), "body_address")


# --- names and companies inside sentences --------------------------------------------------

# (name, company) of each customer, ids from 1; the lookup below answers as the store would.
CUSTOMERS = (
    ("Jane Smith", ""),
    ("Jane Doe", ""),
    ("John O'Neill", ""),
    ("Ann Lee", "Acme Widgets Ltd"),
    ("Bob Roe", "Brontë & Söhne GmbH"),
    ("Cy Tan", "Acme"),
    ("Di Hu", "Special Offers Ltd"),
    ("John Smith", ""),
    ("John Smith", ""),
    ("Mary Jane Bloggs", "Hall Holdings plc"),
    ("Eli Ng", "Marks & Spencer plc"),
)  # fmt: skip
JANE_SMITH, JANE_DOE, JOHN_ONEILL, ANN_LEE, BOB_ROE, CY_TAN, DI_HU = range(1, 8)
MARY_JANE_BLOGGS, ELI_NG = 10, 11


def decided(text: str, *, from_name: str = "") -> Decision:
    """Extract clues from `text` (sent from an unknown address) and decide on them."""
    found = extract_clues(
        parsed(text, from_address="stranger@unknown.example", from_name=from_name),
        own_addresses=OWN,
    )
    by_name: dict[str, tuple[int, ...]] = {}
    by_company: dict[str, tuple[int, ...]] = {}
    for number, (name, company) in enumerate(CUSTOMERS, start=1):
        if normalise_name(name) in found.name_keys:
            by_name[normalise_name(name)] = (*by_name.get(normalise_name(name), ()), number)
        if company and normalise_company(company) in found.company_keys:
            key = normalise_company(company)
            by_company[key] = (*by_company.get(key, ()), number)
    return decide(found, lookup(by_name=by_name, by_company=by_company))


@pytest.mark.parametrize(
    ("text", "customer", "method"),
    [
        ("please take Acme Widgets Ltd off your mailing lists", ANN_LEE, "company"),
        ("Jane Smith no longer wishes to receive offers", JANE_SMITH, "name"),
        ("I'm writing for Brontë & Söhne Ltd, please unsubscribe us", BOB_ROE, "company"),
        ("Could you remove Mr John O'Neill from your list?", JOHN_ONEILL, "name"),
        ("please remove jane smith from your list", JANE_SMITH, "name"),
        ("PLEASE REMOVE JANE SMITH FROM YOUR LIST", JANE_SMITH, "name"),
        ("Hi,\nmy name is Jane Doe and I want to opt out.\nThanks", JANE_DOE, "name"),
        ("Please take Acme Ltd off your list.", CY_TAN, "company"),
        ("Please unsubscribe me, I don't want any more offers\nJane Smith", JANE_SMITH, "name"),
        ("Hello,\nplease unsubscribe me.\n\nThanks for your help\nJane Doe", JANE_DOE, "name"),
        ("Mary Jane Bloggs, please remove me", MARY_JANE_BLOGGS, "name"),
        ("Please remove Hall Holdings plc from your list", MARY_JANE_BLOGGS, "company"),
        ("We at Marks and Spencer no longer want offers", ELI_NG, "company"),
        ("Please remove me and my husband\nKind regards,\nJane Smith", JANE_SMITH, "name"),
    ],
)
def test_a_customer_named_inside_a_request_sentence_is_honoured(
    text: str, customer: int, method: str
) -> None:
    decision = decided(text)
    assert (decision.customer_ids, decision.method, decision.review_reason) == (
        (customer,), method, None)


def test_two_customers_named_in_one_request_are_both_honoured() -> None:
    decision = decided("Please remove Jane Smith and Jane Doe from your lists.")
    assert (decision.customer_ids, decision.review_reason) == ((JANE_SMITH, JANE_DOE), None)


def test_a_longer_company_that_is_a_customer_wins_over_the_shorter_one_inside_it() -> None:
    # "Acme" (Cy Tan) is inside "Acme Widgets" (Ann Lee); the message names the longer one.
    assert decided("Please remove Acme Widgets Ltd. from your list").customer_ids == (ANN_LEE,)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # Partial fits: a first name or surname alone, or a customer inside a longer name.
        ("Please remove Jane from your list", "no customer matches"),
        ("Please remove Smith from your list", "no customer matches"),
        ("Please remove Mary Jane Smith from your list", "only part of a longer name"),
        ("Please remove Jane Smith-Jones from the list", "only part of a longer name"),
        ("Please remove Acme Widgets Holdings from your list", "only part of a longer name"),
        ("Jane Smith & Sons Ltd, please unsubscribe us", "only part of a longer name"),
        ("Please unsubscribe Jane Smith and Sons", "only part of a longer name"),
        ("please remove jane smith ltd", "only part of a longer name"),
        # A company is a proper name with more than one bare word, not everyday words.
        ("Please remove Acme from your list", "no customer matches"),
        ("please stop sending special offers", "no customer matches"),
        ("Please Stop Sending Special Offers", "no customer matches"),
        # A name shared by two customers.
        ("Please remove John Smith from your list", "matches 2 customers"),
        # Someone else's name, a greeting, or a sentence against the opt-out.
        ("my colleague Jane Smith still wants offers", "someone else ('colleague')"),
        ("Please unsubscribe me. My colleague Jane Smith still wants offers.", "someone else"),
        ("Please unsubscribe me as my colleague Jane Smith suggested", "someone else"),
        ("Please unsubscribe me. Jane Smith told me to write.", "reports ('told')"),
        ("Please unsubscribe me, not Jane Smith", "negation ('not')"),
        ("Please do not remove Jane Smith", "negation ('not')"),
        ("Jane Smith doesn't want to stop receiving offers", "negation ('doesnt')"),
        ("Please remove Jane Smith but keep Jane Doe", "keeps, limits or reports ('but')"),
        ("Please unsubscribe me; Jane Smith\nstill wants offers", "keeps, limits or reports"),
        ("Dear Jane Smith, please unsubscribe me", "follows 'dear'"),
        ("Please unsubscribe me.\nTo: Jane Smith", "follows 'to'"),
        ("Please remove Jane Smith, my wife, from your list", "about someone else ('wife')"),
        # Unsigned, the name may be the husband's: the lines are read as one sentence.
        ("Please remove me and my husband\nJane Smith", "about someone else ('husband')"),
        ("This email was meant for Jane Smith.", "without asking to opt them out"),
        ("Please unsubscribe Jane Doe. Jane Smith is my manager.", "without asking"),
    ],
)
def test_a_near_miss_inside_a_sentence_goes_to_review_and_opts_out_no_one(
    text: str, reason: str
) -> None:
    decision = decided(text)
    assert decision.customer_ids == ()
    assert decision.review_reason is not None
    assert reason in decision.review_reason


def test_a_doubt_in_a_sentence_outweighs_the_same_name_on_a_line_of_its_own() -> None:
    decision = decided("Name: Jane Smith\nActually my wife Jane Smith still wants offers.")
    assert decision.customer_ids == ()


def test_a_doubt_in_a_sentence_outweighs_the_senders_display_name() -> None:
    decision = decided("Do not unsubscribe Jane Smith.", from_name="Jane Smith")
    assert decision.customer_ids == ()


def test_a_name_signed_on_its_own_line_stands_though_a_sentence_mentions_it_without_asking(
) -> None:
    decision = decided("Please unsubscribe me.\nThis is from Jane Smith's tablet\nJane Smith")
    assert decision.customer_ids == (JANE_SMITH,)


@pytest.mark.parametrize(
    "raw",
    [
        b"Please stop.\r\n\r\nOn Mon, 1 Jan 2024, Offers wrote:\r\n"
        b"> Please remove Jane Smith from your list\r\n",
        b"Please stop.\r\n\r\n---------- Forwarded message ---------\r\n"
        b"From: Jane Smith <js@elsewhere.example>\r\n\r\nPlease remove Jane Smith\r\n",
        b"Please stop.\r\n\r\n-----Original Message-----\r\nFrom: Offers\r\n"
        b"Kind regards,\r\nJane Smith, Customer Services\r\n",
        b"Please stop.\r\n-- \r\nJane Smith\r\nCustomer Services, Imperial Telecom\r\n",
    ],
    ids=["quoted reply", "forwarded message", "our staff's signature", "signature"],
)
def test_a_name_only_in_quoted_forwarded_or_signature_text_matches_no_one(raw: bytes) -> None:
    message = parse_message(
        b"From: stranger@unknown.example\r\nSubject: Re: Unsubscribe special offers\r\n\r\n"
        + raw,
        max_bytes=1_000_000,
    )
    found = extract_clues(message, own_addresses=OWN)
    assert "jane smith" not in found.name_keys
    assert decide(found, lookup(by_name={"jane smith": (JANE_SMITH,)})).customer_ids == ()


def test_company_keys_inside_sentences_are_capitalised_names_without_their_suffix() -> None:
    text = "I'm writing for Brontë & Söhne Ltd, please take Acme off the list of acme widgets"
    keys = extract_clues(parsed(text), own_addresses=OWN).company_keys
    assert "bronte and sohne" in keys
    # A bare one-word name and words in lower case are not read as a company.
    assert "acme" not in keys
    assert "acme widgets" not in keys


def test_a_long_message_keeps_its_keys_bounded_and_in_doubt_past_what_is_read() -> None:
    filler = "\n".join(" ".join(f"Word{i}x{j}" for j in range(40)) for i in range(300))
    found = extract_clues(parsed(filler + "\nPlease remove Jane Smith"), own_addresses=OWN)
    assert len(found.name_keys) <= 200
    assert len(found.company_keys) <= 100
    assert set(found.name_doubts) <= set(found.name_keys)
    # The sentence is past the words read: the key is not even looked up.
    assert "jane smith" not in found.name_keys


def test_a_key_found_only_inside_a_message_too_long_to_read_whole_is_in_doubt() -> None:
    text = "Please remove Jane Smith from your list.\n" + "And so on and so on and on.\n" * 199
    found = extract_clues(parsed(text), own_addresses=OWN)
    assert found.name_doubts["jane smith"] == "is in a message too long to read whole"


def test_a_doubtful_key_that_fits_a_customer_goes_to_review_with_the_doubt() -> None:
    decision = decide(
        clues(None, (), ("jane smith",), name_doubts={"jane smith": "is mentioned as X"}),
        lookup(by_name={"jane smith": (4,)}),
    )
    assert (decision.customer_ids, decision.method, decision.review_reason) == (
        (), "name", "name 'jane smith' is mentioned as X")


def test_a_doubt_on_a_key_that_fits_no_one_changes_nothing() -> None:
    decision = decide(
        clues(None, (), ("jo bloggs", "jane smith"), name_doubts={"jane smith": "is partial"}),
        lookup(by_name={"jo bloggs": (8,)}),
    )
    assert (decision.customer_ids, decision.review_reason) == ((8,), None)


def test_a_doubt_on_a_key_set_aside_inside_a_longer_matched_key_changes_nothing() -> None:
    decision = decide(
        clues(None, (), ("mary jane smith", "jane smith"),
              name_doubts={"jane smith": "is only part of a longer name in the message"}),
        lookup(by_name={"mary jane smith": (1,), "jane smith": (2,)}),
    )
    assert (decision.customer_ids, decision.review_reason) == ((1,), None)


def test_a_doubtful_company_goes_to_review_only_when_no_name_decides() -> None:
    found = clues(None, (), ("jo bloggs",), ("acme",), company_doubts={"acme": "is partial"})
    by_company = {"acme": (3,)}
    assert decide(found, lookup(by_company=by_company)).review_reason == (
        "company 'acme' is partial")
    assert decide(found, lookup(by_name={"jo bloggs": (8,)}, by_company=by_company)
                  ).customer_ids == (8,)
