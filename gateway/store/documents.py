"""A YAML file's text as its `---`-separated documents, each with its line range, so that one
document can be replaced or removed while every other byte of the file stays as it was.

Pure text work, no YAML parsing: a line starting with `---` (alone, or followed by a space, a
comment or content) begins a document; a line starting with `...` ends one (what follows it up
to the next `---` is kept with it, as it is). Text before the first `---` is a document of its
own when it holds more than comments and blank lines. Line ends (LF or CRLF) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a file: lines `first`..`last` (1-based, inclusive) hold it, its `---`
    line (when it has one) included; `body` is its text without the `---` line and without an
    `...` end marker and what follows that."""

    first: int
    last: int
    body: str
    separator: str = ""  # its `---` line as written ("" for a first document without one)
    tail: str = ""  # its `...` line and what follows it, as written

    def holds(self, line: int) -> bool:
        return self.first <= line <= self.last

    @property
    def text(self) -> str:
        """Its YAML: the body, after what its `---` line holds beyond the marker (`--- {a: 1}`)."""
        after = self.separator[3:].lstrip(" \t")
        return ("" if _blank(after) else after) + self.body

    @property
    def empty(self) -> bool:
        """Only comments and blank lines (YAML reads no document from it)."""
        return all(_blank(line) for line in self.body.splitlines())


def split_documents(text: str) -> list[Document]:
    """The documents of `text`, in order; the empty ones (only comments) included, so that
    their text is kept when another is replaced."""
    documents: list[Document] = []
    separator, first = "", 1
    body: list[str] = []
    tail: list[str] = []
    number = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if _marks(line, "---"):
            if separator or body or tail:
                documents.append(Document(first, number - 1, "".join(body), separator, "".join(tail)))
            separator, body, tail, first = line, [], [], number
        elif tail or _marks(line, "..."):
            tail.append(line)
        else:
            body.append(line)
    if separator or body or tail or not documents:
        documents.append(Document(first, max(number, first), "".join(body), separator, "".join(tail)))
    return documents


def document_at(documents: list[Document], line: int) -> int:
    """The index of the document holding `line` (a manifest's `source` line); ValueError when
    no document does."""
    for index, document in enumerate(documents):
        if document.holds(line):
            return index
    raise ValueError(f"no document holds line {line}")


def join_documents(documents: list[Document]) -> str:
    return "".join(document.separator + document.body + document.tail for document in documents)


def replace_document(text: str, index: int, body: str) -> str:
    """`text` with document `index`'s body replaced by `body` (its `---` line and end marker,
    and every other document, kept byte for byte)."""
    documents = split_documents(text)
    old = documents[index]
    separator = old.separator
    if separator and not _blank(separator[3:]) and not separator[3:].lstrip().startswith("#"):
        separator = "---" + _line_end(separator)  # content on the `---` line was the body's
    body = _with_line_ends(body, _newline(text))
    if not body.endswith("\n"):
        body += _newline(text)
    documents[index] = Document(old.first, old.last, body, separator, old.tail)
    return join_documents(documents)


def remove_document(text: str, index: int) -> str:
    """`text` without document `index` (its `---` line, body and end marker); whether any
    document is left: `has_documents`."""
    documents = split_documents(text)
    del documents[index]
    return join_documents(documents)


def has_documents(text: str) -> bool:
    """Whether any document of `text` holds more than comments."""
    return any(not document.empty for document in split_documents(text))


def normalised(text: str) -> str:
    """A document's text compared for "unchanged": line ends, trailing spaces and blank lines
    at either end do not count."""
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip("\n")


def _marks(line: str, marker: str) -> bool:
    """Whether `line` starts with the `---` or `...` marker (then a space, a tab or its end)."""
    return line.startswith(marker) and (len(line) == 3 or line[3] in " \t\r\n")


def _blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _line_end(line: str) -> str:
    return "\r\n" if line.endswith("\r\n") else "\n"


def _newline(text: str) -> str:
    """The line end `text` uses (its first one), LF when it has none."""
    end = text.find("\n")
    return "\r\n" if end > 0 and text[end - 1] == "\r" else "\n"


def _with_line_ends(body: str, newline: str) -> str:
    lines = body.splitlines()
    return newline.join(lines) + (newline if body.endswith(("\n", "\r")) else "")
