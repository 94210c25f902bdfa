"""Stage 3 support: span features, PCA-whitened FAISS k-means pseudo-labels, and their DDP plumbing."""
