"""How samples are ordered and batched: the plan, the loaders over a source, one rank's loaders (build).
May import sources/, pixels/ and swat_dist.config."""
