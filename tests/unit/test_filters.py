"""The filter compiler's choices that results alone do not show: which filters may read a
page from version_datasets (a dataset the whole filter requires), and that user values
never enter the SQL text."""

from __future__ import annotations

import pytest

from modelreg.domain.filters import parse
from modelreg.store.filters import dataset_driver, statement_of

DRIVEN = [
    ('dataset = "s3://d/x"', "s3://d/x", ""),
    ('dataset:"sha256:ab" AND labels.team = vision', "sha256:ab", "labels"),
    ('state = READY AND dataset = "s3://d/y" AND NOT alias:*', "s3://d/y", "state"),
    ('dataset = "s3://d/1" AND dataset = "s3://d/2"', "s3://d/1", "version_datasets"),
]
NOT_DRIVEN = [
    'dataset = "a" OR state = READY',
    'NOT dataset = "a"',
    '(dataset = "a" OR dataset = "b") AND state = READY',
    "labels.team = vision",
]


@pytest.mark.parametrize(("text", "dataset", "rest"), DRIVEN)
def test_a_required_dataset_drives_the_page(text: str, dataset: str, rest: str) -> None:
    driver = dataset_driver(parse(text))
    assert driver is not None
    found, remaining = driver
    assert found == dataset
    sql, values = statement_of(remaining)
    assert (rest in sql) if rest else sql == "TRUE"
    assert dataset not in sql  # the driver is not filtered twice
    assert dataset not in values


@pytest.mark.parametrize("text", NOT_DRIVEN)
def test_a_dataset_the_filter_does_not_require_filters_rows(text: str) -> None:
    assert dataset_driver(parse(text)) is None


def test_values_are_parameters_never_sql_text() -> None:
    hostile = "x'); DROP TABLE models; --"
    sql, values = statement_of(parse(f'dataset = "{hostile}" OR labels."{hostile}" = "{hostile}"'))
    assert hostile not in sql
    assert values.count(hostile) == 3
