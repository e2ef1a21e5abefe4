"""A YAML file's documents replaced and removed with every other byte kept."""

from __future__ import annotations

import pytest
import yaml

from gateway.store.documents import (
    document_at,
    has_documents,
    join_documents,
    normalised,
    remove_document,
    replace_document,
    split_documents,
)

TEXTS = {
    "one": "a: 1\n",
    "no final newline": "a: 1",
    "leading separator": "---\na: 1\n",
    "two": "a: 1\n---\nb: 2\n",
    "comment on separator": "a: 1\n--- # the second\nb: 2\n",
    "end markers": "a: 1\n...\n# between\n---\nb: 2\n...\n",
    "comments before": "# head\n\n---\na: 1\n---\nb: 2\n",
    "crlf": "a: 1\r\n---\r\nb: 2\r\n",
    "content on separator": "--- {a: 1}\n--- {b: 2}\n",
    "empty document": "a: 1\n---\n# nothing\n---\nb: 2\n",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_splitting_and_joining_gives_the_text_back(text: str) -> None:
    assert join_documents(split_documents(text)) == text


@pytest.mark.parametrize(("text", "bodies"), [
    ("a: 1\n", ["a: 1\n"]),
    ("---\na: 1\n", ["a: 1\n"]),
    ("a: 1\n---\nb: 2\n", ["a: 1\n", "b: 2\n"]),
    ("a: 1\n...\n# between\n---\nb: 2\n", ["a: 1\n", "b: 2\n"]),
    ("# head\n---\na: 1\n", ["# head\n", "a: 1\n"]),
    ("a: 1\r\n---\r\nb: 2\r\n", ["a: 1\r\n", "b: 2\r\n"]),
    ("----\na: 1\n", ["----\na: 1\n"]),  # not a separator
])
def test_documents_and_their_bodies(text: str, bodies: list[str]) -> None:
    assert [document.body for document in split_documents(text)] == bodies


@pytest.mark.parametrize(("text", "line", "index"), [
    ("a: 1\n---\nb: 2\n", 1, 0),
    ("a: 1\n---\nb: 2\n", 3, 1),
    ("# head\n---\na: 1\n---\nb: 2\nc: 3\n", 6, 2),
    ("--- {a: 1}\n--- {b: 2}\n", 2, 1),  # YAML's line for a mapping on its `---` line
])
def test_the_document_holding_a_line(text: str, line: int, index: int) -> None:
    assert document_at(split_documents(text), line) == index


@pytest.mark.parametrize(("text", "index", "body", "expected"), [
    ("a: 1\n", 0, "a: 2\n", "a: 2\n"),
    ("a: 1\n---\nb: 2\n---\nc: 3\n", 1, "b: 3\n", "a: 1\n---\nb: 3\n---\nc: 3\n"),
    ("# keep\na: 1\n--- # two\nb: 2\n", 1, "b: 3", "# keep\na: 1\n--- # two\nb: 3\n"),
    ("a: 1\n...\n# between\n---\nb: 2\n", 0, "a: 2\n", "a: 2\n...\n# between\n---\nb: 2\n"),
    ("---\na: 1\n---\nb: 2\n", 0, "a: 2\n", "---\na: 2\n---\nb: 2\n"),
    ("a: 1\r\n---\r\nb: 2\r\n", 1, "b: 3\nc: 4\n", "a: 1\r\n---\r\nb: 3\r\nc: 4\r\n"),
    ("--- {a: 1}\n--- {b: 2}\n", 0, "a: 2\n", "---\na: 2\n--- {b: 2}\n"),
])
def test_replacing_a_document_keeps_the_others_byte_for_byte(text: str, index: int, body: str,
                                                             expected: str) -> None:
    replaced = replace_document(text, index, body)
    assert replaced == expected
    assert len(list(yaml.safe_load_all(replaced))) == len(list(yaml.safe_load_all(text)))


@pytest.mark.parametrize(("text", "index", "expected"), [
    ("a: 1\n---\nb: 2\n", 0, "---\nb: 2\n"),
    ("a: 1\n---\nb: 2\n", 1, "a: 1\n"),
    ("a: 1\n--- # two\nb: 2\n...\n---\nc: 3\n", 1, "a: 1\n---\nc: 3\n"),
    ("# head\n---\na: 1\n", 1, "# head\n"),
])
def test_removing_a_document(text: str, index: int, expected: str) -> None:
    assert remove_document(text, index) == expected


def test_a_file_of_comments_has_no_documents() -> None:
    assert not has_documents("# head\n\n")
    assert not has_documents("")
    assert has_documents("# head\n---\na: 1\n")


def test_normalised_text_ignores_line_ends_and_trailing_space() -> None:
    assert normalised("a: 1  \r\nb: 2\r\n\n") == normalised("\na: 1\nb: 2")
    assert normalised("a: 1\n") != normalised("a: 2\n")


@pytest.mark.parametrize(("text", "texts"), [
    ("a: 1\n--- # note\nb: 2\n", ["a: 1\n", "b: 2\n"]),
    ("--- {a: 1}\n--- {b: 2}\n", ["{a: 1}\n", "{b: 2}\n"]),
    ("--- !!map\nb: 2\n", ["!!map\nb: 2\n"]),
])
def test_a_documents_yaml_includes_what_its_separator_line_holds(text: str, texts: list[str]) -> None:
    documents = split_documents(text)
    assert [document.text for document in documents] == texts
    assert [yaml.safe_load(t) for t in texts] == list(yaml.safe_load_all(text))
