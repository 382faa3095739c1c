"""Research tools behind ``lit-seg`` subcommands: the cost harness (``lit-seg bench``,
``lit-seg bench-step``), and the ablation runner and its report."""
