"""The benchmark suite: each module measures figures beside a same-run baseline."""
