"""The categories of marketing email a customer can be opted in to, defined once.

Each category is a column of `customers` (1 opted in, 0 opted out), a campaign kind, a CSV
import column, a checkbox on the preference page and a line of `customers show`. Everything
that lists them reads `CATEGORIES`; everything that names one to a customer reads `label`.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = ("announcements", "offers")

# How each category is named to customers and in the console.
LABELS: dict[str, str] = {
    "announcements": "announcements about important changes and new services",
    "offers": "special offers",
}


def label(category: str) -> str:
    """The plain-English name of a category (`offers` -> "special offers")."""
    return LABELS.get(category, category.replace("_", " ").replace("-", " "))


def check(category: str) -> str:
    """`category` if it is one of ours; ValueError otherwise (a caller's bug, not input)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    return category
