"""Family parsers. Importing this package registers every family."""

from forge_advisor.shapes.families import (  # noqa: F401
    bert,
    decoder,
    fairseq,
    falcon,
    gemma3,
    gemma4,
    gpt2,
    gpt_era,
    gpt_neox,
    legacy,
    hybrid,
    llama,
    hybrid_extra,
    opt,
    own_layout,
    phi,
    t5,
    vlm,
)
