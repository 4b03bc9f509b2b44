"""The TUI's screens, one per module: main (plan editor), pick_model, pick_gpu, advise,
export, train, help. Each has its ``.tcss`` next to it."""
