"""Background work: the queue worker and its job families."""
