"""Training: ``threedb train CONFIG`` (a classifier or segmenter, standard or adversarial, on a threedb
or image-folder dataset)."""
