"""Data sources (synthetic faces, Yale B, ImageFolder trees) and their preprocessing."""
