"""Training: ground-truth heatmaps (targets), miss-masks, dataset, augmentation, loss, trainer."""
