"""Where bytes come from, one module per backend (folder, wds, ffcv, synthetic, seg_pairs), and index.json;
a dataset's location (local or s3://: location), the object-store client (object_store) and the node-local
shard cache (shard_cache). May import pixels/ and swat_dist.files; nothing else of data/."""
