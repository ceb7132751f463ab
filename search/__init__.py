"""Reading a library: nearest neighbours, labels, weighted k-NN suggestions, evaluation, duplicates."""
