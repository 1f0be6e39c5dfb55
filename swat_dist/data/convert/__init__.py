"""How datasets are written and checked: scan, convert (both tasks), report, staging, verify.
May import sources/, pixels/, swat_dist.files and swat_dist.progress; never loaders/."""
