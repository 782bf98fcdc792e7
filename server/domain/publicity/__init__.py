"""Publicity (公示) under the Anhui Publicity Measures: deadlines, codes, redaction and the item workflow."""
