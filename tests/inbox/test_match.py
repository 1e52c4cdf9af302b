"""Matching a request to customers: clues from the message, then a decision on the lookup."""

from __future__ import annotations

from collections.abc import Mapping

from mailer.inbox.body import ParsedMessage, parse_message
from mailer.inbox.headers import Headers
from mailer.inbox.match import Clues, Lookup, decide, extract_clues
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
) -> Clues:
    return Clues(from_address, body_addresses, name_keys, company_keys)


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
