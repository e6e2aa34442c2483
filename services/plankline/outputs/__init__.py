"""File formats only: ROI tar archives, CSV tables, EcoTaxa exports."""
