"""The lectures' experiments as library calls: model comparison, plain vs residual degradation."""
