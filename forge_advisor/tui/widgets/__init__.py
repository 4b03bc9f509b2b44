"""The TUI's widgets (textual). Each draws what a screen gives it and posts dataclass
messages (:mod:`forge_advisor.tui.messages`); none computes an estimate."""
