"""The pure core: cables, blocks, budgets and the allocation rules. No I/O, no frameworks."""
