"""Family parsers. Importing this package registers every family."""

from forge_advisor.shapes.families import llama  # noqa: F401
