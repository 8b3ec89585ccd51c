"""Read an HTML form's default values, the way a browser would submit it unchanged."""

from __future__ import annotations

from html.parser import HTMLParser


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str | list[str]] = {}
        self._select: str | None = None
        self._multiple = False
        self._first_option: str | None = None
        self._selected: list[str] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.data[name] = a.get("value", "on")
                return
            self.data[name] = a.get("value", "")
        elif tag == "select" and name:
            self._select, self._multiple = name, "multiple" in a
            self._first_option, self._selected = None, []
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a:
                self._selected.append(value)
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select:
            # Browsers send every selected option; a single select with none sends its first.
            if self._multiple:
                if self._selected:
                    self.data[self._select] = self._selected
            elif self._selected or self._first_option is not None:
                self.data[self._select] = self._selected[-1] if self._selected else str(self._first_option)
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            current = str(self.data[self._textarea])
            # A newline right after <textarea> is not part of the value.
            self.data[self._textarea] = current + (data if current else data.removeprefix("\n"))


def form_defaults(html: str) -> dict[str, str | list[str]]:
    parser = _FormParser()
    parser.feed(html)
    return parser.data
