"""The data sets we ship, written as source folders: digits, photo-digits, seg-digits, synthetic.
May import convert/ (staging, split names), sources/ and swat_dist.progress."""
