"""Training: the LightningModule, its losses, metrics and optimiser, and the callbacks that make a
run self-describing and fault tolerant (plain Lightning pieces; no command-line code)."""
