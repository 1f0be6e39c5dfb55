"""Where bytes come from, one module per backend (folder, wds, ffcv, synthetic, seg_pairs), and index.json;
a dataset's location (local or s3://: location), the object-store client (object_store), the node-local
shard cache (shard_cache), one split's shards local or remote (shard_set).
May import pixels/ and swat_dist.files; nothing else of data/."""
