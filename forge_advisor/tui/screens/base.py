"""What every screen shares: the inline "terminal too small" notice on resize."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.screen import ModalScreen, Screen

from forge_advisor.tui.widgets.too_small import MIN_SIZE

__all__ = ["ForgeModal", "ForgeScreen", "SearchPicker"]


class _TinyAware:
    def _check_size(self: Any, width: int, height: int) -> None:
        self.set_class(width < MIN_SIZE[0] or height < MIN_SIZE[1], "-tiny")

    def on_resize(self: Any, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def on_screen_resume(self: Any) -> None:
        self._check_size(self.app.size.width, self.app.size.height)


class ForgeScreen(_TinyAware, Screen[Any]):
    pass


class ForgeModal(_TinyAware, ModalScreen[Any]):
    pass


class SearchPicker(ForgeModal):
    """A dialog with a search field (``#query``) over a list (``#results``) that subclasses
    fill in ``_fill(text)``: the model and GPU pickers."""

    def on_mount(self) -> None:
        self._fill("")
        self.query_one("#query").focus()

    def _fill(self, text: str) -> None:
        raise NotImplementedError

    def _cleared_results(self) -> Any:
        from textual.widgets import OptionList

        results = self.query_one("#results", OptionList)
        results.clear_options()
        return results
