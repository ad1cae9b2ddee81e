"""Regions of text on a page and the paper's patch -> region propagation."""
