"""What happens to pixels: decode and encode (images, masks), augmentation (transforms, seg_pipeline, ffcv_crop).
The ground floor of data/: imports nothing else of swat_dist."""
