"""Classification: one class per image, or per object of a label image (crops around each)."""
