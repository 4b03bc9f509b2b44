"""Family parsers. Importing this package registers every family."""

from forge_advisor.shapes.families import (  # noqa: F401
    bert,
    decoder,
    fairseq,
    falcon,
    fuyu,
    gemma3,
    gpt2,
    gpt_era,
    gpt_neox,
    hrm,
    legacy,
    hybrid,
    inkling,
    llama,
    hybrid_extra,
    opt,
    own_layout,
    phi,
    t5,
    vlm,
)
