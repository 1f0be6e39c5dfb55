"""Where bytes come from, one module per backend (folder, wds, ffcv, synthetic, seg_pairs), and index.json.
May import pixels/ and swat_dist.files; nothing else of data/."""
