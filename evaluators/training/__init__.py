"""Training: ``threedb train CONFIG`` (a classifier on a threedb or image-folder dataset)."""
