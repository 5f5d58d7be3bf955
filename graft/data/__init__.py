"""Data sources (synthetic, image folders, IDX, scikit-learn digits, torchvision) and prepared datasets."""
