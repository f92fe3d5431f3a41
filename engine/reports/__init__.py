"""Reports: counts and charts over every stage, read-only; only the command line and the pages use them."""
